//! Snapshot-style backups: a configured command instead of pg_dump, the same manifest.

use sha2::{Digest, Sha256};
use sidecar_backup::{
    Activity, BackupJob, CommandTemplate, ErrorKind, Method, NoConnections, NoObserver,
    SNAPSHOT_PLACEHOLDERS, SnapshotSpec, StoppedCheck,
};
use tokio_util::sync::CancellationToken;

use crate::support::{Fixture, Recorder, files_in, node};

fn argv(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

#[tokio::test]
async fn snapshot_method_runs_its_command_and_writes_the_manifest() {
    let fixture = Fixture::new(10);
    let runs = fixture.dir.path().join("runs");
    // Stands in for a volume snapshot tool: records that it ran, writes a descriptor of the
    // snapshot to the artefact path and prints the snapshot's id.
    let command = CommandTemplate::new(
        "[backup] snapshot_command",
        argv(&[
            "sh",
            "-c",
            r#"echo ran >> "$2"; printf 'volume of %s for %s\n' "$0" "$SIDECAR_BACKUP_SET" > "$1"; echo "id=snap-$0""#,
            "{node}",
            "{artefact}",
            &runs.display().to_string(),
        ]),
        SNAPSHOT_PLACEHOLDERS,
    )
    .unwrap();
    let spec = SnapshotSpec {
        command,
        components: vec![],
    };
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
    let backups = fixture.backups();
    let writers = NoConnections::to_database(&database, "postgres");
    let recorder = Recorder::default();
    let cancel = CancellationToken::new();
    let manifest = backups
        .snapshot(&job, &spec, &writers, &recorder, &cancel)
        .await
        .unwrap();
    assert_eq!(recorder.children().len(), 1);
    assert_eq!(manifest.method, Method::Snapshot);
    assert_eq!(manifest.snapshot_id.as_deref(), Some("snap-p1"));
    assert_eq!(manifest.artefact.as_deref(), Some("p1.snapshot"));
    let dir = fixture.root().join("set-1");
    let artefact = std::fs::read(dir.join("p1.snapshot")).unwrap();
    assert_eq!(artefact, b"volume of p1 for set-1\n");
    assert_eq!(manifest.sha256, hex::encode(Sha256::digest(&artefact)));
    assert_eq!(manifest.sequencer_time_micros.unwrap().after, 10);
    assert_eq!(files_in(&dir), ["p1.manifest.json", "p1.snapshot"]);

    let again = backups
        .snapshot(&job, &spec, &writers, &NoObserver, &cancel)
        .await
        .unwrap();
    assert_eq!(again, manifest);
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap(),
        "ran\n",
        "the rerun ran no command"
    );

    // A command that keeps the snapshot elsewhere reports its checksum instead.
    let reported = SnapshotSpec {
        command: CommandTemplate::new(
            "[backup] snapshot_command",
            argv(&[
                "sh",
                "-c",
                &format!("echo sha256={}; echo size=42", "ab".repeat(32)),
            ]),
            SNAPSHOT_PLACEHOLDERS,
        )
        .unwrap(),
        components: vec![],
    };
    let job = BackupJob {
        set: "set-2",
        ..job
    };
    let manifest = backups
        .snapshot(&job, &reported, &writers, &NoObserver, &cancel)
        .await
        .unwrap();
    assert_eq!(manifest.artefact, None);
    assert_eq!(manifest.sha256, "ab".repeat(32));
    assert_eq!(manifest.size_bytes, 42);

    let silent = SnapshotSpec {
        command: CommandTemplate::new("[backup] snapshot_command", argv(&["true"]), &[]).unwrap(),
        components: vec![],
    };
    let job = BackupJob {
        set: "set-3",
        ..job
    };
    let error = backups
        .snapshot(&job, &silent, &writers, &NoObserver, &cancel)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Command);
    assert!(error.to_string().contains("sha256="), "{error}");
    assert!(!fixture.root().join("set-3/p1.manifest.json").exists());
}

#[tokio::test]
async fn snapshot_of_several_components_is_refused_while_a_writer_runs() {
    let fixture = Fixture::new(10);
    let marker = fixture.dir.path().join("ran");
    let spec = SnapshotSpec {
        command: CommandTemplate::new(
            "[backup] snapshot_command",
            argv(&[
                "sh",
                "-c",
                r#"echo volume > "$1"; touch "$0""#,
                &marker.display().to_string(),
                "{artefact}",
            ]),
            SNAPSHOT_PLACEHOLDERS,
        )
        .unwrap(),
        components: vec!["p1".to_owned(), "app1".to_owned()],
    };
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
    let (writer, connection) = tokio_postgres::connect(
        &format!("{} application_name=app1", fixture.pg.conninfo(&fixture.db)),
        tokio_postgres::NoTls,
    )
    .await
    .unwrap();
    let connection = tokio::spawn(connection);
    let writers = NoConnections::to_database(&database, "postgres");
    let backups = fixture.backups();
    let cancel = CancellationToken::new();
    let error = backups
        .snapshot(&job, &spec, &writers, &NoObserver, &cancel)
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotStopped, "{error}");
    assert!(error.to_string().contains("app1"), "{error}");
    assert!(error.to_string().contains("p1, app1"), "{error}");
    assert!(!marker.exists(), "the command did not run");
    assert!(files_in(&fixture.root().join("set-1")).is_empty());

    drop(writer);
    connection.await.unwrap().unwrap();
    crate::support::eventually(
        "the writer is gone",
        std::time::Duration::from_secs(30),
        || {
            let check = writers.check();
            async move { (check.await.unwrap() == Activity::Stopped).then_some(()) }
        },
    )
    .await;
    let manifest = backups
        .snapshot(&job, &spec, &writers, &NoObserver, &cancel)
        .await
        .unwrap();
    assert!(marker.exists());
    assert_eq!(manifest.components, ["p1", "app1"]);
}
