//! Envelope decode + verify for every message family (commands, acks, proposal messages, the
//! network configuration). The harness lives in `sidecar_trust::fuzzing` so the saved corpus
//! replays as a normal test on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sidecar_trust::fuzzing::check_envelope_bytes(data);
});
