//! The ACS snapshot harness shared by the `acs_reader` fuzz target in `fuzz/` and the corpus
//! replay test, so nightly fuzzing and the stable test run the same code.

use std::io::{Read, Write};

use crate::acs::{self, Contract};

/// Input layout: first byte = mode. Even: the rest is a snapshot as `ImportPartyAcs` receives
/// it (gzip of delimited versioned entries). Odd: the rest is the uncompressed entry stream,
/// which the harness gzips itself so the fuzzer reaches the framing and entry checks behind
/// the gzip checksum. Panics if an accepted snapshot does not encode back to the same
/// contracts.
pub fn check_snapshot_bytes(data: &[u8]) {
    let Some(snapshot) = snapshot_of(data) else {
        return;
    };
    let Ok(contracts) = acs::decode(&snapshot) else {
        return;
    };
    let encoded = acs::encode(&contracts)
        .unwrap_or_else(|error| panic!("decoded contracts do not encode: {error}"));
    let again = acs::decode(&encoded)
        .unwrap_or_else(|error| panic!("an encoded snapshot does not decode: {error}"));
    assert_eq!(again, contracts, "round trip changed the contracts");
}

/// The snapshot bytes an input stands for (see [`check_snapshot_bytes`]); `None` when empty.
pub fn snapshot_of(data: &[u8]) -> Option<Vec<u8>> {
    let (&mode, rest) = data.split_first()?;
    Some(if mode % 2 == 0 {
        rest.to_vec()
    } else {
        gzip(rest)
    })
}

fn gzip(plain: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder
        .write_all(plain)
        .and_then(|()| encoder.finish())
        .unwrap_or_default()
}

/// Seed inputs for the snapshot half of `fuzz/corpus/acs_reader`.
pub fn snapshot_seed_inputs() -> Vec<(String, Vec<u8>)> {
    let contracts = [
        Contract {
            contract_id: "00a1".into(),
            stakeholders: vec!["alice::1220ab".into(), "bob::1220cd".into()],
            created_by: "participant1".into(),
            created_ts_micros: 1_700_000_000_000_000,
            synchronizer_id: "global::1220ef".into(),
        },
        Contract {
            contract_id: "00b2".into(),
            stakeholders: vec!["bob::1220cd".into()],
            created_by: "participant2".into(),
            created_ts_micros: 1_700_000_000_000_001,
            synchronizer_id: "global::1220ef".into(),
        },
    ];
    let snapshot = acs::encode(&contracts).unwrap_or_default();
    let mut plain = Vec::new();
    let _ = flate2::read::GzDecoder::new(snapshot.as_slice()).read_to_end(&mut plain);
    let with_mode = |mode: u8, bytes: &[u8]| {
        let mut input = vec![mode];
        input.extend_from_slice(bytes);
        input
    };
    vec![
        ("acs-snapshot".into(), with_mode(0, &snapshot)),
        ("acs-entries".into(), with_mode(1, &plain)),
        (
            "acs-empty".into(),
            with_mode(0, &acs::encode(&[]).unwrap_or_default()),
        ),
    ]
}
