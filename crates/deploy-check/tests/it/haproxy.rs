//! deploy/haproxy: `haproxy -c` accepts the configuration (with its defaults and with
//! addresses from the environment), and HAProxy started from it in front of a canton-sim HA
//! participant pair sends admin API calls to the active replica, also after a switchover.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use canton_client::{CantonClient, ClientConfig, NodeKind};
use canton_sim::network::LaunchOptions;
use canton_sim::{NetworkSpec, PostgresTarget, SimNetwork, SimNode};
use deploy_check::{deploy_dir, on_path};
use nix::sys::signal::Signal;
use testkit::{ChildProcess, Postgres};

use crate::support::describe;

fn haproxy() -> PathBuf {
    on_path("haproxy")
        .or_else(|| Some(PathBuf::from("/usr/sbin/haproxy")).filter(|p| p.is_file()))
        .expect("haproxy not installed: run scripts/install-deps.sh (Debian package haproxy)")
}

fn config() -> PathBuf {
    deploy_dir().join("haproxy/haproxy.cfg")
}

fn check(env: &BTreeMap<&str, String>) -> std::process::Output {
    Command::new(haproxy())
        .arg("-c")
        .arg("-f")
        .arg(config())
        .env_clear()
        .envs(env)
        .output()
        .unwrap()
}

#[test]
fn haproxy_config_passes_haproxy_check() {
    // With its defaults: replica names that do not resolve here only disable the servers.
    let defaults = check(&BTreeMap::new());
    assert!(defaults.status.success(), "{}", describe(&defaults));

    // With loopback addresses, as the routing test and a single-host setup use it: no warning.
    let env = BTreeMap::from([
        ("REPLICA_A_HOST", "127.0.0.1".to_owned()),
        ("REPLICA_B_HOST", "127.0.0.1".to_owned()),
        ("REPLICA_B_ADMIN_PORT", "10012".to_owned()),
        ("REPLICA_B_LEDGER_PORT", "10011".to_owned()),
        ("REPLICA_B_HEALTH_PORT", "10014".to_owned()),
    ]);
    let local = check(&env);
    let stderr = String::from_utf8_lossy(&local.stderr);
    assert!(
        local.status.success() && !stderr.contains("WARNING"),
        "{}",
        describe(&local)
    );

    // One health port per replica: the port each check goes to is the one its health server has.
    let text = std::fs::read_to_string(config()).unwrap();
    for line in text
        .lines()
        .filter(|l| l.trim_start().starts_with("server "))
    {
        let replica = if line.contains("replica_a") { "A" } else { "B" };
        assert!(
            line.contains(&format!(
                "check port \"${{REPLICA_{replica}_HEALTH_PORT}}\""
            )),
            "every server is checked on its replica's health port: {line}"
        );
    }
    let directives: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .collect();
    assert!(directives.contains(&"http-check send meth GET uri /health"));
    assert!(
        !directives.iter().any(|l| l.contains("is-active")),
        "Canton 3.x has no is-active check"
    );
}

/// The admin port the answering replica reports about itself.
async fn admin_port_behind(frontend: &str) -> Option<(bool, i32)> {
    let client = CantonClient::new(ClientConfig::new(
        "participant1",
        NodeKind::Participant,
        frontend,
    ))
    .ok()?;
    let status = client.status().await.ok()?;
    Some((status.active, *status.ports.get("admin")?))
}

fn admin_port(node: &SimNode) -> i32 {
    let url = node.admin_url().unwrap();
    url.rsplit(':').next().unwrap().parse().unwrap()
}

async fn role(node: &SimNode) -> String {
    node.control()
        .info()
        .await
        .map(|i| i.role)
        .unwrap_or_default()
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

/// Every one of `calls` calls through the frontend lands on the replica with `port`.
async fn all_calls_reach(frontend: &str, port: i32, calls: usize) {
    for call in 0..calls {
        let answer = admin_port_behind(frontend).await;
        assert_eq!(answer, Some((true, port)), "call {call} through HAProxy");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_haproxy_routes_to_the_active_replica_of_an_ha_pair() {
    let postgres = Postgres::shared_or_start().unwrap();
    let mut spec = NetworkSpec::from_toml(
        r#"
[[node]]
id = "sequencer1"
kind = "sequencer"

[[node]]
id = "participant1"
kind = "participant"
replicas = ["a", "b"]
http_health = true
"#,
    )
    .unwrap();
    spec.name = testkit::unique_id("ha");
    let binary = testkit::binary_path("canton-sim").unwrap();
    let sims = SimNetwork::start(
        &spec,
        LaunchOptions {
            postgres: PostgresTarget::of(&postgres),
            binary: &binary,
            work_dir: None,
        },
    )
    .unwrap();
    let a = sims.node("participant1.a").unwrap();
    let b = sims.node("participant1.b").unwrap();
    let port_of =
        |node: &SimNode| -> String { node.http_health_addr().unwrap().port().to_string() };
    let url_port =
        |url: Option<String>| -> String { url.unwrap().rsplit(':').next().unwrap().to_owned() };
    let admin_frontend = testkit::free_port().unwrap();
    let ledger_frontend = testkit::free_port().unwrap();
    let stats = testkit::free_port().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(haproxy());
    command.arg("-db").arg("-f").arg(config()).envs([
        ("REPLICA_A_HOST", "127.0.0.1".to_owned()),
        ("REPLICA_B_HOST", "127.0.0.1".to_owned()),
        ("REPLICA_A_ADMIN_PORT", url_port(a.admin_url())),
        ("REPLICA_B_ADMIN_PORT", url_port(b.admin_url())),
        ("REPLICA_A_LEDGER_PORT", url_port(a.ledger_url())),
        ("REPLICA_B_LEDGER_PORT", url_port(b.ledger_url())),
        ("REPLICA_A_HEALTH_PORT", port_of(a)),
        ("REPLICA_B_HEALTH_PORT", port_of(b)),
        ("ADMIN_FRONTEND_BIND", format!("127.0.0.1:{admin_frontend}")),
        (
            "LEDGER_FRONTEND_BIND",
            format!("127.0.0.1:{ledger_frontend}"),
        ),
        ("STATS_BIND", format!("127.0.0.1:{stats}")),
    ]);
    let _haproxy = ChildProcess::spawn(
        "haproxy",
        command,
        &dir.path().join("haproxy.log"),
        Signal::SIGTERM,
    )
    .unwrap();
    let frontend = format!("http://127.0.0.1:{admin_frontend}");

    let (active, passive) = eventually("one replica active", Duration::from_secs(30), || async {
        match (role(a).await.as_str(), role(b).await.as_str()) {
            ("active", "passive") => Some((a, b)),
            ("passive", "active") => Some((b, a)),
            _ => None,
        }
    })
    .await;
    eventually(
        "HAProxy reaches the active replica",
        Duration::from_secs(30),
        || async {
            (admin_port_behind(&frontend).await == Some((true, admin_port(active)))).then_some(())
        },
    )
    .await;
    all_calls_reach(&frontend, admin_port(active), 20).await;

    // Switchover: the active replica goes passive, the other takes the lock; HAProxy follows
    // the health checks (inter 1s, fall 2, rise 2).
    CantonClient::new(ClientConfig::new(
        "participant1",
        NodeKind::Participant,
        active.admin_url().unwrap(),
    ))
    .unwrap()
    .set_passive()
    .await
    .unwrap();
    let switched = Instant::now();
    eventually(
        "HAProxy reaches the new active replica",
        Duration::from_secs(30),
        || async {
            (admin_port_behind(&frontend).await == Some((true, admin_port(passive)))).then_some(())
        },
    )
    .await;
    eprintln!(
        "switchover seen through HAProxy {:?} after SetPassive",
        switched.elapsed()
    );
    all_calls_reach(&frontend, admin_port(passive), 20).await;

    // The ledger API backend makes the same choice, once its own checks have risen (each
    // backend checks on its own schedule, so it may lag the admin backend by a check or two).
    let (up, down) = if passive.id().ends_with(".a") {
        ("replica_a", "replica_b")
    } else {
        ("replica_b", "replica_a")
    };
    let addr = format!("127.0.0.1:{stats}").parse().unwrap();
    eventually(
        "the ledger API backend marks the new active up and the old one down",
        Duration::from_secs(30),
        || async {
            let (status, csv) = canton_sim::control::http_request(addr, "GET", "/stats;csv", None)
                .await
                .ok()?;
            let state = |server: &str| -> String {
                csv.lines()
                    .map(|l| l.split(',').collect::<Vec<_>>())
                    .find(|f| f.len() > 17 && f[0] == "participant_ledger" && f[1] == server)
                    .map(|f| f[17].to_owned())
                    .unwrap_or_default()
            };
            let up_state = state(up);
            let down_state = state(down);
            (status == 200
                && up_state.starts_with("UP")
                && !up_state.contains('/')
                && down_state.starts_with("DOWN")
                && !down_state.contains('/'))
            .then_some(())
        },
    )
    .await;
    eprintln!(
        "ledger backend followed {:?} after SetPassive",
        switched.elapsed()
    );
    drop(sims);
}
