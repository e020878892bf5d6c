//! Lifecycle hooks: stop/start through commands, confirmed by the status command.

use std::path::Path;
use std::time::Duration;

use sidecar_backup::{
    CommandTemplate, ErrorKind, Lifecycle, LifecycleConfig, NoObserver, NodeStatus,
    START_PLACEHOLDERS, STATUS_PLACEHOLDERS, STOP_PLACEHOLDERS, Transition,
};
use tokio_util::sync::CancellationToken;

fn template(key: &str, items: &[&str], placeholders: &[&str]) -> CommandTemplate {
    CommandTemplate::new(
        key,
        items.iter().map(|s| (*s).to_owned()).collect(),
        placeholders,
    )
    .unwrap()
}

/// Status of the process whose pid is in `pidfile` (zombies count as stopped: nothing reaps
/// orphans on some hosts).
pub const STATUS_SCRIPT: &str = r#"p=$(cat "$0" 2>/dev/null) && [ -r /proc/$p/stat ] && ! grep -q ') [ZX] ' /proc/$p/stat && echo running || echo stopped"#;

/// Hooks that manage a daemon through a pid file; `daemon` is the shell command that runs it.
pub fn pidfile_hooks(pidfile: &Path, daemon: &str) -> LifecycleConfig {
    let pidfile = pidfile.display().to_string();
    LifecycleConfig {
        start: template(
            "[lifecycle] start",
            &[
                "sh",
                "-c",
                &format!(r#"{daemon} >/dev/null 2>&1 & echo $! > "$0""#),
                &pidfile,
            ],
            START_PLACEHOLDERS,
        ),
        stop: template(
            "[lifecycle] stop",
            &["sh", "-c", r#"kill -TERM "$(cat "$0")""#, &pidfile],
            STOP_PLACEHOLDERS,
        ),
        status: template(
            "[lifecycle] status",
            &["sh", "-c", STATUS_SCRIPT, &pidfile],
            STATUS_PLACEHOLDERS,
        ),
        wait: Duration::from_secs(30),
        poll: Duration::from_millis(20),
    }
}

#[tokio::test]
async fn hooks_stop_and_start_a_process_and_the_status_confirms_it() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("node.pid");
    let lifecycle = Lifecycle::new(pidfile_hooks(&pidfile, "exec sleep 600"), "p1").unwrap();
    let cancel = CancellationToken::new();
    assert_eq!(
        lifecycle.status(&cancel).await.unwrap(),
        NodeStatus::Stopped
    );
    let started = lifecycle
        .start("run-1/start/p1", &NoObserver, &cancel)
        .await
        .unwrap();
    assert!(matches!(started, Transition::Done { .. }), "{started:?}");
    assert_eq!(
        lifecycle.status(&cancel).await.unwrap(),
        NodeStatus::Running
    );
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(Path::new(&format!("/proc/{pid}")).exists());
    assert_eq!(
        lifecycle
            .start("run-1/start/p1", &NoObserver, &cancel)
            .await
            .unwrap(),
        Transition::AlreadyThere
    );
    let stopped = lifecycle
        .stop(
            "run-2/stop/p1",
            Duration::from_secs(5),
            &NoObserver,
            &cancel,
        )
        .await
        .unwrap();
    assert!(matches!(stopped, Transition::Done { .. }), "{stopped:?}");
    assert_eq!(
        lifecycle.status(&cancel).await.unwrap(),
        NodeStatus::Stopped
    );
    assert_eq!(
        lifecycle
            .stop(
                "run-2/stop/p1",
                Duration::from_secs(5),
                &NoObserver,
                &cancel
            )
            .await
            .unwrap(),
        Transition::AlreadyThere
    );
}

#[tokio::test]
async fn a_stop_hook_that_does_not_stop_the_node_times_out_naming_it() {
    let config = LifecycleConfig {
        stop: template("[lifecycle] stop", &["true"], STOP_PLACEHOLDERS),
        start: template("[lifecycle] start", &["true"], START_PLACEHOLDERS),
        status: template(
            "[lifecycle] status",
            &["echo", "active"],
            STATUS_PLACEHOLDERS,
        ),
        wait: Duration::from_millis(200),
        poll: Duration::from_millis(20),
    };
    let lifecycle = Lifecycle::new(config, "p1").unwrap();
    let error = lifecycle
        .stop(
            "run-1/stop/p1",
            Duration::from_secs(1),
            &NoObserver,
            &CancellationToken::new(),
        )
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Timeout, "{error}");
    let text = error.to_string();
    assert!(text.contains("node p1 is not stopped"), "{text}");
    assert!(text.contains("[lifecycle] stop"), "{text}");
}

#[tokio::test]
async fn a_status_command_printing_something_else_is_an_error_naming_the_key() {
    let config = LifecycleConfig {
        stop: template("[lifecycle] stop", &["true"], STOP_PLACEHOLDERS),
        start: template("[lifecycle] start", &["true"], START_PLACEHOLDERS),
        status: template(
            "[lifecycle] status",
            &["sh", "-c", "echo maybe; echo oops >&2; exit 2"],
            STATUS_PLACEHOLDERS,
        ),
        wait: Duration::from_secs(1),
        poll: Duration::from_millis(20),
    };
    let lifecycle = Lifecycle::new(config, "p1").unwrap();
    let error = lifecycle
        .status(&CancellationToken::new())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Command);
    let text = error.to_string();
    assert!(text.contains("\"maybe\""), "{text}");
    assert!(text.contains("[lifecycle] status"), "{text}");
    assert!(text.contains("oops"), "{text}");
}
