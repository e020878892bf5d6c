//! The agent's and the coordinator's TOML configuration parsers on the same input. The
//! harnesses live in `canton_agent::fuzzing` and `canton_coordinator::fuzzing` so the saved
//! corpus replays as a normal test of each crate on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    canton_agent::fuzzing::check_config_text(data);
    canton_coordinator::fuzzing::check_config_text(
        data,
        std::path::Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/fixtures/config")),
    );
});
