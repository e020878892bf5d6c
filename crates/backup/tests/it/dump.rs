//! pg_dump backups and pg_restore restores of a plain database.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use sha2::{Digest, Sha256};
use sidecar_backup::{
    BackupJob, Database, ErrorKind, NoConnections, NoObserver, NodeKind, PgClients, RestoreJob,
    RestoreOutcome, ServerVersion, SqlPointSource, process_group_alive,
};
use tokio_util::sync::CancellationToken;

use crate::support::{
    Fixture, Recorder, TableLock, eventually, files_in, node, wait_blocked_on_lock,
};

#[tokio::test]
async fn backup_publishes_dump_and_manifest_and_a_rerun_dumps_nothing() {
    let fixture = Fixture::new(20_000);
    let recorder = Recorder::default();
    let manifest = fixture.backup("set-1", "run-1/backup/p1", &recorder).await;

    let dir = fixture.root().join("set-1");
    assert_eq!(
        files_in(&dir),
        ["p1.dump", "p1.manifest.json"],
        "no work files left"
    );
    let dump = std::fs::read(dir.join("p1.dump")).unwrap();
    assert_eq!(manifest.sha256, hex::encode(Sha256::digest(&dump)));
    assert_eq!(manifest.size_bytes, dump.len() as u64);
    assert!(dump.starts_with(b"PGDMP"), "a custom-format archive");
    let on_disk: sidecar_backup::Manifest =
        serde_json::from_slice(&std::fs::read(dir.join("p1.manifest.json")).unwrap()).unwrap();
    assert_eq!(on_disk, manifest);
    assert_eq!(manifest.node, "p1");
    assert_eq!(manifest.kind, NodeKind::Participant);
    assert_eq!(manifest.organisation, "org1");
    assert_eq!(manifest.backup_set, "set-1");
    assert_eq!(manifest.command_id, "run-1/backup/p1");
    let interval = manifest.sequencer_time_micros.unwrap();
    assert_eq!((interval.before, interval.after), (20_000, 20_000));
    assert_eq!(manifest.ledger_offset.unwrap().after, 20_000);
    let version_num: u32 = fixture.sql("SHOW server_version_num").parse().unwrap();
    assert_eq!(manifest.postgres_version_num, version_num);
    assert!(manifest.started_at_unix_ms <= manifest.finished_at_unix_ms);

    let children = recorder.children();
    assert_eq!(children.len(), 1, "{children:?}");
    assert!(children[0].program.ends_with("pg_dump"));
    assert!(!process_group_alive(children[0].group.pgid));
    let progress = recorder.progress();
    assert_eq!(
        progress.last().map(|p| p.bytes),
        Some(manifest.size_bytes),
        "the last progress report is the final size: {progress:?}"
    );
    assert!(progress.windows(2).all(|w| w[0].bytes <= w[1].bytes));

    let backups = fixture.backups();
    assert_eq!(
        backups.already_done("set-1", "p1").await.unwrap(),
        Some(manifest.clone())
    );
    assert_eq!(backups.already_done("set-2", "p1").await.unwrap(), None);
    let before = std::fs::metadata(dir.join("p1.dump")).unwrap();
    let rerun = Recorder::default();
    let again = fixture.backup("set-1", "run-1/backup/p1", &rerun).await;
    assert_eq!(again, manifest);
    assert!(rerun.children().is_empty(), "the rerun ran no pg_dump");
    let after = std::fs::metadata(dir.join("p1.dump")).unwrap();
    assert_eq!(
        (before.ino(), before.mtime_nsec()),
        (after.ino(), after.mtime_nsec())
    );
    assert_eq!(backups.verify("set-1", &[]).await.unwrap(), vec![manifest]);
}

#[tokio::test]
async fn restore_is_refused_while_a_connection_runs_then_restores_and_marks() {
    let fixture = Fixture::new(1_000);
    let manifest = fixture
        .backup("set-1", "run-1/backup/p1", &NoObserver)
        .await;
    fixture
        .sql("INSERT INTO events VALUES (5000000, 'after the backup'); CREATE TABLE later (x int)");
    let oid = fixture.oid();

    let (replica, connection) = tokio_postgres::connect(
        &format!(
            "{} application_name=p1-replica-b",
            fixture.pg.conninfo(&fixture.db)
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    // The agent's own probe connection: ignored by the check, terminated by the restore.
    let (probe, probe_connection) = tokio_postgres::connect(
        &format!(
            "{} application_name=canton-agent",
            fixture.pg.conninfo(&fixture.db)
        ),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let probe_connection = tokio::spawn(probe_connection);
    let own = ["canton-agent".to_owned()];
    let backups = fixture.backups();
    let database = fixture.database();
    let job = RestoreJob {
        set: "set-1",
        node: &node("p1"),
        command_id: "run-2/restore/p1",
        database: &database,
        own_applications: &own,
    };
    let stopped =
        NoConnections::to_database(&database, "postgres").ignoring_applications(own.to_vec());
    let cancel = CancellationToken::new();
    let refused = backups
        .restore(&job, &stopped, &NoObserver, &cancel)
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::NotStopped, "{refused}");
    assert!(refused.to_string().contains("p1-replica-b"), "{refused}");
    assert!(refused.to_string().contains("node p1"), "{refused}");
    assert_eq!(fixture.oid(), oid, "the database was not touched");
    assert_eq!(fixture.sql("SELECT count(*) FROM events"), "1001");

    // A filter on other application names does not see the replica.
    let others = NoConnections::to_database(&database, "postgres")
        .of_applications(vec!["someone-else".to_owned()]);
    assert_eq!(
        sidecar_backup::StoppedCheck::check(&others).await.unwrap(),
        sidecar_backup::Activity::Stopped
    );

    drop(replica);
    connection.await.unwrap().unwrap();
    eventually(
        "the replica's backend is gone",
        Duration::from_secs(30),
        || {
            let check = sidecar_backup::StoppedCheck::check(&stopped);
            async move { (check.await.unwrap() == sidecar_backup::Activity::Stopped).then_some(()) }
        },
    )
    .await;
    let outcome = backups
        .restore(&job, &stopped, &NoObserver, &cancel)
        .await
        .unwrap();
    assert_eq!(outcome, RestoreOutcome::Restored(Box::new(manifest)));
    assert_eq!(fixture.sql("SELECT count(*) FROM events"), "1000");
    let ended = probe_connection.await.unwrap();
    assert!(
        ended.is_err(),
        "our own connection was terminated: {ended:?}"
    );
    assert!(probe.is_closed());
    assert_eq!(
        fixture.sql("SELECT to_regclass('later') IS NULL"),
        "t",
        "objects made after the backup are gone"
    );
    assert_eq!(
        fixture.sql("SELECT command_id || ' ' || backup_set FROM sidecar_restore.marker"),
        "run-2/restore/p1 set-1"
    );
    assert!(
        backups
            .restore_already_done(&database, "run-2/restore/p1")
            .await
            .unwrap()
    );
    assert!(
        !backups
            .restore_already_done(&database, "run-3/restore/p1")
            .await
            .unwrap()
    );

    let restored_oid = fixture.oid();
    assert_ne!(restored_oid, oid, "the database was recreated");
    let again = backups
        .restore(&job, &stopped, &NoObserver, &cancel)
        .await
        .unwrap();
    assert_eq!(again, RestoreOutcome::AlreadyRestored);
    assert_eq!(
        fixture.oid(),
        restored_oid,
        "a rerun does not restore again"
    );
}

#[tokio::test]
async fn corrupted_dump_is_refused_before_anything_is_touched() {
    let fixture = Fixture::new(1_000);
    fixture
        .backup("set-1", "run-1/backup/p1", &NoObserver)
        .await;
    let path = fixture.root().join("set-1/p1.dump");
    let mut bytes = std::fs::read(&path).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&path, bytes).unwrap();
    fixture.sql("INSERT INTO events VALUES (5000000, 'after the backup')");
    let oid = fixture.oid();

    let backups = fixture.backups();
    let database = fixture.database();
    let stopped = NoConnections::to_database(&database, "postgres");
    let refused = backups
        .restore(
            &RestoreJob {
                set: "set-1",
                node: &node("p1"),
                command_id: "run-2/restore/p1",
                database: &database,
                own_applications: &[],
            },
            &stopped,
            &NoObserver,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Corrupt, "{refused}");
    assert!(refused.to_string().contains("p1.dump"), "{refused}");
    assert!(
        refused.to_string().contains("before touching anything"),
        "{refused}"
    );
    assert_eq!(fixture.oid(), oid);
    assert_eq!(fixture.sql("SELECT count(*) FROM events"), "1001");
    assert_eq!(
        fixture.sql("SELECT to_regnamespace('sidecar_restore') IS NULL"),
        "t"
    );

    assert_eq!(backups.already_done("set-1", "p1").await.unwrap(), None);
    let verify = backups.verify("set-1", &[]).await.unwrap_err();
    assert_eq!(verify.kind(), ErrorKind::Corrupt);
    let missing = backups.verify("set-9", &[]).await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
}

#[tokio::test]
async fn cancel_mid_dump_kills_the_group_and_publishes_nothing() {
    let fixture = Fixture::new(100);
    let lock = TableLock::take(&fixture).await;
    let recorder = Recorder::default();
    let cancel = CancellationToken::new();
    let database = fixture.database();
    let point = fixture.point();
    let backups = fixture.backups();
    let node = node("p1");
    let job = BackupJob {
        set: "set-1",
        node: &node,
        command_id: "run-1/backup/p1",
        database: &database,
        point: &point,
    };
    let backup = backups.backup(&job, &recorder, &cancel);
    let waiter = async {
        wait_blocked_on_lock(&fixture, "run-1/backup/p1").await;
        let dir = fixture.root().join("set-1");
        assert_eq!(
            files_in(&dir),
            [".run-1%2Fbackup%2Fp1.dump.tmp"],
            "only the hidden work file"
        );
        cancel.cancel();
    };
    let (result, ()) = tokio::join!(backup, waiter);
    let error = result.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Cancelled, "{error}");
    let children = recorder.children();
    assert_eq!(children.len(), 1);
    assert!(
        !process_group_alive(children[0].group.pgid),
        "pg_dump's group is gone"
    );
    assert!(files_in(&fixture.root().join("set-1")).is_empty());
    lock.release().await;
}

#[tokio::test]
async fn missing_client_version_names_the_version_and_the_package() {
    let installed = testkit::pg_bin("pg_dump").unwrap();
    let dir = installed.parent().unwrap();
    let server = ServerVersion {
        number: 990_001,
        version: "99.1".to_owned(),
    };
    let error = PgClients::for_server(&server, Some(dir)).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::MissingClient);
    let text = error.to_string();
    assert!(text.contains("PostgreSQL 99"), "{text}");
    assert!(text.contains("postgresql-client-99"), "{text}");
    assert!(text.contains("pg_bin_dir"), "{text}");
    assert!(text.contains(&dir.display().to_string()), "{text}");

    let fixture = Fixture::new(1);
    let found =
        PgClients::for_server(&fixture.database().server_version().await.unwrap(), None).unwrap();
    assert!(found.pg_dump().is_file());
}

#[tokio::test]
async fn snapshot_point_queries_are_checked_and_errors_name_the_key() {
    let fixture = Fixture::new(3);
    let database = fixture.database();
    let one_column = SqlPointSource::new(database.clone(), "SELECT 1::bigint").unwrap();
    let error = sidecar_backup::SnapshotPointSource::read(&one_column)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Config);
    assert!(
        error.to_string().contains("snapshot_point_query"),
        "{error}"
    );
    let wrong_type = SqlPointSource::new(database.clone(), "SELECT 'x', NULL::bigint").unwrap();
    let error = sidecar_backup::SnapshotPointSource::read(&wrong_type)
        .await
        .unwrap_err();
    assert!(error.to_string().contains("bigint"), "{error}");
    let empty = SqlPointSource::new(database.clone(), " ").err().unwrap();
    assert!(
        empty.to_string().contains("snapshot_point_query"),
        "{empty}"
    );
    assert!(
        Database::new("host=localhost").is_err(),
        "a connection string must name the database"
    );
    let named = Database::new("host=localhost dbname=x application_name=mine").unwrap_err();
    assert!(named.to_string().contains("application_name"), "{named}");
}

#[tokio::test]
async fn the_upload_hook_runs_after_the_manifest_and_a_failed_upload_is_retried_by_the_rerun() {
    let fixture = Fixture::new(100);
    let uploads = fixture.dir.path().join("uploads.log");
    let copy = fixture.dir.path().join("uploaded.dump");
    let broken = fixture.dir.path().join("remote-down");
    std::fs::write(&broken, "").unwrap();
    // Stands in for an object-store copy: fails while `broken` exists, else records what it was
    // given and copies the dump.
    let upload = sidecar_backup::CommandTemplate::new(
        "[backup] upload",
        [
            "sh",
            "-c",
            r#"if [ -e "$0" ]; then echo 'remote unreachable' >&2; exit 1; fi; echo "$SIDECAR_BACKUP_NODE $SIDECAR_BACKUP_SET $SIDECAR_COMMAND_ID $3" >> "$1"; cp "$SIDECAR_BACKUP_DUMP" "$2""#,
            &broken.display().to_string(),
            &uploads.display().to_string(),
            &copy.display().to_string(),
            "{manifest}",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
        sidecar_backup::UPLOAD_PLACEHOLDERS,
    )
    .unwrap();
    let mut config = sidecar_backup::BackupConfig::new(fixture.root());
    config.upload = Some(upload);
    let backups = sidecar_backup::Backups::new(config).unwrap();
    let database = fixture.database();
    let point = fixture.point();
    let node = node("p1");
    let job = BackupJob {
        set: "set-1",
        node: &node,
        command_id: "run-1/backup/p1",
        database: &database,
        point: &point,
    };
    let cancel = CancellationToken::new();
    let error = backups
        .backup(&job, &NoObserver, &cancel)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Command, "{error}");
    assert!(error.to_string().contains("remote unreachable"), "{error}");
    assert!(
        error.to_string().contains("upload hook of node p1"),
        "{error}"
    );
    let dir = fixture.root().join("set-1");
    assert_eq!(
        files_in(&dir),
        ["p1.dump", "p1.manifest.json"],
        "the backup itself is published"
    );

    std::fs::remove_file(&broken).unwrap();
    let recorder = Recorder::default();
    let manifest = backups.backup(&job, &recorder, &cancel).await.unwrap();
    assert_eq!(
        recorder.children().len(),
        1,
        "only the upload ran, no second dump"
    );
    let manifest_path = dir.join("p1.manifest.json").display().to_string();
    assert_eq!(
        std::fs::read_to_string(&uploads).unwrap(),
        format!("p1 set-1 run-1/backup/p1 {manifest_path}\n")
    );
    assert_eq!(
        std::fs::read(&copy).unwrap(),
        std::fs::read(dir.join("p1.dump")).unwrap()
    );
    assert_eq!(
        std::fs::read_to_string(dir.join("p1.uploaded"))
            .unwrap()
            .trim(),
        manifest.sha256
    );

    let again = Recorder::default();
    backups.backup(&job, &again, &cancel).await.unwrap();
    assert!(
        again.children().is_empty(),
        "uploaded already: nothing runs"
    );
    assert_eq!(
        std::fs::read_to_string(&uploads).unwrap().lines().count(),
        1
    );
}
