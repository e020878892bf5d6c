//! A canton-sim participant with traffic: backed up, stopped through its lifecycle hooks,
//! restored (refused while it runs), started again, and caught up.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use canton_sim::network::LaunchOptions;
use canton_sim::{NetworkSpec, PostgresTarget, SimNetwork};
use sidecar_backup::{
    AllStopped, BackupConfig, BackupJob, Backups, Database, ErrorKind, Lifecycle, NoConnections,
    NoObserver, NodeKind, NodeRef, RestoreJob, RestoreOutcome, SqlPointSource, StoppedCheck,
    Transition,
};
use testkit::Postgres;
use tokio_util::sync::CancellationToken;

use crate::lifecycle::pidfile_hooks;
use crate::support::eventually;

const NETWORK: &str = r#"
reconciliation_interval_ms = 1000

[[node]]
id = "sequencer1"
kind = "sequencer"

[[node]]
id = "participant1"
kind = "participant"
workload = { rate_per_second = 20.0 }

[[node]]
id = "participant2"
kind = "participant"
workload = { rate_per_second = 20.0 }

[[node]]
id = "app1"
kind = "app"
participant = "participant1"
"#;

/// Kills the process in the pid file when the test ends (the start hook's node is nobody's child).
struct KillFromPidfile(PathBuf);

impl Drop for KillFromPidfile {
    fn drop(&mut self) {
        if let Some(pid) = std::fs::read_to_string(&self.0)
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

fn number(pg: &Postgres, db: &str, sql: &str) -> i64 {
    pg.psql(db, sql).unwrap().parse().unwrap_or(-1)
}

fn quote(path: &Path) -> String {
    format!("'{}'", path.display())
}

/// The app's dump, restored into a database that did not exist, holds a processed offset inside
/// its manifest's interval.
async fn app_backup_restores_into_a_fresh_database(
    pg: &Postgres,
    net: &SimNetwork,
    backups: &Backups,
) {
    let app = net.node("app1").unwrap();
    let database = Database::new(app.database()).unwrap();
    let processed = || {
        number(
            pg,
            app.database_name(),
            "SELECT processed_offset FROM app_state",
        )
    };
    eventually(
        "app1 processed some offsets",
        Duration::from_secs(60),
        || {
            let moving = processed() > 0;
            async move { moving.then_some(()) }
        },
    )
    .await;
    let point = SqlPointSource::for_kind(database.clone(), NodeKind::App, None).unwrap();
    let node = NodeRef {
        id: "app1".to_owned(),
        kind: NodeKind::App,
        organisation: "org1".to_owned(),
        participant: Some("participant1".to_owned()),
        replica: None,
    };
    let cancel = CancellationToken::new();
    let manifest = backups
        .backup(
            &BackupJob {
                set: "set-1",
                node: &node,
                command_id: "run-1/backup/app1",
                database: &database,
                point: &point,
            },
            &NoObserver,
            &cancel,
        )
        .await
        .unwrap();
    assert_eq!(
        manifest.sequencer_time_micros, None,
        "an app has no sequencer time"
    );
    assert_eq!(manifest.participant.as_deref(), Some("participant1"));
    let offsets = manifest.ledger_offset.unwrap();

    let copy_name = format!("{}_copy", app.database_name());
    let copy = database.with_name(&copy_name);
    let outcome = backups
        .restore(
            &RestoreJob {
                set: "set-1",
                node: &node,
                command_id: "run-2/restore/app1",
                database: &copy,
                own_applications: &[],
            },
            &NoConnections::to_database(&copy, "postgres"),
            &NoObserver,
            &cancel,
        )
        .await
        .unwrap();
    assert!(
        matches!(outcome, RestoreOutcome::Restored(_)),
        "{outcome:?}"
    );
    let restored = number(pg, &copy_name, "SELECT processed_offset FROM app_state");
    assert!(
        offsets.contains(restored),
        "{offsets:?} brackets the restored offset {restored}"
    );
}

/// Starts [`NETWORK`]; ports are picked free and then bound by the node processes, so a parallel
/// test may take one first: that attempt is abandoned and the network started under a new name.
fn start_network(pg: &Postgres, binary: &Path) -> SimNetwork {
    const ATTEMPTS: usize = 3;
    for attempt in 1..=ATTEMPTS {
        let mut spec = NetworkSpec::from_toml(NETWORK).unwrap();
        spec.name = testkit::unique_id("bk");
        let started = SimNetwork::start(
            &spec,
            LaunchOptions {
                postgres: PostgresTarget::of(pg),
                binary,
                work_dir: None,
            },
        );
        match started {
            Ok(net) => return net,
            Err(error)
                if attempt < ATTEMPTS
                    && format!("{error:?}").contains("Address already in use") =>
            {
                eprintln!("attempt {attempt} lost a port race: {error:#}");
            }
            Err(error) => panic!("starting the sim network: {error:#}"),
        }
    }
    unreachable!("the last attempt returns or panics")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_backup_of_a_participant_restores_and_the_node_catches_up() {
    let pg = Postgres::shared_or_start().unwrap();
    let binary = testkit::binary_path("canton-sim").unwrap();
    let mut net = start_network(&pg, &binary);
    let p1 = net.node("participant1").unwrap();
    let db = p1.database_name().to_owned();
    let ledger_end = || number(&pg, &db, "SELECT ledger_end FROM participant_ledger");
    eventually("participant1 has traffic", Duration::from_secs(60), || {
        let ready = ledger_end() >= 10;
        async move { ready.then_some(()) }
    })
    .await;

    let database = Database::new(p1.database()).unwrap();
    let point = SqlPointSource::for_kind(database.clone(), NodeKind::Participant, None).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let backups = Backups::new(BackupConfig::new(dir.path().join("backups"))).unwrap();
    let node = NodeRef {
        id: "participant1".to_owned(),
        kind: NodeKind::Participant,
        organisation: "org1".to_owned(),
        participant: None,
        replica: None,
    };
    let cancel = CancellationToken::new();
    let started = Instant::now();
    let manifest = backups
        .backup(
            &BackupJob {
                set: "set-1",
                node: &node,
                command_id: "run-1/backup/participant1",
                database: &database,
                point: &point,
            },
            &NoObserver,
            &cancel,
        )
        .await
        .unwrap();
    eprintln!(
        "backup of {} bytes took {:?}",
        manifest.size_bytes,
        started.elapsed()
    );
    let sequencer_time = manifest.sequencer_time_micros.unwrap();
    let offsets = manifest.ledger_offset.unwrap();
    app_backup_restores_into_a_fresh_database(&pg, &net, &backups).await;
    eventually(
        "more traffic after the backup",
        Duration::from_secs(60),
        || {
            let more = ledger_end() >= offsets.after + 10;
            async move { more.then_some(()) }
        },
    )
    .await;

    let pidfile = dir.path().join("participant1.pid");
    std::fs::write(&pidfile, p1.pid().unwrap().to_string()).unwrap();
    let _cleanup = KillFromPidfile(pidfile.clone());
    let config = net.work_dir().join("participant1.toml");
    let daemon = format!(
        "exec {} --kind participant --config {}",
        quote(&binary),
        quote(&config)
    );
    let lifecycle = Lifecycle::new(pidfile_hooks(&pidfile, &daemon), "participant1").unwrap();
    let stopped = AllStopped(vec![
        Box::new(lifecycle.clone()),
        Box::new(NoConnections::to_database(&database, "postgres")),
    ]);
    let restore = RestoreJob {
        set: "set-1",
        node: &node,
        command_id: "run-2/restore/participant1",
        database: &database,
        own_applications: &[],
    };
    let oid = || {
        pg.psql(
            "postgres",
            &format!("SELECT oid FROM pg_database WHERE datname = '{db}'"),
        )
        .unwrap()
    };
    let oid_before = oid();
    let refused = backups
        .restore(&restore, &stopped, &NoObserver, &cancel)
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::NotStopped, "{refused}");
    assert!(
        refused.to_string().contains("participant1 is running"),
        "{refused}"
    );
    assert_eq!(
        oid(),
        oid_before,
        "the running node's database was not touched"
    );

    let stop = lifecycle
        .stop(
            "run-2/stop/participant1",
            Duration::from_secs(10),
            &NoObserver,
            &cancel,
        )
        .await
        .unwrap();
    assert!(matches!(stop, Transition::Done { .. }), "{stop:?}");
    eventually(
        "participant1's connections are gone",
        Duration::from_secs(30),
        || {
            let check = stopped.check();
            async move { (check.await.unwrap() == sidecar_backup::Activity::Stopped).then_some(()) }
        },
    )
    .await;
    let before_restore = ledger_end();
    let outcome = backups
        .restore(&restore, &stopped, &NoObserver, &cancel)
        .await
        .unwrap();
    assert_eq!(
        outcome,
        RestoreOutcome::Restored(Box::new(manifest.clone()))
    );
    let restored_cursor = number(&pg, &db, "SELECT max(last_ts_micros) FROM member_cursor");
    assert!(
        sequencer_time.contains(restored_cursor),
        "the manifest's interval {sequencer_time:?} brackets the restored last processed timestamp {restored_cursor}"
    );
    let restored_end = ledger_end();
    assert!(
        offsets.contains(restored_end),
        "{offsets:?} brackets {restored_end}"
    );
    assert!(
        restored_end < before_restore,
        "the restore went back: {restored_end} < {before_restore}"
    );

    let start = lifecycle
        .start("run-3/start/participant1", &NoObserver, &cancel)
        .await
        .unwrap();
    assert!(matches!(start, Transition::Done { .. }), "{start:?}");
    eventually(
        "participant1 reconnected and replayed past its pre-restore ledger end",
        Duration::from_secs(60),
        || {
            let caught_up = ledger_end() > before_restore;
            async move { caught_up.then_some(()) }
        },
    )
    .await;
    assert!(
        backups
            .restore_already_done(&database, "run-2/restore/participant1")
            .await
            .unwrap()
    );
    net.node_mut("participant1").unwrap().kill();
}
