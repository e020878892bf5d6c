//! Replays the saved fuzz corpus of `fuzz/fuzz_targets/envelope_verify.rs` on stable, so the
//! inputs that once mattered keep being checked without nightly; the extras tier fuzzes it.

use testkit::fuzz::{check_seeds, replay_corpus, run_fuzzer};

const TARGET: &str = "envelope_verify";

#[test]
fn fuzz_corpus_replays_without_panics() {
    let replayed = replay_corpus(TARGET, sidecar_trust::fuzzing::check_envelope_bytes);
    assert!(
        replayed >= 8,
        "the corpus holds seeds for every message family, found {replayed}"
    );
}

/// Writes the seed corpus; run with WRITE_FUZZ_SEEDS=1 after changing the message formats.
#[test]
fn fuzz_seeds_are_current() {
    check_seeds(TARGET, &sidecar_trust::fuzzing::seed_inputs());
}

#[test]
fn extras_fuzz_envelope_verify_finds_no_crash() {
    run_fuzzer("extras_fuzz_envelope_verify_finds_no_crash", TARGET, 15);
}
