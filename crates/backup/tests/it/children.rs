//! Child processes: held until recorded, errors that quote stderr, missing programs.

use futures::future::BoxFuture;
use sidecar_backup::{ChildCommand, ChildInfo, ErrorKind, NoObserver, Observer, run_child};
use tokio_util::sync::CancellationToken;

/// An observer whose journal refuses to record anything.
struct BrokenJournal;

impl Observer for BrokenJournal {
    fn child_started<'a>(&'a self, _child: &'a ChildInfo) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async { Err("journal volume is full".to_owned()) })
    }
}

#[tokio::test]
async fn a_child_does_no_work_before_its_group_is_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("worked");
    let command = ChildCommand::new("marker hook", "touch").arg(&marker);
    let error = run_child(&command, &BrokenJournal, &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Observer, "{error}");
    assert!(
        error.to_string().contains("journal volume is full"),
        "{error}"
    );
    assert!(!marker.exists(), "the child never got past the gate");

    let output = run_child(&command, &NoObserver, &CancellationToken::new())
        .await
        .unwrap()
        .success(&command)
        .unwrap();
    assert!(output.status.success());
    assert!(marker.exists());
}

#[tokio::test]
async fn failures_quote_the_command_and_its_stderr_and_missing_programs_are_named() {
    let command = ChildCommand::new("upload hook of node p1", "sh").args([
        "-c",
        "echo progress; echo 'bucket not writable' >&2; exit 4",
    ]);
    let output = run_child(&command, &NoObserver, &CancellationToken::new())
        .await
        .unwrap();
    assert_eq!(output.status.code(), Some(4));
    assert_eq!(output.stdout, "progress\n");
    let error = output.success(&command).unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Command);
    let text = error.to_string();
    assert!(text.contains("upload hook of node p1"), "{text}");
    assert!(text.contains("bucket not writable"), "{text}");
    assert!(text.contains("exit status: 4"), "{text}");

    let missing = ChildCommand::new("stop hook of node p1", "no-such-program-here");
    let error = run_child(&missing, &NoObserver, &CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Command);
    assert!(
        error.to_string().contains("no-such-program-here not found"),
        "{error}"
    );
}
