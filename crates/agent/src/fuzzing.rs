//! The configuration harness shared by the `config_parse` fuzz target in `fuzz/` and the corpus
//! replay test, so nightly fuzzing and the stable test run the same code.

use std::path::Path;

use crate::config::{AgentConfig, ConfigError};

/// Input layout: the TOML text, then optionally a NUL byte and environment overrides, one
/// `NAME=value` a line (only `CANTON_AGENT__…` names are read). Both are taken as UTF-8,
/// lossily. Panics if an error does not name its key (or the file), or if the same input
/// parses to two different configurations.
pub fn check_config_text(data: &[u8]) {
    let (text, env) = split_input(data);
    let path = Path::new(INPUT_PATH);
    match AgentConfig::from_toml(&text, path, env.clone()) {
        Ok(config) => {
            let again = AgentConfig::from_toml(&text, path, env)
                .unwrap_or_else(|error| panic!("accepted once, then refused: {error}"));
            assert_eq!(config, again, "one input, two configurations");
        }
        Err(error) => {
            let message = error.to_string();
            match error.key() {
                Some(key) => {
                    assert!(!key.is_empty(), "an empty key in {message}");
                    assert!(message.contains(&format!("`{key}`")), "{message}");
                }
                None => {
                    assert!(matches!(error, ConfigError::Syntax { .. }), "{message}");
                    assert!(message.contains(INPUT_PATH), "{message}");
                }
            }
        }
    }
}

/// Where the harness says its TOML text comes from (errors must name it).
pub const INPUT_PATH: &str = "/fuzz/agent.toml";

/// The TOML text and the environment an input stands for (see [`check_config_text`]).
pub fn split_input(data: &[u8]) -> (String, Vec<(String, String)>) {
    let (text, env) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], &data[at + 1..]),
        None => (data, &[][..]),
    };
    let env = String::from_utf8_lossy(env)
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(name, value)| (name.to_owned(), value.to_owned()))
        .collect();
    (String::from_utf8_lossy(text).into_owned(), env)
}

/// Seed inputs for `fuzz/corpus/config_parse` (agent side; the coordinator adds its own).
pub fn config_seed_inputs() -> Vec<(String, Vec<u8>)> {
    let participant = r#"network = "net1"
node = "participant1"
kind = "participant"
database.url = "host=127.0.0.1 port=5432 user=canton dbname=participant1"

[nats]
url = "nats://127.0.0.1:4222"

[canton]
admin_url = "http://127.0.0.1:5012"
ledger_api_url = "http://127.0.0.1:5011"

[probes.status]
period = "2s"
timeout = "1s"

[trust]
network_config = "/etc/canton-agent/network-config.bin"
config_key = "0000000000000000000000000000000000000000000000000000000000000000"
ack_key_seed = "/etc/canton-agent/ack.seed"
ack_key_id = "org-a/agent-participant1"
organisation = "org-a"

[commands]
journal_dir = "/var/lib/canton-agent/journal"

[backup]
root = "/var/backups/canton"
upload = ["/usr/local/bin/upload", "{dump}", "{manifest}"]

[lifecycle]
stop = ["systemctl", "stop", "canton-{node}"]
start = ["systemctl", "start", "canton-{node}"]
status = ["systemctl", "is-active", "canton-{node}"]
"#;
    let app = r#"network = "net1"
node = "app1"
kind = "app"
participant = "participant1"
database.url = "postgresql://app@127.0.0.1/app1"

[nats]
url = "nats://127.0.0.1:4222,nats://127.0.0.1:4223"

[backup]
root = "/var/backups/canton"
method = "snapshot"
snapshot_command = ["/usr/local/bin/snap", "{artefact}"]
"#;
    let with_env = format!(
        "{app}\0CANTON_AGENT__HEARTBEAT__INTERVAL=250ms\nCANTON_AGENT__BACKUP__UPLOAD=[\"/bin/true\"]\n"
    );
    vec![
        ("agent-participant".into(), participant.as_bytes().to_vec()),
        ("agent-app".into(), app.as_bytes().to_vec()),
        ("agent-app-env".into(), with_env.into_bytes()),
        (
            "agent-unknown-key".into(),
            b"network = \"net1\"\nnode = \"app1\"\nkind = \"app\"\nbogus = 1\n[nats]\nurl = \"nats://127.0.0.1:4222\"\n"
                .to_vec(),
        ),
    ]
}
