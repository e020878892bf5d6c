//! Replays the saved fuzz corpus of `config_parse` through the agent's parser on stable, so the
//! inputs that once mattered keep being checked without nightly (the coordinator's tests
//! replay it through the coordinator's parser; the extras tier fuzzes both).

use canton_agent::fuzzing::{INPUT_PATH, check_config_text, config_seed_inputs, split_input};
use testkit::fuzz::{check_seeds, replay_corpus};

#[test]
fn config_parse_corpus_replays_through_the_agent_parser() {
    let replayed = replay_corpus("config_parse", check_config_text);
    assert!(replayed >= config_seed_inputs().len(), "found {replayed}");
}

/// The seeds reach the deep end: the full configurations are accepted (environment overrides
/// included), the unknown key is refused by name.
#[test]
fn agent_config_seeds_are_accepted_or_name_their_key() {
    let path = std::path::Path::new(INPUT_PATH);
    for (name, input) in config_seed_inputs() {
        let (text, env) = split_input(&input);
        let parsed = canton_agent::AgentConfig::from_toml(&text, path, env);
        match name.as_str() {
            "agent-unknown-key" => assert_eq!(parsed.unwrap_err().key(), Some("bogus")),
            "agent-app-env" => assert_eq!(
                parsed.unwrap().heartbeat_interval,
                std::time::Duration::from_millis(250)
            ),
            _ => assert!(parsed.is_ok(), "{name}: {parsed:?}"),
        }
    }
}

/// Writes the seeds; run with WRITE_FUZZ_SEEDS=1 after changing the configuration format.
#[test]
fn fuzz_seeds_are_current() {
    check_seeds("config_parse", &config_seed_inputs());
}
