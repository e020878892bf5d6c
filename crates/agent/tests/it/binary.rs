//! The `canton-agent` binary: configuration errors and SIGTERM.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use proto_sidecar as pb;
use testkit::NatsServer;

use crate::support::{Heartbeats, network, node_state, wait_for};

const AGENT: &str = env!("CARGO_BIN_EXE_canton-agent");

fn write_config(dir: &tempfile::TempDir, text: &str) -> std::path::PathBuf {
    let path = dir.path().join("agent.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn app_config(url: &str, net: &str, node: &str) -> String {
    format!(
        "network = \"{net}\"\nnode = \"{node}\"\nkind = \"app\"\n[nats]\nurl = \"{url}\"\n[heartbeat]\ninterval = \"200ms\"\n[shutdown]\ngrace = \"3s\"\n"
    )
}

/// Runs the agent to completion and returns (exit code, stderr).
fn run_to_exit(config: &std::path::Path, env: &[(&str, &str)]) -> (Option<i32>, String) {
    let output = Command::new(AGENT)
        .arg("--config")
        .arg(config)
        .envs(env.iter().copied())
        .output()
        .unwrap();
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_config_shows_the_database_but_never_its_password() {
    let dir = tempfile::tempdir().unwrap();
    let planted = "planted-db-secret-7f3a";
    let config = write_config(
        &dir,
        &format!(
            "{}[database]\nurl = \"postgres://app:{planted}@127.0.0.1:5432/ledger\"\n[backup]\nroot = \"{}\"\n",
            app_config("nats://127.0.0.1:4222", "dev", "v1"),
            dir.path().display()
        ),
    );
    for env in [
        vec![],
        vec![(
            "CANTON_AGENT__DATABASE__URL",
            "host=127.0.0.1 dbname=ledger user=app password=planted-db-secret-7f3a",
        )],
    ] {
        let output = Command::new(AGENT)
            .arg("--config")
            .arg(&config)
            .arg("--check-config")
            .envs(env.iter().copied())
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(0), "{stderr}");
        assert!(stdout.contains("ledger"), "names the database: {stdout}");
        assert!(
            !stdout.contains(planted) && !stderr.contains(planted),
            "the password leaked: {stdout}{stderr}"
        );
    }
}

#[test]
fn bad_configs_exit_78_naming_key_value_and_expectation() {
    let dir = tempfile::tempdir().unwrap();
    let good = app_config("nats://127.0.0.1:4222", "dev", "v1");
    let cases = [
        (
            good.replace("interval = \"200ms\"", "interval = \"fast\""),
            vec![],
            vec!["heartbeat.interval", "\"fast\"", "positive duration"],
        ),
        (
            good.clone(),
            vec![("CANTON_AGENT__NODE", "V_1")],
            vec!["`node`", "\"V_1\"", "CANTON_AGENT__NODE", "[a-z0-9-]"],
        ),
        (
            good.replace("kind = \"app\"", "kind = \"validator\""),
            vec![],
            vec![
                "`kind`",
                "\"validator\"",
                "participant, sequencer, mediator, app",
            ],
        ),
        (
            good.replace("[shutdown]", "[shutdwn]"),
            vec![],
            vec!["shutdwn.grace", "unknown"],
        ),
        (
            good.replace("kind = \"app\"", "kind = \"participant\""),
            vec![],
            vec!["canton.admin_url", "missing", "http://"],
        ),
        (
            format!(
                "{good}[trust]\nnetwork_config = \"/nonexistent/network.cfg\"\nconfig_key = \"{}\"\nack_key_seed = \"/nonexistent/ack.seed\"\nack_key_id = \"k\"\norganisation = \"org-a\"\n[commands]\njournal_dir = \"/tmp/j\"\n",
                "ab".repeat(32)
            ),
            vec![],
            vec!["trust.network_config", "/nonexistent/network.cfg"],
        ),
        (
            format!("{good}[commands]\njournal_dir = \"/tmp/j\"\n"),
            vec![],
            vec!["trust.network_config", "missing"],
        ),
    ];
    for (text, env, expected) in cases {
        let path = write_config(&dir, &text);
        let (code, stderr) = run_to_exit(&path, &env);
        assert_eq!(code, Some(78), "{stderr}");
        for needle in expected {
            assert!(stderr.contains(needle), "{needle:?} missing from: {stderr}");
        }
        assert!(!stderr.contains("panicked"), "{stderr}");
    }
    let missing = dir.path().join("absent.toml");
    let (code, stderr) = run_to_exit(&missing, &[]);
    assert_eq!(code, Some(78), "{stderr}");
    assert!(stderr.contains(&missing.display().to_string()), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_the_agent_cleanly_with_exit_0() {
    let server = NatsServer::shared_or_start().unwrap();
    let net = network(server.url()).await;
    let heartbeats = Heartbeats::collect(&net, "v1").await;
    let dir = tempfile::tempdir().unwrap();
    let path = write_config(
        &dir,
        &app_config(server.url(), net.names.network().as_str(), "v1"),
    );
    let mut child = Command::new(AGENT)
        .arg("--config")
        .arg(&path)
        .stdin(Stdio::null())
        .spawn()
        .unwrap();

    wait_for(
        "heartbeats from the binary",
        Duration::from_secs(30),
        || async { heartbeats.all().len() >= 3 },
    )
    .await;
    wait_for("node state", Duration::from_secs(30), || async {
        node_state(&net, "v1").await.is_some()
    })
    .await;
    let pid = Pid::from_raw(i32::try_from(child.id()).unwrap());
    kill(pid, Signal::SIGTERM).unwrap();
    let sent = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if sent.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            panic!("agent still running 10 s after SIGTERM");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    eprintln!(
        "agent exited {:?} after {:?}",
        status.code(),
        sent.elapsed()
    );
    assert_eq!(status.code(), Some(0));
    let state = node_state(&net, "v1").await.unwrap();
    assert!(state.stopping);
    assert_eq!(state.kind(), pb::NodeKind::App);
}
