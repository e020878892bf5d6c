//! Snapshot readers: the ACS snapshot stream of ExportAcs/ImportPartyAcs and the report a
//! backup's snapshot command prints. The harnesses live in `canton_sim::fuzzing` and
//! `sidecar_backup::fuzzing` so the saved corpus replays as a normal test on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    canton_sim::fuzzing::check_snapshot_bytes(data);
    sidecar_backup::fuzzing::check_snapshot_report(data);
});
