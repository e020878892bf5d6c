//! Replays the saved fuzz corpus of `acs_reader` through the ACS snapshot reader on stable, so
//! the inputs that once mattered keep being checked without nightly (the backup crate replays
//! it through the snapshot-report reader; its extras test fuzzes the target).

use canton_sim::fuzzing::{check_snapshot_bytes, snapshot_of, snapshot_seed_inputs};
use testkit::fuzz::{check_seeds, replay_corpus};

#[test]
fn acs_reader_corpus_replays_through_the_snapshot_reader() {
    let replayed = replay_corpus("acs_reader", check_snapshot_bytes);
    assert!(replayed >= snapshot_seed_inputs().len(), "found {replayed}");
}

/// The seeds reach the deep end: both the gzip stream and the harness-compressed entries
/// decode to the two contracts.
#[test]
fn acs_snapshot_seeds_decode() {
    for (name, input) in snapshot_seed_inputs() {
        let snapshot = snapshot_of(&input).unwrap();
        let contracts = canton_sim::acs::decode(&snapshot).unwrap();
        let expected = if name == "acs-empty" { 0 } else { 2 };
        assert_eq!(contracts.len(), expected, "{name}");
    }
}

/// Writes the seeds; run with WRITE_FUZZ_SEEDS=1 after changing the snapshot format.
#[test]
fn fuzz_seeds_are_current() {
    check_seeds("acs_reader", &snapshot_seed_inputs());
}
