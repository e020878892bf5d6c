//! The backup-set manifest reader. The harness lives in `sidecar_backup::fuzzing` so the saved
//! corpus replays as a normal test on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    sidecar_backup::fuzzing::check_manifest_bytes(data);
});
