//! The `canton-agent` binary with its whole process clock 30 s off: libfaketime preloaded into
//! participant1's agent (`FAKETIME=+30s` / `-30s`, the monotonic clock left alone), the rest of
//! the network and the host on the real time. Ahead, a command valid for 20 s is expired on
//! arrival; behind, every command is dated in the agent's future. Both skews are noticed
//! against the server's stamp on the agent's own node state. Either way the run names the node and the reason, the agent
//! counts it, and the participant is never touched; a window that covers the skew runs once.
use std::path::PathBuf;
use std::time::Duration;

use e2e::stack::Stack;

use crate::support::{
    agent_metrics, final_run, method_name, metric, node_calls, ops_json, start_prepared, step,
};

const TOPOLOGY: &str = r#"
name = "skewed"
[[node]]
id = "sequencer1"
kind = "sequencer"
organisation = "operator"
[[node]]
id = "mediator1"
kind = "mediator"
organisation = "operator"
[[node]]
id = "participant1"
kind = "participant"
organisation = "operator"
"#;

const SKEWED: &str = "participant1";

/// libfaketime's preload library, where Debian's `faketime` package puts it.
fn libfaketime() -> Option<PathBuf> {
    let lib = std::fs::read_dir("/usr/lib").ok()?.find_map(|entry| {
        let path = entry.ok()?.path().join("faketime/libfaketime.so.1");
        path.exists().then_some(path)
    });
    lib.or_else(|| {
        let path = PathBuf::from("/usr/lib/faketime/libfaketime.so.1");
        path.exists().then_some(path)
    })
}

fn skewed_env(lib: &std::path::Path, offset: &str) -> Vec<(String, String)> {
    vec![
        ("LD_PRELOAD".to_owned(), lib.display().to_string()),
        ("FAKETIME".to_owned(), offset.to_owned()),
        // Timers and timeouts keep the real pace; only the wall clock is off.
        ("FAKETIME_DONT_FAKE_MONOTONIC".to_owned(), "1".to_owned()),
        ("FAKETIME_DONT_RESET".to_owned(), "1".to_owned()),
    ]
}

/// Successful `Disconnect…` calls the participant executed so far.
async fn disconnects(stack: &Stack) -> usize {
    node_calls(stack, SKEWED)
        .await
        .iter()
        .filter(|(path, outcome)| method_name(path).starts_with("Disconnect") && outcome == "OK")
        .count()
}

/// `disconnect` of the skewed participant with commands valid for `deadline`; the final run.
fn disconnect(stack: &Stack, request_id: &str, deadline: &str) -> serde_json::Value {
    let (_, values) = ops_json(
        stack,
        &[
            "run",
            "disconnect",
            "--request-id",
            request_id,
            "--node",
            SKEWED,
            "--param",
            &format!("deadline={deadline}"),
            "--wait",
        ],
    );
    final_run(&values).clone()
}

/// The run failed on the participant for `reason` (leading its detail, with `says`), and the
/// participant executed nothing.
async fn assert_refused(
    stack: &Stack,
    run: &serde_json::Value,
    reason: &str,
    says: &str,
    before: usize,
) {
    assert_eq!(run["status"], "failed", "{run:#}");
    let nodes = step(run, "disconnect")["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let node = nodes
        .iter()
        .find(|n| n["node"] == SKEWED)
        .unwrap_or_else(|| panic!("no {SKEWED} in {run:#}"));
    let detail = node["detail"].as_str().unwrap_or_default();
    eprintln!("{SKEWED}: {} — {detail}", node["status"]);
    assert!(detail.starts_with(reason), "{reason} leads {node:#}");
    assert!(detail.contains(says), "{says:?} in {node:#}");
    assert_eq!(
        disconnects(stack).await,
        before,
        "the participant was touched"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_binary_30_s_off_refuses_commands_its_clock_rules_out_and_says_why() {
    let Some(lib) = libfaketime() else {
        testkit::skip(
            "e2e clock_skew",
            "libfaketime is not installed (Debian package faketime; scripts/install-deps.sh installs it)",
        );
        return;
    };
    let mut stack = start_prepared(TOPOLOGY, "", false, |stack| {
        stack.serve_metrics = true;
        stack
            .agent_env
            .insert(SKEWED.to_owned(), skewed_env(&lib, "+30s"));
    })
    .await;

    // 30 s ahead: valid for 20 s, the command is past its expiry by the agent's clock.
    let before = disconnects(&stack).await;
    let run = disconnect(&stack, "ahead-expired", "20s");
    assert_refused(&stack, &run, "REJECT_REASON_EXPIRED", "expired at", before).await;
    let metrics = agent_metrics(&stack, SKEWED);
    assert!(
        metric(
            &metrics,
            "canton_agent_rejections_total",
            &[("reason", "expired")]
        ) >= 1.0
    );
    // The node state's server stamp, 30 s before the agent sent it, gives the clock away.
    let warnings = metric(&metrics, "canton_agent_clock_skew_warnings_total", &[]);
    eprintln!("clock skew warnings of the agent ahead: {warnings}");
    assert!(warnings >= 1.0, "the agent 30 s ahead was not noticed");
    // Valid for 60 s, the window covers the skew: the disconnect runs once.
    let run = disconnect(&stack, "ahead-within", "60s");
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(disconnects(&stack).await, before + 1);
    let (status, values) = ops_json(&stack, &["run", "reconnect", "--node", SKEWED, "--wait"]);
    assert!(status.success(), "{values:#?}");

    // 30 s behind: every command is dated in the agent's future; the server's delivery stamp
    // 30 s ahead of its clock is counted as a skew warning.
    stack
        .agent_env
        .insert(SKEWED.to_owned(), skewed_env(&lib, "-30s"));
    let took = stack
        .restart_agent(SKEWED, Duration::from_secs(60))
        .expect("restarting the agent 30 s behind");
    eprintln!("{SKEWED}'s agent restarted 30 s behind in {took:?}");
    let before = disconnects(&stack).await;
    let run = disconnect(&stack, "behind-not-yet-valid", "60s");
    assert_refused(
        &stack,
        &run,
        "REJECT_REASON_NOT_YET_VALID",
        "ahead of this agent's clock",
        before,
    )
    .await;
    let metrics = agent_metrics(&stack, SKEWED);
    let warnings = metric(&metrics, "canton_agent_clock_skew_warnings_total", &[]);
    eprintln!("clock skew warnings of the agent behind: {warnings}");
    assert!(
        warnings >= 1.0,
        "the server stamp 30 s ahead was not noticed"
    );
    assert!(stack.shutdown().await.expect("shutdown").is_empty());
}
