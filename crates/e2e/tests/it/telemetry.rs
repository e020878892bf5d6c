//! Telemetry into OpenTelemetry backends and Prometheus: one backup run across the demo
//! network is one trace (run → step → agent action) at an in-process OTLP receiver, metrics
//! arrive over OTLP, `/metrics` of agents and the coordinator parses as Prometheus text, and
//! without an endpoint nothing is sent.
use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use e2e::otlp::{OtlpReceiver, Received, ReceivedSpan};
use e2e::prometheus_text::Exposition;
use e2e::stack::{Stack, StackOptions};

use crate::support::{DEMO_TOPOLOGY, ORGANISATION, final_run, ops_json, scrape};

/// Short export intervals so the test waits for seconds, not the one-minute defaults.
pub(crate) fn otel_env(endpoint: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![
        ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "200".to_owned()),
        ("OTEL_METRIC_EXPORT_INTERVAL".to_owned(), "500".to_owned()),
    ];
    if let Some(endpoint) = endpoint {
        env.push((
            "OTEL_EXPORTER_OTLP_ENDPOINT".to_owned(),
            endpoint.to_owned(),
        ));
    }
    env
}

async fn observed_stack(topology: &str, env: Vec<(String, String)>, args: &[&str]) -> Stack {
    let started = Instant::now();
    let mut stack = Stack::start(&StackOptions {
        topology,
        heartbeat_interval: Duration::from_millis(500),
        commands: true,
        nats_login: false,
        database_password: None,
    })
    .await
    .expect("starting the stack");
    stack.process_env = env;
    stack.process_args = args.iter().map(|arg| (*arg).to_owned()).collect();
    stack.serve_metrics = true;
    stack
        .start_agents(Duration::from_secs(60))
        .await
        .expect("starting the agents");
    stack
        .start_coordinator(ORGANISATION, Duration::from_secs(60))
        .await
        .expect("starting the coordinator");
    eprintln!(
        "stack with agents and coordinator up in {:?}",
        started.elapsed()
    );
    stack
}

/// Waits (generously) until `done` holds for what the receiver got; logs how long it took.
pub(crate) async fn wait_for(
    receiver: &OtlpReceiver,
    what: &str,
    mut done: impl FnMut(&Received) -> bool,
) -> Received {
    let started = Instant::now();
    loop {
        let received = receiver.received();
        if done(&received) {
            eprintln!("{what}: after {:?}", started.elapsed());
            return received;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{what}: not within 30 s; received {} spans ({:?}), metrics {:?}",
            received.spans.len(),
            received
                .spans
                .iter()
                .map(|s| (&s.service, &s.name))
                .collect::<BTreeSet<_>>(),
            received.metrics
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn assert_families(exposition: &Exposition, families: &[&str], who: &str) {
    let missing: Vec<&&str> = families
        .iter()
        .filter(|family| !exposition.types.contains_key(**family))
        .collect();
    assert!(
        missing.is_empty(),
        "{who} /metrics lacks {missing:?}; has {:?}",
        exposition.types.keys().collect::<Vec<_>>()
    );
}

/// With `--log-format json` every line an agent or the coordinator wrote is one JSON object;
/// returns the span ids of the agents' "action finished" lines that carry the run's trace id.
fn logged_action_spans(stack: &Stack, trace: &str) -> BTreeSet<String> {
    let logs = stack
        .agents
        .values()
        .map(|agent| agent.process.log_path().to_owned())
        .chain(
            stack
                .coordinators
                .values()
                .map(|coordinator| coordinator.process.log_path().to_owned()),
        );
    let (mut lines, mut in_run) = (0, BTreeSet::new());
    for path in logs {
        let text = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        for line in text.lines().filter(|line| !line.trim().is_empty()) {
            lines += 1;
            let value: serde_json::Value = serde_json::from_str(line)
                .unwrap_or_else(|e| panic!("{}: not JSON ({e}): {line}", path.display()));
            for key in ["timestamp", "level", "target", "fields"] {
                assert!(
                    value.get(key).is_some(),
                    "{}: no {key}: {line}",
                    path.display()
                );
            }
            if value["fields"]["message"] == "action finished" && value["trace_id"] == trace {
                let span_id = value["span_id"].as_str().unwrap_or_default();
                assert!(
                    !span_id.is_empty(),
                    "{}: no span_id: {line}",
                    path.display()
                );
                in_run.insert(span_id.to_owned());
            }
        }
    }
    eprintln!(
        "{lines} JSON log lines; {} action spans logged with trace {trace}",
        in_run.len()
    );
    in_run
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_run_is_one_trace_and_metrics_reach_otlp_and_prometheus() {
    let receiver = OtlpReceiver::start("127.0.0.1:0".parse().expect("address"))
        .await
        .expect("starting the OTLP receiver");
    let stack = observed_stack(
        DEMO_TOPOLOGY,
        otel_env(Some(&receiver.endpoint())),
        &["--log-format", "json"],
    )
    .await;

    let started = Instant::now();
    let (status, values) = ops_json(
        &stack,
        &["run", "backup", "--param", "backup_set=traced", "--wait"],
    );
    eprintln!("backup run took {:?}", started.elapsed());
    assert!(status.success(), "backup failed: {values:#?}");
    let run = final_run(&values);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let run_id = run["run_id"].as_str().expect("run id").to_owned();

    // The run span ends when the run finishes; the batch goes out within the schedule delay.
    let received = wait_for(&receiver, "run span exported", |r| {
        r.spans
            .iter()
            .any(|s| s.name == "run backup" && s.attribute("run") == Some(&run_id))
    })
    .await;
    let run_span = received
        .spans
        .iter()
        .find(|s| s.name == "run backup" && s.attribute("run") == Some(&run_id))
        .expect("the run span");
    assert_eq!(run_span.service, "canton-coordinator");
    assert_eq!(
        run_span.parent_span_id, "",
        "the run span is the trace's root"
    );
    assert_eq!(run_span.attribute("runbook"), Some("backup"));
    assert_eq!(run_span.attribute("organisation"), Some(ORGANISATION));
    assert_eq!(run_span.attribute("outcome"), Some("succeeded"));
    let trace = run_span.trace_id.clone();

    let in_trace = |r: &Received| -> Vec<ReceivedSpan> {
        r.spans
            .iter()
            .filter(|s| s.trace_id == trace)
            .cloned()
            .collect()
    };
    let steps: BTreeMap<String, ReceivedSpan> = in_trace(&received)
        .into_iter()
        .filter(|s| s.service == "canton-coordinator" && s.name.starts_with("step "))
        .map(|s| (s.span_id.clone(), s))
        .collect();
    for step in steps.values() {
        assert_eq!(step.parent_span_id, run_span.span_id, "{step:?}");
        assert_eq!(step.attribute("runbook"), Some("backup"), "{step:?}");
        assert!(step.attribute("outcome").is_some(), "{step:?}");
    }
    let step_names: BTreeSet<&str> = steps.values().filter_map(|s| s.attribute("step")).collect();
    for dump_step in ["members", "sequencers"] {
        assert!(
            step_names.contains(dump_step),
            "no {dump_step} step span: {step_names:?}"
        );
    }

    // Agents export their action spans as they finish; every backup action must be there.
    let received = wait_for(&receiver, "agent backup spans exported", |r| {
        in_trace(r)
            .iter()
            .filter(|s| s.name == "action backup")
            .count()
            >= 6
    })
    .await;
    let actions: Vec<ReceivedSpan> = in_trace(&received)
        .into_iter()
        .filter(|s| s.service == "canton-agent")
        .collect();
    let mut backup_nodes = BTreeSet::new();
    for action in &actions {
        let parent = steps
            .get(&action.parent_span_id)
            .unwrap_or_else(|| panic!("agent span {action:?} is not a child of a step span"));
        assert_eq!(
            action.attribute("step"),
            parent.attribute("step"),
            "{action:?}"
        );
        assert_eq!(action.attribute("organisation"), Some(ORGANISATION));
        assert_eq!(action.attribute("runbook"), Some("backup"), "{action:?}");
        assert!(
            action
                .attribute("command_id")
                .is_some_and(|id| id.starts_with(&run_id))
        );
        assert!(action.attribute("kind").is_some(), "{action:?}");
        assert!(action.attribute("node").is_some(), "{action:?}");
        if action.attribute("kind") == Some("backup") {
            assert_eq!(action.attribute("outcome"), Some("done"), "{action:?}");
            backup_nodes.insert(action.attribute("node").unwrap_or_default().to_owned());
        }
    }
    eprintln!(
        "trace {trace}: run span, {} step spans, {} agent spans; backups on {backup_nodes:?}",
        steps.len(),
        actions.len()
    );
    assert!(
        backup_nodes.len() >= 4,
        "backup spans from {backup_nodes:?}"
    );
    // The run is over, so every action has logged its end; each logged span must arrive
    // (agents export in batches, the last one a little later) and be all the run's actions.
    let logged = logged_action_spans(&stack, &trace);
    let agent_spans = |r: &Received| -> BTreeSet<String> {
        in_trace(r)
            .into_iter()
            .filter(|s| s.service == "canton-agent")
            .map(|s| s.span_id)
            .collect()
    };
    let received = wait_for(&receiver, "every logged action span exported", |r| {
        logged.is_subset(&agent_spans(r))
    })
    .await;
    assert_eq!(
        logged,
        agent_spans(&received),
        "every action of the run logs its end inside its span"
    );
    // Only our spans leave the process: nothing from the gRPC/HTTP stack.
    let foreign: Vec<&str> = received
        .spans
        .iter()
        .map(|s| s.name.as_str())
        .filter(|name| {
            !(name.starts_with("run ") || name.starts_with("step ") || name.starts_with("action "))
        })
        .collect();
    assert!(foreign.is_empty(), "spans that are not ours: {foreign:?}");

    let received = wait_for(&receiver, "metrics over OTLP", |r| {
        let has =
            |service: &str, name: &str| r.metrics.contains(&(service.to_owned(), name.to_owned()));
        has("canton-coordinator", "canton_coordinator_runs")
            && has("canton-coordinator", "canton_coordinator_heartbeat_age")
            && has("canton-agent", "canton_agent_command_duration")
            && has("canton-agent", "canton_agent_probe_duration")
    })
    .await;
    eprintln!("{} metric requests received", received.metric_requests);

    let coordinator_url = stack.coordinators[ORGANISATION]
        .metrics_url
        .clone()
        .expect("coordinator metrics url");
    let coordinator = scrape(&coordinator_url);
    assert_families(
        &coordinator,
        &[
            "canton_coordinator_node_health",
            "canton_coordinator_node_reported",
            "canton_coordinator_heartbeat_age_seconds",
            "canton_coordinator_runs_total",
            "canton_coordinator_step_duration_seconds",
            "canton_coordinator_run_duration_seconds",
            "canton_coordinator_failovers_total",
            "canton_coordinator_backup_age_seconds",
            "canton_coordinator_nats_reconnects_total",
            "canton_coordinator_detector_healthy",
            "canton_coordinator_leader",
        ],
        "coordinator",
    );
    assert_eq!(
        coordinator.values(
            "canton_coordinator_runs_total",
            &[("runbook", "backup"), ("outcome", "succeeded")]
        ),
        [1.0]
    );
    assert_eq!(coordinator.values("canton_coordinator_leader", &[]), [1.0]);
    let alive = coordinator.values("canton_coordinator_node_health", &[("health", "alive")]);
    assert!(
        alive.iter().filter(|v| **v == 1.0).count() >= 6,
        "{alive:?}"
    );

    let agent_url = stack.agents["participant1"]
        .metrics_url
        .clone()
        .expect("agent metrics url");
    let agent = scrape(&agent_url);
    assert_families(
        &agent,
        &[
            "canton_agent_commands_received_total",
            "canton_agent_rejections_total",
            "canton_agent_command_duration_seconds",
            "canton_agent_probe_duration_seconds",
            "canton_agent_backup_duration_seconds",
            "canton_agent_backup_size_bytes",
            "canton_agent_node_condition",
            "canton_agent_reconnects_total",
            "canton_agent_heartbeats_published_total",
        ],
        "agent",
    );
    assert!(
        agent
            .values("canton_agent_commands_received_total", &[])
            .iter()
            .sum::<f64>()
            >= 1.0
    );
    assert!(
        agent
            .values("canton_agent_backup_size_bytes", &[])
            .iter()
            .all(|v| *v > 0.0)
    );
    assert!(stack.shutdown().await.expect("shutdown").is_empty());
}

/// Without an endpoint the processes export nothing: a receiver on the OTLP default address
/// (127.0.0.1:4317) gets no request while agents and the coordinator run, serve `/metrics`,
/// and flush at exit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_endpoint_nothing_is_sent() {
    let receiver = match OtlpReceiver::start("127.0.0.1:4317".parse().expect("address")).await {
        Ok(receiver) => receiver,
        Err(error) => {
            testkit::skip(
                "without_an_endpoint_nothing_is_sent",
                &format!("127.0.0.1:4317 is taken ({error})"),
            );
            return;
        }
    };
    let stack = observed_stack(DEMO_TOPOLOGY, otel_env(None), &[]).await;
    let agent_url = stack.agents["participant1"]
        .metrics_url
        .clone()
        .expect("agent metrics url");
    // Several metric export intervals (500 ms) and span batches (200 ms) pass meanwhile.
    let started = Instant::now();
    loop {
        let agent = scrape(&agent_url);
        let published = agent
            .values("canton_agent_heartbeats_published_total", &[])
            .iter()
            .sum::<f64>();
        if published >= 5.0 {
            eprintln!("5 heartbeats published after {:?}", started.elapsed());
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "heartbeats: {published}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let coordinator_url = stack.coordinators[ORGANISATION]
        .metrics_url
        .clone()
        .expect("coordinator metrics url");
    let coordinator = scrape(&coordinator_url);
    assert_eq!(coordinator.values("canton_coordinator_leader", &[]), [1.0]);
    assert!(stack.shutdown().await.expect("shutdown").is_empty());
    let received = receiver.received();
    assert_eq!(
        (received.trace_requests, received.metric_requests),
        (0, 0),
        "export requests without an endpoint"
    );
}
