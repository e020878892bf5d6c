//! Replays the saved fuzz corpus of `fuzz/fuzz_targets/envelope_verify.rs` on stable, so the
//! inputs that once mattered keep being checked without nightly.

use std::path::PathBuf;

fn corpus_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../fuzz/corpus/envelope_verify")
}

#[test]
fn fuzz_corpus_replays_without_panics() {
    let mut replayed = 0;
    for entry in std::fs::read_dir(corpus_dir()).unwrap() {
        let path = entry.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        sidecar_trust::fuzzing::check_envelope_bytes(&bytes);
        replayed += 1;
    }
    assert!(
        replayed >= 8,
        "the corpus holds seeds for every message family, found {replayed}"
    );
}

/// Writes the seed corpus; run with WRITE_FUZZ_SEEDS=1 after changing the message formats.
#[test]
fn fuzz_seeds_are_current() {
    let seeds = sidecar_trust::fuzzing::seed_inputs();
    let dir = corpus_dir();
    if std::env::var_os("WRITE_FUZZ_SEEDS").is_some() {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, bytes) in &seeds {
            std::fs::write(dir.join(format!("seed-{name}")), bytes).unwrap();
        }
    }
    for (name, bytes) in &seeds {
        let saved = std::fs::read(dir.join(format!("seed-{name}")))
            .unwrap_or_else(|_| panic!("seed {name} missing; rerun with WRITE_FUZZ_SEEDS=1"));
        assert_eq!(
            &saved, bytes,
            "seed {name} is stale; rerun with WRITE_FUZZ_SEEDS=1"
        );
    }
}
