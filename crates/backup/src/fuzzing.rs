//! Harnesses shared by the fuzz targets in `fuzz/` and the corpus replay tests, so nightly
//! fuzzing and the stable tests run the same code: the manifest reader (`manifest_reader`) and
//! the report a snapshot command prints about what it snapshotted (`acs_reader`).

use crate::backup::SnapshotReport;
use crate::manifest::{MANIFEST_FORMAT, Manifest, Method};
use crate::point::{Interval, NodeKind};

const FILE: &str = "fuzz/p1.manifest.json";

/// Reads `data` as a manifest file. Panics if an accepted manifest does not survive writing
/// and reading again unchanged, names an artefact outside its set directory, or an error does
/// not name the file.
pub fn check_manifest_bytes(data: &[u8]) {
    match Manifest::from_json(data, FILE) {
        Ok(manifest) => {
            assert_eq!(manifest.format, MANIFEST_FORMAT);
            if let Some(artefact) = &manifest.artefact {
                assert!(
                    std::path::Path::new(artefact).file_name()
                        == Some(std::ffi::OsStr::new(artefact)),
                    "accepted artefact {artefact:?} outside the set directory"
                );
            }
            let written = manifest.to_json();
            let again = Manifest::from_json(&written, FILE)
                .unwrap_or_else(|error| panic!("a written manifest does not read back: {error}"));
            assert_eq!(again, manifest, "round trip changed the manifest");
            assert_eq!(again.to_json(), written, "writing is not deterministic");
        }
        Err(error) => assert!(error.to_string().contains(FILE), "{error}"),
    }
}

/// Reads `data` (UTF-8, lossily) as a snapshot command's standard output. Panics if a reported
/// checksum is not 64 lowercase hex digits or a reported value is not in the output.
pub fn check_snapshot_report(data: &[u8]) {
    let stdout = String::from_utf8_lossy(data);
    let report = SnapshotReport::parse(&stdout);
    if let Some(sha256) = &report.sha256 {
        assert_eq!(sha256.len(), 64);
        assert!(
            sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
        assert!(stdout.to_ascii_lowercase().contains(sha256.as_str()));
    }
    if let Some(id) = &report.id {
        assert!(stdout.contains(id.as_str()));
    }
    if let Some(size) = report.size {
        assert!(stdout.contains(&size.to_string()) || stdout.contains('+'));
    }
}

/// A manifest as a pg_dump backup of an HA participant writes it.
fn sample_manifest() -> Manifest {
    Manifest {
        format: MANIFEST_FORMAT,
        node: "p1".into(),
        kind: NodeKind::Participant,
        organisation: "org-a".into(),
        participant: None,
        replica: Some("p1.a".into()),
        backup_set: "nightly-1".into(),
        command_id: "r1/members/p1".into(),
        method: Method::PgDump,
        artefact: Some("p1.dump".into()),
        snapshot_id: None,
        components: Vec::new(),
        sequencer_time_micros: Some(Interval {
            before: 1_700_000_000_000_000,
            after: 1_700_000_000_500_000,
        }),
        ledger_offset: Some(Interval {
            before: 41,
            after: 42,
        }),
        postgres_version: "16.4".into(),
        postgres_version_num: 160_004,
        size_bytes: 123_456,
        sha256: "ab".repeat(32),
        started_at_unix_ms: 1_700_000_000_000,
        finished_at_unix_ms: 1_700_000_001_000,
    }
}

/// Seed inputs for `fuzz/corpus/manifest_reader`.
pub fn manifest_seed_inputs() -> Vec<(String, Vec<u8>)> {
    let dump = sample_manifest();
    let snapshot = Manifest {
        kind: NodeKind::App,
        participant: Some("p1".into()),
        replica: None,
        method: Method::Snapshot,
        artefact: None,
        snapshot_id: Some("vol-0a1b".into()),
        components: vec!["app1".into(), "p1".into()],
        ledger_offset: None,
        ..sample_manifest()
    };
    let escaping = Manifest {
        artefact: Some("../../../etc/passwd".into()),
        ..sample_manifest()
    };
    let other_format = Manifest {
        format: MANIFEST_FORMAT + 1,
        ..sample_manifest()
    };
    vec![
        ("pg-dump".into(), dump.to_json()),
        ("snapshot".into(), snapshot.to_json()),
        ("artefact-outside".into(), escaping.to_json()),
        ("other-format".into(), other_format.to_json()),
    ]
}

/// Seed inputs for the snapshot-report half of `fuzz/corpus/acs_reader`.
pub fn snapshot_report_seed_inputs() -> Vec<(String, Vec<u8>)> {
    vec![(
        "snapshot-report".into(),
        format!(
            "creating snapshot\nsha256={}\nsize=1048576\nid=vol-0a1b\n",
            "AB".repeat(32)
        )
        .into_bytes(),
    )]
}
