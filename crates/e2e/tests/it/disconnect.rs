//! A synchronized disconnect of four participants, one of whose agents is frozen: the run
//! reports that node as past its deadline, and the three that did leave the synchronizer are
//! reconnected (the step's compensation), as each participant's own action log shows.
use std::time::Instant;

use nix::sys::signal::Signal;

use crate::support::{final_run, method_name, node_calls, ops_json, running_stack};

const TOPOLOGY: &str = r#"
name = "disconnect"
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
[[node]]
id = "participant2"
kind = "participant"
organisation = "operator"
[[node]]
id = "participant3"
kind = "participant"
organisation = "operator"
[[node]]
id = "participant4"
kind = "participant"
organisation = "operator"
"#;

const FROZEN: &str = "participant3";
const PARTICIPANTS: [&str; 4] = [
    "participant1",
    "participant2",
    "participant3",
    "participant4",
];

/// The participant's connectivity calls, in order: `disconnect` or `reconnect`.
async fn connectivity_calls(stack: &e2e::stack::Stack, node: &str) -> Vec<String> {
    node_calls(stack, node)
        .await
        .into_iter()
        .filter(|(method, outcome)| {
            method.contains("SynchronizerConnectivityService") && outcome == "OK"
        })
        .filter_map(|(path, _)| {
            let method = method_name(&path);
            if method.starts_with("Disconnect") {
                Some("disconnect".to_owned())
            } else if method.starts_with("Reconnect") || method.starts_with("Connect") {
                Some("reconnect".to_owned())
            } else {
                None
            }
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disconnect_reports_the_unresponsive_participant_and_reconnects_the_others() {
    let stack = running_stack(TOPOLOGY).await;
    let mut before = Vec::new();
    for node in PARTICIPANTS {
        before.push(connectivity_calls(&stack, node).await);
    }
    stack.agents[FROZEN]
        .process
        .signal(Signal::SIGSTOP)
        .expect("freezing the agent");

    let started = Instant::now();
    let (status, values) = ops_json(
        &stack,
        &["run", "disconnect", "--param", "deadline=5s", "--wait"],
    );
    eprintln!("disconnect run ended after {:?}", started.elapsed());
    assert!(
        !status.success(),
        "a run with a silent node does not succeed: {values:#?}"
    );
    let run = final_run(&values);
    eprintln!("run status {} detail {:?}", run["status"], run["detail"]);
    assert_eq!(run["status"], "compensated", "{run:#}");
    let disconnect = run["steps"]
        .as_array()
        .and_then(|steps| steps.iter().find(|s| s["step"] == "disconnect"))
        .unwrap_or_else(|| panic!("no disconnect step: {run:#}"));
    let results: Vec<(&str, &str, &str)> = disconnect["nodes"]
        .as_array()
        .expect("node results")
        .iter()
        .map(|n| {
            (
                n["node"].as_str().unwrap_or_default(),
                n["status"].as_str().unwrap_or_default(),
                n["detail"].as_str().unwrap_or_default(),
            )
        })
        .collect();
    eprintln!("disconnect results: {results:?}");
    let not_done: Vec<&str> = results
        .iter()
        .filter(|(_, status, _)| *status != "done")
        .map(|(node, _, _)| *node)
        .collect();
    assert_eq!(
        not_done,
        [FROZEN],
        "only the frozen node did not ack: {results:?}"
    );
    assert!(
        results
            .iter()
            .any(|(node, _, detail)| *node == FROZEN && detail.contains("deadline")),
        "the run reports {FROZEN} as past its deadline: {results:?}"
    );

    let mut after = Vec::new();
    for node in PARTICIPANTS {
        after.push(connectivity_calls(&stack, node).await);
    }
    for ((node, before), after) in PARTICIPANTS.iter().zip(&before).zip(&after) {
        let new: Vec<&str> = after[before.len()..].iter().map(String::as_str).collect();
        eprintln!("{node}: connectivity calls during the run {new:?}");
        if *node == FROZEN {
            assert!(new.is_empty(), "{node} was never reached: {new:?}");
        } else {
            assert_eq!(
                new,
                ["disconnect", "reconnect"],
                "{node} left and was reconnected by the compensation"
            );
        }
    }

    stack.agents[FROZEN]
        .process
        .signal(Signal::SIGCONT)
        .expect("thawing the agent");
    let thawed = Instant::now();
    assert!(stack.shutdown().await.expect("shutdown").is_empty());
    eprintln!("shutdown after thaw took {:?}", thawed.elapsed());
}
