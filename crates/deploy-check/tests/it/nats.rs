//! deploy/nats: the real nats-server accepts the configuration, and three servers started
//! from it on loopback (TLS material made here) form a JetStream cluster that elects a meta
//! leader and serves a real canton-coordinator, provisioned with the compose network's script.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use deploy_check::{deploy_dir, read_text};
use nix::sys::signal::Signal;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use serde_json::Value;
use testkit::{ChildProcess, nats_server_binary};

use crate::support::{describe, provision};

/// A CA and one certificate for 127.0.0.1 and localhost, good for serving and for the
/// members' routes (which present it as a client).
pub struct TlsFiles {
    pub ca: PathBuf,
    pub cert: PathBuf,
    pub key: PathBuf,
}

pub fn tls_files(dir: &Path) -> TlsFiles {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "canton-sidecar test CA");
    ca_params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca_params, ca_key);
    let server_key = KeyPair::generate().unwrap();
    let mut params =
        CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()]).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, "nats test member");
    params.extended_key_usages = vec![
        ExtendedKeyUsagePurpose::ServerAuth,
        ExtendedKeyUsagePurpose::ClientAuth,
    ];
    let cert = params.signed_by(&server_key, &issuer).unwrap();
    let files = TlsFiles {
        ca: dir.join("ca.pem"),
        cert: dir.join("server.pem"),
        key: dir.join("server-key.pem"),
    };
    std::fs::write(&files.ca, ca_cert.pem()).unwrap();
    std::fs::write(&files.cert, cert.pem()).unwrap();
    std::fs::write(&files.key, server_key.serialize_pem()).unwrap();
    files
}

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
    let tls = tls_files(dir.path());
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

const PASSWORD: &str = "test-password";

/// deploy/nats's two files in `dir`, the accounts' placeholders filled for this test.
fn write_configs(dir: &Path) -> PathBuf {
    let config = dir.join("nats-server.conf");
    std::fs::copy(deploy_dir().join("nats/nats-server.conf"), &config).unwrap();
    let accounts = read_text(&deploy_dir().join("nats/accounts.conf"))
        .unwrap()
        .replace("REPLACE_ORGANISATION", "operator")
        .replace("REPLACE_NODE", "participant1")
        .replace("REPLACE_BCRYPT_HASH", PASSWORD);
    // The coordinator has no NATS credential setting yet (and the client ignores credentials
    // in the URL), so the test maps unauthenticated clients to the coordinator's user.
    let accounts = format!("{accounts}\nno_auth_user: coordinator-operator\n");
    std::fs::write(dir.join("accounts.conf"), accounts).unwrap();
    config
}

fn start_cluster(dir: &Path, tls: &TlsFiles) -> Vec<Member> {
    let config = write_configs(dir);
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
    let tls = tls_files(dir.path());
    let started = Instant::now();
    let mut members = start_cluster(dir.path(), &tls);
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
    // meta leader, with the cluster CA trusted through SSL_CERT_FILE as in the images.
    let provisioned = provision();
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
    config["api"]["listen"] = format!("127.0.0.1:{api_port}").into();
    let config_path = dir.path().join("coordinator.toml");
    std::fs::write(&config_path, toml::to_string(&config).unwrap()).unwrap();
    let mut command = Command::new(testkit::binary_path("canton-coordinator").unwrap());
    command
        .arg("--config")
        .arg(&config_path)
        .env("SSL_CERT_FILE", &tls.ca);
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
