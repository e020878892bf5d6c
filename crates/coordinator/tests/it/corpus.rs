//! Replays the saved fuzz corpora of `ack_verify` and `config_parse` (coordinator half) on
//! stable, so the inputs that once mattered keep being checked without nightly; the extras
//! tier fuzzes both targets.

use canton_coordinator::acks::{AckOnBus, AckRefused};
use canton_coordinator::fuzzing::{
    ack_seed_inputs, check_ack_message, check_config_text, config_seed_inputs, read_input,
};
use testkit::fuzz::{check_seeds, replay_corpus, run_fuzzer};

fn config_fixtures() -> std::path::PathBuf {
    testkit::workspace_root().join("fuzz/fixtures/config")
}

#[test]
fn ack_verify_corpus_replays_without_panics() {
    let replayed = replay_corpus("ack_verify", check_ack_message);
    assert!(replayed >= ack_seed_inputs().len(), "found {replayed}");
}

#[test]
fn config_parse_corpus_replays_through_the_coordinator_parser() {
    let fixtures = config_fixtures();
    let replayed = replay_corpus("config_parse", |data| check_config_text(data, &fixtures));
    assert!(replayed >= config_seed_inputs().len(), "found {replayed}");
}

/// The seeds reach the deep end: the full configuration is accepted, its variants are refused
/// naming the key at fault.
#[test]
fn coordinator_config_seeds_are_accepted_or_name_their_key() {
    let fixtures = config_fixtures();
    let path = fixtures.join("coordinator.toml");
    let seeds = config_seed_inputs();
    let parse = |name: &str| {
        let (_, text) = seeds.iter().find(|(seed, _)| seed == name).unwrap();
        canton_coordinator::config::Config::from_toml(std::str::from_utf8(text).unwrap(), &path)
    };
    let full = parse("coordinator-full").unwrap();
    assert_eq!(full.tokens.len(), 2);
    for (seed, key) in [
        ("coordinator-same-tokens", "api.read_only_token_file"),
        ("coordinator-short-lease", "leader.lease_ttl"),
    ] {
        let error = parse(seed).unwrap_err();
        assert!(
            error.to_string().starts_with(&format!("{key}:")),
            "{seed}: {error}"
        );
    }
}

/// The ack seeds reach the deep end too: the right signer on its own subject is read, a
/// coordinator key or another node's subject is dropped.
#[test]
fn ack_seeds_are_read_or_dropped_for_the_right_reason() {
    let seeds = ack_seed_inputs();
    let outcomes = |name: &str| {
        let (_, input) = seeds.iter().find(|(seed, _)| seed == name).unwrap();
        read_input(input)
    };
    let read = |name: &str| match outcomes(name).remove(0) {
        Ok(AckOnBus { run, ack }) => (run, ack.node),
        Err(refused) => panic!("{name}: {refused}"),
    };
    assert_eq!(read("standalone"), ("r1".to_owned(), "p1".to_owned()));
    assert_eq!(read("replica"), ("r1".to_owned(), "p2.a".to_owned()));
    assert_eq!(read("body-fence").0, "fence-org-a-e4");
    assert!(matches!(
        outcomes("other-nodes-subject").remove(0),
        Err(AckRefused::OtherNodesSubject { node, .. }) if node == "p1"
    ));
    assert!(matches!(
        outcomes("coordinator-signed").remove(0),
        Err(AckRefused::Rejected(_))
    ));
    assert!(matches!(
        outcomes("no-subject").remove(0),
        Err(AckRefused::Subject { .. })
    ));
    // Signed by each fixture key in turn: only the node's own key is accepted.
    let signed = outcomes("body-standalone");
    assert_eq!(signed.len(), 3);
    assert_eq!(signed.iter().filter(|outcome| outcome.is_ok()).count(), 1);
}

/// Writes the seed corpora; run with WRITE_FUZZ_SEEDS=1 after changing a format.
#[test]
fn fuzz_seeds_are_current() {
    check_seeds("ack_verify", &ack_seed_inputs());
    check_seeds("config_parse", &config_seed_inputs());
}

#[test]
fn extras_fuzz_ack_verify_finds_no_crash() {
    run_fuzzer("extras_fuzz_ack_verify_finds_no_crash", "ack_verify", 15);
}

#[test]
fn extras_fuzz_config_parse_finds_no_crash() {
    run_fuzzer(
        "extras_fuzz_config_parse_finds_no_crash",
        "config_parse",
        15,
    );
}
