//! The heartbeat ticker: one message per interval on `cs.<net>.hb.<node>`, built from whatever
//! the probes last reported. It never waits for a probe, so a hung node cannot silence it.

use std::time::Duration;

use tokio::time::MissedTickBehavior;

use crate::context::Context;
use crate::report::observe;
use crate::wire;

/// Publishes heartbeats until shutdown.
///
/// Ticks while NATS is disconnected are skipped rather than queued (a late heartbeat says
/// nothing true about "now"), and a stalled runtime skips missed ticks instead of bursting.
pub async fn run_heartbeats(context: Context) {
    let interval = context.config.heartbeat_interval;
    let subject = context.names.heartbeat(&context.identity.node);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(MissedTickBehavior::Skip);
    let mut seq: u64 = 0;
    loop {
        tokio::select! {
            () = context.shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if !context.link.is_connected() {
            context.metrics.heartbeats_skipped.increment();
            continue;
        }
        seq += 1;
        let observation = observe(&context.identity, &context.board.snapshot());
        context
            .metrics
            .instruments
            .condition(observation.assessment.condition);
        let heartbeat = observation.heartbeat(&context.identity, seq, interval, context.counters());
        let payload = wire::encode_heartbeat(&heartbeat);
        // `publish` only queues the message; the bound covers a client whose queue is full.
        let published = tokio::time::timeout(
            interval.max(Duration::from_millis(100)),
            context.link.client.publish(subject.clone(), payload),
        )
        .await;
        match published {
            Ok(Ok(())) => context.metrics.heartbeats_published.increment(),
            Ok(Err(error)) => tracing::warn!(%error, seq, "heartbeat not published"),
            Err(_) => tracing::warn!(seq, "heartbeat not queued in time; NATS client is stuck"),
        }
    }
}
