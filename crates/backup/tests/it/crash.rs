//! A backup process killed mid-dump: no visible partial file, the orphaned pg_dump is found and
//! killed through the journalled group, and the rerun publishes exactly one dump.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use sidecar_backup::{GroupKill, ProcessGroup, kill_process_group, process_group_alive};

use crate::support::{
    EVENTS_POINT, Fixture, TableLock, connections_named, files_in, wait_blocked_on_lock,
};

const COMMAND_ID: &str = "run-1/backup/p1";

fn backup_process(fixture: &Fixture) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_sidecar-backup"));
    command
        .arg("backup")
        .arg("--root")
        .arg(fixture.root())
        .args(["--set", "set-1", "--node", "p1", "--kind", "participant"])
        .args(["--command-id", COMMAND_ID])
        .args(["--database", &fixture.pg.conninfo(&fixture.db)])
        .args(["--snapshot-point-query", EVENTS_POINT])
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    command
}

/// JSON events the process printed, until one with `event` = `until`.
fn read_until(
    lines: &mut impl Iterator<Item = std::io::Result<String>>,
    until: &str,
) -> Vec<serde_json::Value> {
    let mut events = Vec::new();
    for line in lines {
        let event: serde_json::Value = serde_json::from_str(&line.unwrap()).unwrap();
        let done = event["event"] == until;
        events.push(event);
        if done {
            return events;
        }
    }
    panic!("the process ended before printing {until}: {events:?}");
}

#[tokio::test]
async fn killed_backup_leaves_no_visible_dump_nor_orphan_and_the_rerun_dumps_once() {
    let fixture = Fixture::new(2_000);
    let lock = TableLock::take(&fixture).await;
    let mut first = backup_process(&fixture).spawn().unwrap();
    let mut lines = BufReader::new(first.stdout.take().unwrap()).lines();
    let started = read_until(&mut lines, "child_started");
    let journalled: ProcessGroup = serde_json::from_value(started.last().unwrap().clone()).unwrap();
    wait_blocked_on_lock(&fixture, COMMAND_ID).await;

    first.kill().unwrap();
    first.wait().unwrap();
    let dir = fixture.root().join("set-1");
    assert_eq!(
        files_in(&dir),
        [".run-1%2Fbackup%2Fp1.dump.tmp"],
        "only the hidden work file is there"
    );
    assert!(
        process_group_alive(journalled.pgid),
        "pg_dump outlived its parent, as it would outlive a crashed agent"
    );

    assert_eq!(
        kill_process_group(journalled).await.unwrap(),
        GroupKill::Killed
    );
    assert!(!process_group_alive(journalled.pgid));
    assert_eq!(
        kill_process_group(journalled).await.unwrap(),
        GroupKill::NotRunning
    );
    // A backend waiting for a lock notices its client is gone only once it gets the lock.
    lock.release().await;
    crate::support::eventually(
        "the orphan's connection is gone",
        std::time::Duration::from_secs(30),
        || {
            let gone = connections_named(&fixture, COMMAND_ID) == "0";
            async move { gone.then_some(()) }
        },
    )
    .await;

    let rerun = backup_process(&fixture).output().unwrap();
    assert!(rerun.status.success(), "{rerun:?}");
    let events: Vec<serde_json::Value> = String::from_utf8(rerun.stdout)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(
        events
            .iter()
            .filter(|e| e["event"] == "child_started")
            .count(),
        1
    );
    assert_eq!(files_in(&dir), ["p1.dump", "p1.manifest.json"]);
    let manifest = &events.last().unwrap()["manifest"];
    assert_eq!(manifest["command_id"], COMMAND_ID);
    assert_eq!(manifest["sequencer_time_micros"]["after"], 2_000);

    let third = backup_process(&fixture).output().unwrap();
    assert!(third.status.success());
    let text = String::from_utf8(third.stdout).unwrap();
    assert!(
        !text.contains("child_started"),
        "already done: no pg_dump ran: {text}"
    );
    assert_eq!(files_in(&dir), ["p1.dump", "p1.manifest.json"]);
}
