//! What several tests need: the compose network's secrets made by its own provision script,
//! and the agent's configuration check run as an operator would run it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use deploy_check::deploy_dir;

/// The output of `deploy/compose/provision.sh` in a temporary directory.
pub struct Provisioned {
    pub dir: tempfile::TempDir,
    /// What the script wrote to `.env` (database password, config key).
    pub env: BTreeMap<String, String>,
}

impl Provisioned {
    pub fn secrets(&self) -> PathBuf {
        self.dir.path().join("secrets")
    }
}

/// Runs the compose network's provision script with the built `canton-ops`.
pub fn provision() -> Provisioned {
    let dir = tempfile::Builder::new()
        .prefix("deploy-check-")
        .tempdir()
        .unwrap();
    let env_file = dir.path().join(".env");
    let output = Command::new(deploy_dir().join("compose/provision.sh"))
        .env("CANTON_OPS", testkit::binary_path("canton-ops").unwrap())
        .env("SECRETS_DIR", dir.path().join("secrets"))
        .env("ENV_FILE", &env_file)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "provision.sh failed: {}",
        describe(&output)
    );
    let env = std::fs::read_to_string(&env_file)
        .unwrap()
        .lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
    Provisioned { dir, env }
}

/// `canton-agent --check-config` on `config` with `env` (and nothing else from ours).
pub fn check_agent_config(config: &Path, env: &BTreeMap<String, String>) -> Output {
    Command::new(testkit::binary_path("canton-agent").unwrap())
        .arg("--check-config")
        .arg("--config")
        .arg(config)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .envs(env)
        .output()
        .unwrap()
}

pub fn describe(output: &Output) -> String {
    format!(
        "{}\nstdout:\n{}\nstderr:\n{}",
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// Replaces `${NAME}`, `${NAME:?message}` and `${NAME:-default}` as Docker Compose does.
pub fn interpolate(text: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after.find('}').expect("unclosed ${ in a compose value");
        let expression = &after[..end];
        let (name, fallback) = match expression.split_once(":-") {
            Some((name, default)) => (name, Some(default)),
            None => (expression.split(":?").next().unwrap_or(expression), None),
        };
        match (vars.get(name), fallback) {
            (Some(value), _) => out.push_str(value),
            (None, Some(default)) => out.push_str(default),
            (None, None) => panic!("compose variable {name} is not set"),
        }
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    out
}
