//! deploy/nats: the real nats-server accepts the configuration, and three servers started
//! from it on loopback (TLS material made here) form a JetStream cluster that elects a meta
//! leader and serves a real canton-coordinator, provisioned with the compose network's script.

use std::collections::BTreeMap;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use deploy_check::{deploy_dir, read_text};
use nix::sys::signal::Signal;
use serde_json::Value;
use testkit::{ChildProcess, TlsFiles, nats_server_binary, tls_files};

use crate::support::{Provisioned, describe, provision};

/// The variables of deploy/nats/nats-1.env, the per-host part of the configuration.
fn env_file_vars() -> BTreeMap<String, String> {
    read_text(&deploy_dir().join("nats/nats-1.env"))
        .unwrap()
        .lines()
        .filter(|line| !line.trim_start().starts_with('#'))
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn test_config(config: &Path, env: &BTreeMap<String, String>) -> std::process::Output {
    Command::new(nats_server_binary().unwrap())
        .arg("-t")
        .arg("-c")
        .arg(config)
        .env_clear()
        .envs(env)
        .output()
        .unwrap()
}

#[test]
fn nats_config_is_accepted_by_nats_server_with_the_per_host_environment() {
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_files(dir.path()).unwrap();
    let mut env = env_file_vars();
    env.insert(
        "NATS_STORE_DIR".into(),
        dir.path().join("js").display().to_string(),
    );
    env.insert("NATS_TLS_CERT".into(), tls.cert.display().to_string());
    env.insert("NATS_TLS_KEY".into(), tls.key.display().to_string());
    env.insert("NATS_TLS_CA".into(), tls.ca.display().to_string());
    let config = deploy_dir().join("nats/nats-server.conf");
    let output = test_config(&config, &env);
    assert!(output.status.success(), "{}", describe(&output));

    // The check is real: without a per-host variable the same file is refused.
    let mut incomplete = env.clone();
    incomplete.remove("NATS_SERVER_NAME");
    let refused = test_config(&config, &incomplete);
    assert!(
        !refused.status.success(),
        "a missing NATS_SERVER_NAME is refused: {}",
        describe(&refused)
    );

    let text = read_text(&config).unwrap();
    assert!(
        text.contains("sync_interval: always"),
        "JetStream fsyncs every write"
    );
    for variable in text
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '$'))
        .filter_map(|word| word.strip_prefix('$'))
        .filter(|name| name.starts_with("NATS_"))
    {
        assert!(
            env.contains_key(variable),
            "{variable} is documented in nats-1.env or set by the unit"
        );
    }
}

/// One member of the test cluster.
struct Member {
    name: String,
    client_port: u16,
    monitor_port: u16,
    process: ChildProcess,
}

/// deploy/nats's server configuration in `dir`, with the accounts `canton-ops gen nats-config`
/// wrote for the provisioned compose network in place of the shipped example.
fn write_configs(dir: &Path, provisioned: &Provisioned) -> PathBuf {
    let config = dir.join("nats-server.conf");
    std::fs::copy(deploy_dir().join("nats/nats-server.conf"), &config).unwrap();
    std::fs::copy(
        provisioned.secrets().join("nats/accounts.conf"),
        dir.join("accounts.conf"),
    )
    .unwrap();
    config
}

/// The text of an accounts file from its `accounts` block on, every public nkey blanked.
fn users_and_permissions(text: &str) -> String {
    let start = text.find("accounts {").expect("an accounts block");
    text[start..]
        .lines()
        .map(|line| match line.trim_start().strip_prefix("nkey: ") {
            Some(_) => "nkey: <public key>",
            None => line,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn shipped_accounts_are_the_generators_output_for_the_compose_network() {
    let provisioned = provision();
    let generated = read_text(&provisioned.secrets().join("nats/accounts.conf")).unwrap();
    let shipped = read_text(&deploy_dir().join("nats/accounts.conf")).unwrap();
    assert_eq!(
        users_and_permissions(&shipped),
        users_and_permissions(&generated),
        "deploy/nats/accounts.conf is `canton-ops gen nats-config --input deploy/compose/keys/network.toml` output"
    );
    let seeds = provisioned.secrets().join("nats/users");
    for user in [
        "agent-participant1",
        "agent-participant1.a",
        "coordinator-operator",
        "system",
    ] {
        let path = seeds.join(format!("{user}.nk"));
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} is private", path.display());
    }
    assert!(
        !shipped.contains("password"),
        "users log in with nkeys only"
    );
}

fn start_cluster(dir: &Path, tls: &TlsFiles, provisioned: &Provisioned) -> Vec<Member> {
    let config = write_configs(dir, provisioned);
    let ports: Vec<[u16; 3]> = (0..3)
        .map(|_| [0; 3].map(|_| testkit::free_port().unwrap()))
        .collect();
    let routes: Vec<String> = ports
        .iter()
        .map(|[_, cluster, _]| format!("tls://127.0.0.1:{cluster}"))
        .collect();
    let binary = nats_server_binary().unwrap();
    let mut members: Vec<Member> = ports
        .iter()
        .enumerate()
        .map(|(i, [client, cluster, monitor])| {
            let name = format!("nats-{}", i + 1);
            let store = dir.join(&name);
            std::fs::create_dir_all(&store).unwrap();
            let mut command = Command::new(&binary);
            command.arg("-c").arg(&config).envs([
                ("NATS_SERVER_NAME", name.clone()),
                ("NATS_CLIENT_LISTEN", format!("127.0.0.1:{client}")),
                ("NATS_CLUSTER_LISTEN", format!("127.0.0.1:{cluster}")),
                ("NATS_MONITOR_LISTEN", format!("127.0.0.1:{monitor}")),
                ("NATS_ROUTE_1", routes[0].clone()),
                ("NATS_ROUTE_2", routes[1].clone()),
                ("NATS_ROUTE_3", routes[2].clone()),
                (
                    "NATS_STORE_DIR",
                    store.join("jetstream").display().to_string(),
                ),
                ("NATS_TLS_CERT", tls.cert.display().to_string()),
                ("NATS_TLS_KEY", tls.key.display().to_string()),
                ("NATS_TLS_CA", tls.ca.display().to_string()),
            ]);
            let process =
                ChildProcess::spawn(&name, command, &store.join("nats.log"), Signal::SIGTERM)
                    .unwrap();
            Member {
                name,
                client_port: *client,
                monitor_port: *monitor,
                process,
            }
        })
        .collect();
    for member in &mut members {
        member
            .process
            .wait_for_log(Duration::from_secs(30), |log| {
                log.contains("Server is ready").then_some(())
            })
            .unwrap();
    }
    members
}

async fn monitor(port: u16, path: &str) -> Option<Value> {
    let addr = format!("127.0.0.1:{port}").parse().ok()?;
    let (status, body) = canton_sim::control::http_request(addr, "GET", path, None)
        .await
        .ok()?;
    (status == 200).then(|| serde_json::from_str(&body).ok())?
}

/// The meta leader every member names, once they all name the same one in a cluster of 3.
async fn agreed_meta_leader(members: &[Member]) -> Option<String> {
    let mut leaders = Vec::new();
    for member in members {
        let jsz = monitor(member.monitor_port, "/jsz").await?;
        let meta = &jsz["meta_cluster"];
        if meta["cluster_size"].as_u64() != Some(3) {
            return None;
        }
        leaders.push(meta["leader"].as_str()?.to_owned());
    }
    let first = leaders.first()?.clone();
    (!first.is_empty() && leaders.iter().all(|l| *l == first)).then_some(first)
}

async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            eprintln!("{what}: after {:?}", started.elapsed());
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "{what}: not within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_nats_cluster_from_the_deploy_config_elects_a_meta_leader_and_serves_the_coordinator()
{
    let dir = tempfile::tempdir().unwrap();
    let tls = tls_files(dir.path()).unwrap();
    let provisioned = provision();
    let started = Instant::now();
    let mut members = start_cluster(dir.path(), &tls, &provisioned);
    eprintln!("three members ready after {:?}", started.elapsed());
    let leader = eventually(
        "JetStream meta leader agreed",
        Duration::from_secs(60),
        || agreed_meta_leader(&members),
    )
    .await;
    assert!(
        members.iter().any(|m| m.name == leader),
        "leader {leader} is a member"
    );
    for member in &members {
        let varz = monitor(member.monitor_port, "/varz").await.unwrap();
        assert_eq!(
            varz["tls_required"],
            Value::Bool(true),
            "{} requires TLS",
            member.name
        );
        assert_eq!(
            varz["jetstream"]["config"]["sync_always"],
            Value::Bool(true),
            "{} fsyncs every write: {}",
            member.name,
            varz["jetstream"]["config"]
        );
    }

    // The coordinator of the compose network, connected through a member that is not the
    // meta leader, logged in as its organisation's generated user over TLS.
    let secrets = provisioned.secrets();
    let through = members.iter().find(|m| m.name != leader).unwrap();
    let api_port = testkit::free_port().unwrap();
    let mut config: toml::Table = read_text(&secrets.join("coordinator.toml"))
        .unwrap()
        .replace(
            "/etc/canton-sidecar/secrets",
            &secrets.display().to_string(),
        )
        .parse()
        .unwrap();
    config["nats"]["url"] = format!("nats://127.0.0.1:{}", through.client_port).into();
    config["nats"]
        .as_table_mut()
        .unwrap()
        .insert("tls_ca_file".into(), tls.ca.display().to_string().into());
    config["api"]["listen"] = format!("127.0.0.1:{api_port}").into();
    let config_path = dir.path().join("coordinator.toml");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
    let mut command = Command::new(testkit::binary_path("canton-coordinator").unwrap());
    command.arg("--config").arg(&config_path);
    let mut coordinator = ChildProcess::spawn(
        "canton-coordinator",
        command,
        &dir.path().join("coordinator.log"),
        Signal::SIGTERM,
    )
    .unwrap();
    let lead_started = Instant::now();
    tokio::task::block_in_place(|| {
        coordinator.wait_for_log(Duration::from_secs(60), |log| {
            log.contains("leader: runs claimed").then_some(())
        })
    })
    .unwrap();
    eprintln!("coordinator leads after {:?}", lead_started.elapsed());

    // A query through the API: it reads the cluster's key-value store.
    let ops = Command::new(testkit::binary_path("canton-ops").unwrap())
        .args(["--coordinator", &format!("http://127.0.0.1:{api_port}")])
        .arg("--token-file")
        .arg(secrets.join("read-only.token"))
        .args(["--output", "json", "nodes"])
        .output()
        .unwrap();
    assert!(ops.status.success(), "canton-ops nodes: {}", describe(&ops));

    // The bus's streams and buckets were created on the cluster (each member reports the
    // streams it hosts).
    let mut hosted = 0;
    for member in &members {
        let jsz = monitor(member.monitor_port, "/jsz").await.unwrap();
        hosted += jsz["streams"].as_u64().unwrap_or(0);
    }
    assert!(
        hosted >= 5,
        "the bus's streams and buckets exist on the cluster ({hosted})"
    );
    assert!(
        coordinator.stop(Duration::from_secs(10)),
        "the coordinator stops cleanly"
    );
    for member in &mut members {
        assert!(
            member.process.stop(Duration::from_secs(10)),
            "{} stops cleanly",
            member.name
        );
    }
}
