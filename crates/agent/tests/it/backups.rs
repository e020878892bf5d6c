//! Backup, verify, stop, restore and start as signed commands against a canton-sim participant:
//! the acks carry the manifest, a restore is refused while the node runs, and the restored node
//! starts through its lifecycle hook and reconnects.

use std::path::Path;
use std::time::Duration;

use canton_agent::config::{BackupMethod, BackupSettings};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use proto_sidecar as pb;
use proto_sidecar::action::Kind;
use sha2::{Digest, Sha256};
use sidecar_backup::{
    CommandTemplate, LifecycleConfig, START_PLACEHOLDERS, STATUS_PLACEHOLDERS, STOP_PLACEHOLDERS,
};
use testkit::{NatsServer, Postgres, binary_path};

use crate::command_support::*;
use crate::support::{config, network, wait_for};

/// Kills the process in the pid file when the test ends (the start hook's node is nobody's child).
struct KillFromPidfile<'a>(&'a Path);

impl Drop for KillFromPidfile<'_> {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(self.0)
            .ok()
            .and_then(|text| text.trim().parse::<i32>().ok())
        {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn hook(key: &str, script: &str, args: &[&Path], placeholders: &[&str]) -> CommandTemplate {
    let mut argv = vec!["sh".to_owned(), "-c".to_owned(), script.to_owned()];
    argv.extend(args.iter().map(|a| a.display().to_string()));
    CommandTemplate::new(key, argv, placeholders).unwrap()
}

/// Hooks managing the participant's process through a pid file, as a unit manager would.
fn lifecycle(pidfile: &Path, binary: &Path, node_config: &Path) -> LifecycleConfig {
    LifecycleConfig {
        start: hook(
            "[lifecycle] start",
            r#""$1" --kind participant --config "$2" >/dev/null 2>&1 & echo $! > "$0""#,
            &[pidfile, binary, node_config],
            START_PLACEHOLDERS,
        ),
        stop: hook(
            "[lifecycle] stop",
            r#"kill -TERM "$(cat "$0")""#,
            &[pidfile],
            STOP_PLACEHOLDERS,
        ),
        // Zombies count as stopped: nothing reaps orphans on some hosts.
        status: hook(
            "[lifecycle] status",
            r#"p=$(cat "$0" 2>/dev/null) && [ -r /proc/$p/stat ] && ! grep -q ') [ZX] ' /proc/$p/stat && echo running || echo stopped"#,
            &[pidfile],
            STATUS_PLACEHOLDERS,
        ),
        wait: Duration::from_secs(30),
        poll: Duration::from_millis(50),
    }
}

fn approved(trust: &Trust, mut command: pb::Command) -> pb::Command {
    let approval = pb::OperatorApproval {
        network: command.network.clone(),
        organisation: command.organisation.clone(),
        run: command.run.clone(),
        step: command.step.clone(),
        nodes: vec![NODE.to_owned()],
        operator: "operator".to_owned(),
        approved_at_unix_ms: now_ms() - 100,
        expires_at_unix_ms: now_ms() + 600_000,
        comment: "restore drill".to_owned(),
    };
    command.approval = Some(sidecar_trust::sign_approval(&trust.operator, &approval));
    command
}

fn restore(trust: &Trust, run: &str) -> pb::Command {
    approved(
        trust,
        trust.command(
            run,
            "restore",
            Kind::Restore(pb::Restore {
                backup_set: "set-1".into(),
                ..Default::default()
            }),
            0,
        ),
    )
}

fn result(ack: &SeenAck) -> serde_json::Value {
    serde_json::from_slice(&ack.ack.result).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_backup_verify_stop_restore_and_start_as_signed_commands() {
    show_logs();
    let nats = NatsServer::shared_or_start().unwrap();
    let postgres = Postgres::shared_or_start().unwrap();
    let sims = start_sim(&postgres).await;
    let net = network(nats.url()).await;
    let trust = Trust::new(net.names.network().as_str());
    let acks = Acks::collect(&net, &trust).await;
    let dir = tempfile::tempdir().unwrap();
    let participant = sims.node(NODE).unwrap();
    let pidfile = dir.path().join("participant1.pid");
    std::fs::write(&pidfile, participant.pid().unwrap().to_string()).unwrap();
    let _cleanup = KillFromPidfile(&pidfile);
    let binary = binary_path("canton-sim").unwrap();
    let node_config = sims.work_dir().join(format!("{NODE}.toml"));
    let root = dir.path().join("backups");

    let mut agent_config = config(nats.url(), &net, NODE);
    agent_config.canton = Some(canton_config(&sims));
    agent_config.database_url = Some(participant.database().into());
    agent_config.backup = Some(BackupSettings {
        root: root.clone(),
        database_url: participant.database().into(),
        pg_bin_dir: None,
        snapshot_point_query: None,
        upload: None,
        progress_interval: Duration::from_millis(100),
        maintenance_database: "postgres".to_owned(),
        participant: None,
        method: BackupMethod::PgDump,
    });
    agent_config.lifecycle = Some(lifecycle(&pidfile, &binary, &node_config));
    let trust_config = trust.write(dir.path());
    let agent = RunningAgent::start(
        agent_config,
        &trust_config,
        commands_config(&dir.path().join("journal"), Duration::from_secs(30)),
        Vec::new(),
    );

    let backup = trust.command(
        "run1",
        "members",
        Kind::Backup(pb::Backup {
            backup_set: "set-1".into(),
            ..Default::default()
        }),
        0,
    );
    publish(&net, trust.sign(&backup)).await;
    let done = acks.wait(&backup.command_id, pb::AckStatus::Done).await;
    let manifest: sidecar_backup::Manifest = serde_json::from_slice(&done.ack.result).unwrap();
    assert_eq!(manifest.node, NODE);
    assert_eq!(manifest.command_id, backup.command_id);
    assert_eq!(manifest.organisation, ORG);
    let dump = std::fs::read(root.join("set-1/participant1.dump")).unwrap();
    assert_eq!(manifest.sha256, hex::encode(Sha256::digest(&dump)));
    assert!(manifest.sequencer_time_micros.is_some(), "{manifest:?}");
    assert!(manifest.ledger_offset.is_some(), "{manifest:?}");

    let verify = trust.command(
        "run1",
        "verify",
        Kind::Verify(pb::Verify {
            backup_set: "set-1".into(),
        }),
        0,
    );
    publish(&net, trust.sign(&verify)).await;
    let verified = acks.wait(&verify.command_id, pb::AckStatus::Done).await;
    assert_eq!(result(&verified)["manifests"][0]["sha256"], manifest.sha256);

    let early = restore(&trust, "run2");
    publish(&net, trust.sign(&early)).await;
    let refused = acks.wait(&early.command_id, pb::AckStatus::Failed).await;
    assert!(
        refused.ack.detail.contains("refused") && refused.ack.detail.contains("running"),
        "{}",
        refused.ack.detail
    );

    let stop = trust.command("run3", "stop", Kind::Stop(pb::Stop { grace_seconds: 5 }), 0);
    publish(&net, trust.sign(&stop)).await;
    let stopped = acks.wait(&stop.command_id, pb::AckStatus::Done).await;
    assert_eq!(result(&stopped)["state"], "stopped");
    assert_eq!(result(&stopped)["ran_hook"], true);

    let restore = restore(&trust, "run3");
    publish(&net, trust.sign(&restore)).await;
    let restored = acks.wait(&restore.command_id, pb::AckStatus::Done).await;
    assert_eq!(result(&restored)["restored_by"], restore.command_id);
    let marker = postgres
        .psql(
            participant.database_name(),
            "SELECT command_id FROM sidecar_restore.marker",
        )
        .unwrap();
    assert_eq!(marker, restore.command_id);

    let start = trust.command("run3", "start", Kind::Start(pb::Start {}), 0);
    publish(&net, trust.sign(&start)).await;
    let started = acks.wait(&start.command_id, pb::AckStatus::Done).await;
    assert_eq!(result(&started)["state"], "running");
    let client = participant_client(&sims);
    wait_for("the restored participant reconnects", DEADLINE, || async {
        client
            .list_connected_synchronizers()
            .await
            .is_ok_and(|list| !list.is_empty())
    })
    .await;
    agent.stop().await;
}

/// The process group of the `pg_dump` writing below `root` (its command line names the file).
fn pg_dump_group_below(root: &Path) -> Option<u32> {
    let root = root.display().to_string();
    std::fs::read_dir("/proc")
        .ok()?
        .flatten()
        .find_map(|entry| {
            let pid = entry.file_name().to_str()?.parse::<u32>().ok()?;
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if !cmdline.contains("pg_dump") || !cmdline.contains(&root) {
                return None;
            }
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Field 5 (process group) is the third after the `(comm)` field.
            stat[stat.rfind(')')? + 1..]
                .split_whitespace()
                .nth(2)?
                .parse()
                .ok()
        })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_an_agent_killed_mid_dump_leaves_no_dump_and_its_restart_dumps_once() {
    use std::os::unix::process::ExitStatusExt;

    let nats = NatsServer::shared_or_start().unwrap();
    let postgres = Postgres::shared_or_start().unwrap();
    let sims = start_sim(&postgres).await;
    let participant = sims.node(NODE).unwrap();
    let net = network(nats.url()).await;
    let trust = Trust::new(net.names.network().as_str());
    let acks = Acks::collect(&net, &trust).await;
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("backups");
    let config = dir.path().join("agent.toml");
    let toml = crate::crashes::agent_toml(
        nats.url(),
        net.names.network().as_str(),
        &canton_config(&sims).admin_url,
        dir.path(),
        &trust,
    );
    std::fs::write(
        &config,
        format!(
            "{toml}[database]\nurl = {:?}\n[backup]\nroot = {:?}\n",
            participant.database(),
            root.display().to_string()
        ),
    )
    .unwrap();
    // pg_dump locks every table first; a table locked elsewhere holds it mid-dump, with its
    // work file created, while the node (which never reads that table) keeps running.
    let db = participant.database_name();
    postgres.psql(db, "CREATE TABLE blocker (x int)").unwrap();
    let (locker, connection) =
        tokio_postgres::connect(participant.database(), tokio_postgres::NoTls)
            .await
            .unwrap();
    tokio::spawn(connection);
    locker
        .batch_execute("BEGIN; LOCK TABLE blocker IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();

    let first_log = dir.path().join("first.log");
    let mut first = crate::crashes::spawn(&config, &first_log, None);
    let backup = trust.command(
        "crash",
        "members",
        Kind::Backup(pb::Backup {
            backup_set: "set-1".into(),
            ..Default::default()
        }),
        0,
    );
    publish(&net, trust.sign(&backup)).await;
    let waiting = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{}' AND wait_event_type = 'Lock'",
        backup.command_id
    );
    wait_for("pg_dump waits for the locked table", DEADLINE, || async {
        postgres.psql("postgres", &waiting).unwrap() == "1"
    })
    .await;
    let orphan = pg_dump_group_below(&root).expect("the pg_dump is running");

    kill(
        Pid::from_raw(i32::try_from(first.id()).unwrap()),
        Signal::SIGKILL,
    )
    .unwrap();
    let status = crate::crashes::wait_exit(&mut first, &first_log).await;
    assert_eq!(status.signal(), Some(Signal::SIGKILL as i32));
    let set = root.join("set-1");
    let names = || {
        let mut names: Vec<String> = std::fs::read_dir(&set)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    };
    assert!(
        names().iter().all(|name| name.starts_with('.')),
        "only hidden work files: {:?}",
        names()
    );
    assert!(
        sidecar_backup::process_group_alive(orphan),
        "pg_dump outlived the agent"
    );

    let second_log = dir.path().join("second.log");
    let mut second = crate::crashes::spawn(&config, &second_log, None);
    wait_for(
        "the restarted agent killed the orphaned pg_dump",
        DEADLINE,
        || async { !sidecar_backup::process_group_alive(orphan) },
    )
    .await;
    locker.batch_execute("COMMIT").await.unwrap();
    let done = acks.wait(&backup.command_id, pb::AckStatus::Done).await;
    let manifest: sidecar_backup::Manifest = serde_json::from_slice(&done.ack.result).unwrap();
    assert_eq!(manifest.command_id, backup.command_id);
    assert_eq!(names(), ["participant1.dump", "participant1.manifest.json"]);
    let dump = std::fs::read(set.join("participant1.dump")).unwrap();
    assert_eq!(manifest.sha256, hex::encode(Sha256::digest(&dump)));
    kill(
        Pid::from_raw(i32::try_from(second.id()).unwrap()),
        Signal::SIGTERM,
    )
    .unwrap();
    crate::crashes::wait_exit(&mut second, &second_log).await;
}
