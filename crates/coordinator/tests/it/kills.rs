//! The coordinator binary stopped at each driver failpoint (as if killed there), restarted,
//! reaches the same final state: the run succeeds and every node dumped exactly once.

use std::time::{Duration, Instant};

use proto_sidecar as pb;
use testkit::NatsServer;

use canton_coordinator::config::Config;

use crate::support::{
    Harness, OPERATOR_TOKEN, READ_TOKEN, client, demo_nodes, finished, wait_for_run,
};

fn backup(request_id: &str) -> pb::StartRunRequest {
    pb::StartRunRequest {
        runbook: "backup".into(),
        nodes: vec![],
        parameters: vec![],
        request_id: request_id.into(),
    }
}

/// Calls StartRun until a leader answers (a repeat with the same request id returns the run).
async fn start_when_leading(addr: std::net::SocketAddr, request_id: &str) -> Option<String> {
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(30) {
        if let Ok(channel) = tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
        {
            drop(channel);
            let mut ops = client(addr, OPERATOR_TOKEN).await;
            match ops.start_run(backup(request_id)).await {
                Ok(response) => {
                    eprintln!("StartRun answered after {:?}", started.elapsed());
                    return Some(response.into_inner().run.unwrap().run_id);
                }
                Err(status) if status.code() == tonic::Code::Unavailable => {}
                Err(status) => {
                    // The process died inside the call (the failpoint).
                    eprintln!("StartRun ended with {status}");
                    return None;
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("no leader answered StartRun within 30 s");
}

/// `failpoints` is a `FAILPOINTS` value for the first process.
async fn killed_at_then_resumed(failpoints: &str) {
    killed_at_then_resumed_by(failpoints, None).await;
}

/// [`killed_at_then_resumed`] with `successor_failpoints` for the second process; returns its
/// log.
async fn killed_at_then_resumed_by(failpoints: &str, successor_failpoints: Option<&str>) -> String {
    let server = NatsServer::shared_or_start().unwrap();
    let harness = Harness::new(server.url(), demo_nodes()).await;
    let dir = tempfile::tempdir().unwrap();
    let port = testkit::free_port().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = write_config_files(dir.path(), &harness.config(), port);

    let mut first = spawn_coordinator(&config, &dir.path().join("first.log"), Some(failpoints));
    let _ = start_when_leading(addr, "kill-1").await;
    let stopped = first.wait_for_log(Duration::from_secs(30), |log| {
        log.contains("failpoint fired").then_some(())
    });
    assert!(stopped.is_ok(), "{stopped:?}");
    testkit::wait_until(
        "the first coordinator exited",
        Duration::from_secs(30),
        || !first.is_running(),
    )
    .unwrap();

    let second_log = dir.path().join("second.log");
    let mut second = spawn_coordinator(&config, &second_log, successor_failpoints);
    let run_id = start_when_leading(addr, "kill-1").await.unwrap();
    let mut ops = client(addr, OPERATOR_TOKEN).await;
    let run = wait_for_run(&mut ops, &run_id, "resumed backup finished", finished).await;
    assert_eq!(run.status(), pb::RunStatus::Succeeded, "{run:#?}");
    // Resumed by the second process's tenure.
    assert!(run.owner_epoch >= 2, "owner epoch {}", run.owner_epoch);
    let executed = harness.responder.executed();
    for node in ["app1", "p1", "p2", "m1", "s1"] {
        let dumps = executed
            .iter()
            .filter(|e| {
                e.node == node
                    && ["/apps/", "/members/", "/sequencers/"]
                        .iter()
                        .any(|step| e.command_id.contains(step))
            })
            .count();
        assert_eq!(dumps, 1, "node {node} dumped {dumps} times: {executed:#?}");
    }
    assert!(second.stop(Duration::from_secs(10)));
    std::fs::read_to_string(&second_log).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_killed_after_the_cas_before_publishing_resumes_to_a_complete_backup() {
    killed_at_then_resumed(&format!(
        "{}=return",
        canton_coordinator::driver::failpoints::AFTER_CAS
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_killed_after_the_first_publish_resumes_to_a_complete_backup() {
    killed_at_then_resumed(&format!(
        "{}=return",
        canton_coordinator::driver::failpoints::AFTER_PUBLISH
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_writes_whose_answers_are_lost_are_recognised_by_read_back() {
    let server = NatsServer::shared_or_start().unwrap();
    let harness = Harness::new(server.url(), demo_nodes()).await;
    let dir = tempfile::tempdir().unwrap();
    let port = testkit::free_port().unwrap();
    let addr: std::net::SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let config = write_config_files(dir.path(), &harness.config(), port);
    let failpoint = format!(
        "{}=return",
        canton_coordinator::driver::failpoints::CAS_TIMEOUT_APPLIED
    );
    let mut coordinator = spawn_coordinator(&config, &dir.path().join("c.log"), Some(&failpoint));
    let run_id = start_when_leading(addr, "lost-answers").await.unwrap();
    let mut ops = client(addr, OPERATOR_TOKEN).await;
    let run = wait_for_run(&mut ops, &run_id, "backup finished", finished).await;
    assert_eq!(run.status(), pb::RunStatus::Succeeded, "{run:#?}");
    assert_eq!(run.owner_epoch, 1, "no restart, no new tenure");
    let log = std::fs::read_to_string(dir.path().join("c.log")).unwrap();
    let lost = log
        .matches("dropping the answer of an applied write")
        .count();
    assert!(
        lost >= 5,
        "every run write went through read-back; saw {lost}"
    );
    assert!(coordinator.stop(Duration::from_secs(10)));
}

/// A successor whose first take-overs cannot list the runs (a cluster electing the bucket's
/// leader) tries again and drives the run to the end, instead of leading without it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_a_take_over_that_cannot_list_the_runs_is_tried_again_until_it_adopts_them() {
    use canton_coordinator::driver::failpoints::{AFTER_CAS, TAKE_OVER_LISTING_UNAVAILABLE};
    let log = killed_at_then_resumed_by(
        &format!("{AFTER_CAS}=return"),
        Some(&format!("{TAKE_OVER_LISTING_UNAVAILABLE}=2*return")),
    )
    .await;
    let retries = log.matches("take-over failed; trying again").count();
    assert_eq!(retries, 2, "{log}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_killed_after_a_later_cas_in_the_middle_of_the_run_resumes_to_a_complete_backup() {
    // Three writes pass (start, then answers of the first steps), the fourth stops the process.
    killed_at_then_resumed(&format!(
        "{}=3*off->return",
        canton_coordinator::driver::failpoints::AFTER_CAS
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_a_frozen_leader_thawed_after_a_takeover_sends_and_writes_nothing() {
    let server = NatsServer::shared_or_start().unwrap();
    let harness = Harness::new(server.url(), demo_nodes()).await;
    harness
        .responder
        .set("p1", crate::support::Behaviour::Silent);
    let dir = tempfile::tempdir().unwrap();
    let (port_a, port_b) = (testkit::free_port().unwrap(), testkit::free_port().unwrap());
    let addr_a: std::net::SocketAddr = format!("127.0.0.1:{port_a}").parse().unwrap();
    let addr_b: std::net::SocketAddr = format!("127.0.0.1:{port_b}").parse().unwrap();
    let dir_a = dir.path().join("a");
    let dir_b = dir.path().join("b");
    std::fs::create_dir_all(&dir_a).unwrap();
    std::fs::create_dir_all(&dir_b).unwrap();
    let config_a = write_config_files(&dir_a, &harness.config(), port_a);
    let config_b = write_config_files(&dir_b, &harness.config(), port_b);

    let mut a = spawn_coordinator(&config_a, &dir_a.join("a.log"), None);
    let started = Instant::now();
    let (run_id, mut ops_a) = loop {
        let mut ops = client_when_up(addr_a).await;
        let mut request = pb::StartRunRequest {
            runbook: "disconnect".into(),
            nodes: vec!["p1".into(), "p2".into()],
            parameters: vec![pb::Parameter {
                key: "deadline".into(),
                value: "8s".into(),
            }],
            request_id: "frozen".into(),
        };
        request.parameters.push(pb::Parameter {
            key: "compensate".into(),
            value: "true".into(),
        });
        match ops.start_run(request).await {
            Ok(response) => break (response.into_inner().run.unwrap().run_id, ops),
            Err(status) if status.code() == tonic::Code::Unavailable => {
                assert!(started.elapsed() < Duration::from_secs(30));
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(status) => panic!("{status}"),
        }
    };
    wait_for_run(
        &mut ops_a,
        &run_id,
        "p2 disconnected under epoch 1",
        |run| {
            run.steps[0]
                .nodes
                .iter()
                .any(|n| n.node == "p2" && n.status() == pb::AckStatus::Done)
        },
    )
    .await;
    let mut b = spawn_coordinator(&config_b, &dir_b.join("b.log"), None);
    a.pause().unwrap();
    let frozen_at = crate::support::now_ms();
    // B takes over once A's lease ran out: it fences and adopts the run.
    b.wait_for_log(Duration::from_secs(30), |log| {
        log.contains("leader: runs claimed").then_some(())
    })
    .unwrap();
    let mut ops_b = client_when_up(addr_b).await;
    let adopted = wait_for_run(&mut ops_b, &run_id, "run adopted by epoch 2", |run| {
        run.owner_epoch == 2
    })
    .await;
    assert!(!finished(&adopted));
    a.resume().unwrap();
    let thawed_at = crate::support::now_ms();
    eprintln!("A frozen for {} ms", thawed_at - frozen_at);
    let run = wait_for_run(&mut ops_b, &run_id, "run finished under epoch 2", finished).await;
    assert_eq!(run.status(), pb::RunStatus::Compensated, "{run:#?}");
    assert_eq!(run.owner_epoch, 2);

    // Nothing of epoch 1 ran after the thaw; p2 was reconnected by epoch 2.
    let executed = harness.responder.executed();
    let late: Vec<_> = executed
        .iter()
        .filter(|e| e.at >= thawed_at && e.epoch < 2)
        .collect();
    assert!(late.is_empty(), "{late:#?}");
    assert!(
        executed
            .iter()
            .any(|e| e.node == "p2" && e.command_id.contains("~undo") && e.epoch == 2)
    );
    // One epoch bump.
    let epoch = harness
        .network
        .kv(sidecar_bus::Bucket::Leader)
        .get(&canton_coordinator::leadership::epoch_key(
            crate::support::ORG,
        ))
        .await
        .unwrap()
        .unwrap();
    let epoch: serde_json::Value = serde_json::from_slice(&epoch.value).unwrap();
    assert_eq!(epoch["epoch"], 2);
    // No write of A after B adopted the run: once a revision carries epoch 2, all later do.
    let mut history = harness
        .network
        .kv(sidecar_bus::Bucket::Runs)
        .store()
        .history(&run_id)
        .await
        .unwrap();
    let mut owners = Vec::new();
    while let Some(entry) = futures::StreamExt::next(&mut history).await {
        let entry = entry.unwrap();
        let record = canton_coordinator::driver::record::RunRecord::decode(&entry.value).unwrap();
        owners.push(record.state.owner_epoch);
    }
    let first_two = owners.iter().position(|e| *e == 2).unwrap();
    assert!(owners[first_two..].iter().all(|e| *e == 2), "{owners:?}");
    let a_log = std::fs::read_to_string(dir_a.join("a.log")).unwrap();
    assert!(
        a_log.contains("tenure ended") || a_log.contains("lease lost"),
        "A noticed it lost the lease"
    );
    assert!(a.stop(Duration::from_secs(10)));
    assert!(b.stop(Duration::from_secs(10)));
}

pub async fn client_when_up(addr: std::net::SocketAddr) -> crate::support::Client {
    let started = Instant::now();
    loop {
        if tonic::transport::Channel::from_shared(format!("http://{addr}"))
            .unwrap()
            .connect()
            .await
            .is_ok()
        {
            return client(addr, OPERATOR_TOKEN).await;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "api {addr} not up"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Writes `config` as the files and TOML the binary reads; returns the TOML path.
pub fn write_config_files(
    dir: &std::path::Path,
    config: &Config,
    api_port: u16,
) -> std::path::PathBuf {
    std::fs::write(
        dir.join("coordinator.seed"),
        hex::encode(config.signing_seed),
    )
    .unwrap();
    std::fs::write(dir.join("network-config.bin"), &config.network_config).unwrap();
    std::fs::write(dir.join("operator.token"), OPERATOR_TOKEN).unwrap();
    std::fs::write(dir.join("reader.token"), READ_TOKEN).unwrap();
    let toml = format!(
        r#"network = "{network}"
organisation = "{org}"
name = "coord"

[nats]
url = "{url}"

[signing]
seed_file = "coordinator.seed"
key_id = "{key_id}"

[network_config]
file = "network-config.bin"
config_public_key = "{config_public}"
config_key_id = "{config_key_id}"

[api]
listen = "127.0.0.1:{api_port}"
operator_token_file = "operator.token"
read_only_token_file = "reader.token"

[leader]
lease_ttl = "3s"
epsilon = "300ms"
short_lease_for_tests = true

[driver]
clock_skew = "500ms"
fence_timeout = "3s"
tick = "50ms"
"#,
        network = config.network,
        org = config.organisation,
        url = config.nats_url,
        key_id = config.signing_key_id,
        config_public = hex::encode(config.config_public_key),
        config_key_id = config.config_key_id,
    );
    let path = dir.join("coordinator.toml");
    std::fs::write(&path, toml).unwrap();
    path
}

/// The coordinator binary as a child process.
pub fn spawn_coordinator(
    config: &std::path::Path,
    log: &std::path::Path,
    failpoints: Option<&str>,
) -> testkit::ChildProcess {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_canton-coordinator"));
    command.arg("--config").arg(config);
    command.env("RUST_LOG", "info");
    match failpoints {
        Some(failpoints) => command.env("FAILPOINTS", failpoints),
        None => command.env_remove("FAILPOINTS"),
    };
    testkit::ChildProcess::spawn(
        "canton-coordinator",
        command,
        log,
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap()
}

#[test]
fn a_bad_configuration_exits_78_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let names = crate::fresh_names();
    let config = crate::support::config(&names, "nats://127.0.0.1:1", &demo_nodes());
    let path = write_config_files(dir.path(), &config, 7443);
    let good = std::fs::read_to_string(&path).unwrap();
    for (broken, key) in [
        (
            good.replace("lease_ttl = \"3s\"", "lease_ttl = \"soon\""),
            "leader.lease_ttl",
        ),
        (
            good.replace(
                "short_lease_for_tests = true",
                "short_lease_for_tests = false",
            ),
            "leader.lease_ttl",
        ),
        (
            good.replace("listen = \"127.0.0.1:7443\"", "listen = \"everywhere\""),
            "api.listen",
        ),
        (
            good.replace(
                "seed_file = \"coordinator.seed\"",
                "seed_file = \"missing.seed\"",
            ),
            "signing.seed_file",
        ),
        (
            good.replace("[nats]\n", "[nats]\nreplicas = 7\n"),
            "nats.replicas",
        ),
        (format!("{good}\n[extra]\nkey = 1\n"), "extra"),
    ] {
        std::fs::write(&path, broken).unwrap();
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_canton-coordinator"))
            .arg("--config")
            .arg(&path)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(78), "{stderr}");
        assert!(stderr.contains(key), "expected {key} in: {stderr}");
    }
}
