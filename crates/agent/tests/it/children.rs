//! Leftover child process groups of an interrupted command are killed at start-up, and only
//! when they are provably the ones journalled (same leader start time).

use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::process::{Command, Stdio};

use canton_agent::commands::{
    FileJournal, Journal, JournalState, Record, kernel_boot_id, process_start, reap_leftovers,
};

fn sleeper() -> std::process::Child {
    Command::new("sleep")
        .arg("300")
        .process_group(0)
        .stdin(Stdio::null())
        .spawn()
        .unwrap()
}

fn started(id: &str) -> Record {
    Record::Started {
        command_id: id.into(),
        attempt: 1,
        body_hash: [1; 32],
        boot_id: "earlier-boot".into(),
        action: "backup".into(),
        expires_at_unix_ms: i64::MAX / 2,
        at_unix_ms: 1,
    }
}

#[tokio::test]
async fn a_journalled_group_of_an_interrupted_command_is_killed_and_a_reused_id_is_not() {
    let dir = tempfile::tempdir().unwrap();
    let mut ours = sleeper();
    let mut stranger = sleeper();
    let ours_pid = i32::try_from(ours.id()).unwrap();
    let stranger_pid = i32::try_from(stranger.id()).unwrap();
    let ours_start = process_start(ours_pid);
    assert!(ours_start.is_some(), "/proc/<pid>/stat is readable");
    {
        let mut journal = FileJournal::open(dir.path()).unwrap().journal;
        for record in [
            started("r/backup/p1"),
            Record::Child {
                command_id: "r/backup/p1".into(),
                attempt: 1,
                pgid: ours_pid,
                leader_start: ours_start,
                kernel_boot: kernel_boot_id(),
            },
            started("r/other/p1"),
            // The id now belongs to a process that started at another time: not ours.
            Record::Child {
                command_id: "r/other/p1".into(),
                attempt: 1,
                pgid: stranger_pid,
                leader_start: process_start(stranger_pid).map(|t| t + 1),
                kernel_boot: kernel_boot_id(),
            },
        ] {
            journal.append(&record).unwrap();
        }
    }
    let opened = FileJournal::open(dir.path()).unwrap();
    let state = JournalState::replay(&opened.records);

    assert_eq!(reap_leftovers(&state), 1);
    let status = tokio::task::spawn_blocking(move || ours.wait().unwrap())
        .await
        .unwrap();
    assert_eq!(status.signal(), Some(9));
    // `reap_leftovers` counted one kill; the other group was never signalled.
    assert!(stranger.try_wait().unwrap().is_none());
    stranger.kill().unwrap();
    stranger.wait().unwrap();
}
