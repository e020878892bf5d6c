//! The `canton-agent` binary killed with SIGKILL at each point of a command's life (crash points
//! of the `fail` crate, set through `FAILPOINTS`), then restarted: the command ends Done and the
//! participant's own action log shows the action executed exactly once.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use canton_agent::commands::crash_points;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use proto_sidecar as pb;
use testkit::{NatsServer, Postgres};

use crate::command_support::*;
use crate::support::{network, wait_for};

const AGENT: &str = env!("CARGO_BIN_EXE_canton-agent");

pub(crate) fn agent_toml(
    url: &str,
    net: &str,
    admin_url: &str,
    dir: &Path,
    trust: &Trust,
) -> String {
    let t = trust.write(dir);
    format!(
        r#"network = "{net}"
node = "{NODE}"
kind = "participant"
[nats]
url = "{url}"
[heartbeat]
interval = "200ms"
[shutdown]
grace = "3s"
[canton]
admin_url = "{admin_url}"
[trust]
network_config = "{}"
config_key = "{}"
ack_key_seed = "{}"
ack_key_id = "{}"
organisation = "{ORG}"
[commands]
journal_dir = "{}"
ack_wait = "2s"
"#,
        t.network_config.display(),
        hex::encode(t.config_key),
        t.ack_key_seed.display(),
        t.ack_key_id,
        dir.join("journal").display(),
    )
}

pub(crate) fn spawn(config: &Path, log: &Path, failpoints: Option<&str>) -> Child {
    let mut command = Command::new(AGENT);
    command
        .arg("--config")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    match failpoints {
        Some(points) => command.env("FAILPOINTS", points),
        None => command.env_remove("FAILPOINTS"),
    };
    command.spawn().unwrap()
}

pub(crate) async fn wait_exit(child: &mut Child, log: &Path) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            eprintln!("agent exited {status:?} after {:?}", start.elapsed());
            return status;
        }
        if start.elapsed() > DEADLINE {
            child.kill().unwrap();
            panic!(
                "agent still running after {DEADLINE:?}; log:\n{}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_sigkill_at_every_crash_point_then_restart_executes_the_action_exactly_once() {
    let nats = NatsServer::shared_or_start().unwrap();
    let postgres = Postgres::shared_or_start().unwrap();
    let sims = start_sim(&postgres).await;
    let admin_url = canton_config(&sims).admin_url;
    let client = participant_client(&sims);
    for point in [
        crash_points::BEFORE_STARTED,
        crash_points::AFTER_STARTED,
        crash_points::AFTER_ACTION,
        crash_points::AFTER_DONE,
    ] {
        eprintln!("=== crash point {point}");
        let net = network(nats.url()).await;
        let trust = Trust::new(net.names.network().as_str());
        let acks = Acks::collect(&net, &trust).await;
        let dir = tempfile::tempdir().unwrap();
        let config = dir.path().join("agent.toml");
        std::fs::write(
            &config,
            agent_toml(
                nats.url(),
                net.names.network().as_str(),
                &admin_url,
                dir.path(),
                &trust,
            ),
        )
        .unwrap();
        let log = ActionLog::from_now(&sims).await;
        let first_log = dir.path().join("first.log");
        let mut first = spawn(&config, &first_log, Some(&format!("{point}=return")));
        let command = trust.command("crash", "disconnect", disconnect_all(), 0);
        publish(&net, trust.sign(&command)).await;
        let status = wait_exit(&mut first, &first_log).await;
        assert_eq!(
            status.signal(),
            Some(Signal::SIGKILL as i32),
            "{point}: {status:?}; log:\n{}",
            std::fs::read_to_string(&first_log).unwrap_or_default()
        );
        let before_restart = log.count("DisconnectAllSynchronizers").await;
        let expected_before =
            usize::from(point == crash_points::AFTER_ACTION || point == crash_points::AFTER_DONE);
        assert_eq!(before_restart, expected_before, "{point}");
        assert!(
            acks.of(&command.command_id)
                .iter()
                .all(|seen| seen.ack.status() != pb::AckStatus::Done),
            "{point}: no Done ack before the restart"
        );

        let second_log = dir.path().join("second.log");
        let mut second = spawn(&config, &second_log, None);
        let done = acks.wait(&command.command_id, pb::AckStatus::Done).await;
        assert_eq!(done.message_id, "crash/disconnect/participant1/1/done");
        assert_eq!(
            log.count("DisconnectAllSynchronizers").await,
            1,
            "{point}: the participant's action log {:?}",
            log.calls().await
        );
        wait_for("command settled", DEADLINE, || async {
            ack_pending(&net).await == 0
        })
        .await;
        kill(
            Pid::from_raw(i32::try_from(second.id()).unwrap()),
            Signal::SIGTERM,
        )
        .unwrap();
        assert_eq!(wait_exit(&mut second, &second_log).await.code(), Some(0));

        client.reconnect_all_synchronizers(false).await.unwrap();
        wait_for("participant reconnected", DEADLINE, || async {
            client
                .list_connected_synchronizers()
                .await
                .is_ok_and(|list| !list.is_empty())
        })
        .await;
    }
}
