//! The sim network the runbook programs measure on: a stack with an agent beside every node
//! and one organisation's coordinator, started once per program and stopped at its end.

use std::time::Duration;

use e2e::stack::{Stack, StackOptions};

/// Starts `topology` with 1 s heartbeats (agents serving `/metrics` when `serve_metrics`),
/// runs `measure` on it, and stops it; on an error the processes' log tails are printed.
pub fn measure_on_stack<T>(
    topology: &str,
    organisation: &str,
    serve_metrics: bool,
    measure: impl FnOnce(&Stack) -> anyhow::Result<T>,
) -> anyhow::Result<T> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let stack = runtime.block_on(start(topology, organisation, serve_metrics))?;
    let outcome = measure(&stack);
    if let Err(error) = &outcome {
        eprintln!("{error:#}\n{}", stack.log_tails(20));
    }
    if let Ok(unclean) = runtime.block_on(stack.shutdown())
        && !unclean.is_empty()
    {
        eprintln!("did not stop cleanly: {}", unclean.join(", "));
    }
    outcome
}

async fn start(topology: &str, organisation: &str, serve_metrics: bool) -> anyhow::Result<Stack> {
    let mut stack = Stack::start(&StackOptions {
        topology,
        heartbeat_interval: Duration::from_secs(1),
        commands: true,
        nats_login: false,
        database_password: None,
    })
    .await?;
    stack.serve_metrics = serve_metrics;
    stack.start_agents(Duration::from_secs(120)).await?;
    stack
        .start_coordinator(organisation, Duration::from_secs(120))
        .await?;
    Ok(stack)
}
