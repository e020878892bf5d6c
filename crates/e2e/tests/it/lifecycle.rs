//! The lifecycle hook program agents run against the orchestrator really stops and starts a
//! node, and reports its status with the `is-active` exit codes.
use std::process::Command;
use std::time::{Duration, Instant};

use e2e::stack::{Stack, StackOptions};

const TOPOLOGY: &str = r#"
name = "lifecycle"
[[node]]
id = "sequencer1"
kind = "sequencer"
[[node]]
id = "mediator1"
kind = "mediator"
[[node]]
id = "participant1"
kind = "participant"
"#;

fn hook(stack: &Stack, verb: &str, node: &str) -> Option<i32> {
    let binary = testkit::binary_path("sim-lifecycle").expect("sim-lifecycle is built");
    Command::new(binary)
        .args([&stack.orchestrator.url(), verb, node])
        .status()
        .expect("running sim-lifecycle")
        .code()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hook_stops_and_starts_a_sim_node() {
    let stack = Stack::start(&StackOptions {
        topology: TOPOLOGY,
        heartbeat_interval: Duration::from_millis(500),
        commands: false,
        nats_login: false,
        database_password: None,
    })
    .await
    .expect("stack");
    let running = |stack: &Stack| {
        stack
            .with_sims(|sims| sims.node_mut("participant1").map(|n| n.is_running()))
            .expect("sims")
    };
    let stack = tokio::task::spawn_blocking(move || {
        assert_eq!(hook(&stack, "status", "participant1"), Some(0));
        let started = Instant::now();
        assert_eq!(hook(&stack, "stop", "participant1"), Some(0));
        assert_eq!(
            running(&stack),
            Some(false),
            "the process is gone after stop"
        );
        assert_eq!(hook(&stack, "status", "participant1"), Some(3));
        assert_eq!(hook(&stack, "start", "participant1"), Some(0));
        assert_eq!(running(&stack), Some(true));
        assert_eq!(hook(&stack, "status", "participant1"), Some(0));
        eprintln!("stop + start took {:?}", started.elapsed());
        assert_eq!(
            hook(&stack, "stop", "nosuchnode"),
            Some(1),
            "an unknown node fails"
        );
        let history = stack.orchestrator.history();
        assert_eq!(history.len(), 3, "{history:?}");
        assert_eq!(history[0], "stop participant1 -> stopped");
        assert!(
            history[1].starts_with("start participant1 -> running"),
            "{history:?}"
        );
        assert_eq!(history[2], "stop nosuchnode -> no node nosuchnode");
        stack
    })
    .await
    .expect("hook calls");
    assert!(stack.shutdown().await.expect("shutdown").is_empty());
}
