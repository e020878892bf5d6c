//! Replays the saved fuzz corpora of `manifest_reader` and `acs_reader` (snapshot-report half)
//! on stable, so the inputs that once mattered keep being checked without nightly; the extras
//! tier fuzzes both targets.

use sidecar_backup::fuzzing::{
    check_manifest_bytes, check_snapshot_report, manifest_seed_inputs, snapshot_report_seed_inputs,
};
use sidecar_backup::{ErrorKind, Manifest};
use testkit::fuzz::{check_seeds, replay_corpus, run_fuzzer};

#[test]
fn manifest_reader_corpus_replays_without_panics() {
    let replayed = replay_corpus("manifest_reader", check_manifest_bytes);
    assert!(replayed >= manifest_seed_inputs().len(), "found {replayed}");
}

#[test]
fn acs_reader_corpus_replays_through_the_snapshot_report_reader() {
    let replayed = replay_corpus("acs_reader", check_snapshot_report);
    assert!(
        replayed >= snapshot_report_seed_inputs().len(),
        "found {replayed}"
    );
}

/// A manifest naming an artefact outside its set directory (`../../../etc/passwd`, an
/// absolute path) is corrupt: verify would hash, and the upload hook ship, that file.
#[test]
fn a_manifest_naming_an_artefact_outside_its_set_is_refused() {
    let seeds = manifest_seed_inputs();
    let seed = |name: &str| &seeds.iter().find(|(seed, _)| seed == name).unwrap().1;
    assert!(Manifest::from_json(seed("pg-dump"), "p1.manifest.json").is_ok());
    assert!(Manifest::from_json(seed("snapshot"), "p1.manifest.json").is_ok());
    let escaping = Manifest::from_json(seed("artefact-outside"), "p1.manifest.json").unwrap_err();
    assert_eq!(escaping.kind(), ErrorKind::Corrupt);
    assert!(
        escaping.to_string().contains("../../../etc/passwd"),
        "{escaping}"
    );
    let text = String::from_utf8(seed("pg-dump").clone()).unwrap();
    for artefact in ["/etc/shadow", "..", ".", "", "sub/p1.dump"] {
        let hostile = text.replace("\"p1.dump\"", &serde_json::to_string(artefact).unwrap());
        let error = Manifest::from_json(hostile.as_bytes(), "p1.manifest.json").unwrap_err();
        assert_eq!(error.kind(), ErrorKind::Corrupt, "{artefact:?}: {error}");
    }
}

/// Writes the seeds; run with WRITE_FUZZ_SEEDS=1 after changing the manifest format.
#[test]
fn fuzz_seeds_are_current() {
    check_seeds("manifest_reader", &manifest_seed_inputs());
    check_seeds("acs_reader", &snapshot_report_seed_inputs());
}

#[test]
fn extras_fuzz_manifest_reader_finds_no_crash() {
    run_fuzzer(
        "extras_fuzz_manifest_reader_finds_no_crash",
        "manifest_reader",
        15,
    );
}

#[test]
fn extras_fuzz_acs_reader_finds_no_crash() {
    run_fuzzer("extras_fuzz_acs_reader_finds_no_crash", "acs_reader", 15);
}
