//! The node state in the network's nodes bucket: written when something significant changes,
//! right after every (re)connect, and at least every `state.refresh_interval`.

use std::time::Duration;

use async_nats::jetstream::kv::Store;
use backon::{BackoffBuilder, ExponentialBuilder};
use sidecar_bus::Bucket;
use tokio::time::Instant;

use crate::context::Context;
use crate::report::{NodeState, observe};
use crate::wire;

/// How soon a failed write is tried again.
const RETRY_AFTER_FAILURE: Duration = Duration::from_secs(1);

/// Keeps the node's KV entry current until shutdown, then writes a last state with `stopping`.
///
/// The agent only opens the bucket (agents need no right to create streams); until it exists
/// the agent keeps heartbeating and looks again with backoff.
pub async fn run_node_state(context: Context) {
    let Some(store) = open_bucket(&context).await else {
        return;
    };
    let key = context.identity.node.as_str().to_owned();
    let refresh = context.config.state_refresh;
    let mut probe_results = context.board.subscribe();
    let mut connection = context.link.connected();
    let mut last_written: Option<NodeState> = None;
    let mut next_write = Instant::now();
    loop {
        let mut forced = false;
        tokio::select! {
            () = context.shutdown.cancelled() => break,
            () = tokio::time::sleep_until(next_write) => forced = true,
            changed = probe_results.changed() => {
                if changed.is_err() {
                    // The board outlives this task; if it did not, only refreshes remain.
                    probe_results.mark_unchanged();
                }
            }
            changed = connection.changed() => {
                // Fresh state right after a reconnect: the registry may have missed changes.
                forced = changed.is_ok() && *connection.borrow_and_update();
            }
        }
        if !context.link.is_connected() {
            continue;
        }
        let state = observe(&context.identity, &context.board.snapshot()).node_state(
            &context.identity,
            context.counters(),
            false,
        );
        let changed = last_written
            .as_ref()
            .is_none_or(|last| last.differs_significantly(&state));
        if !forced && !changed {
            continue;
        }
        if write(&context, &store, &key, &state).await {
            if changed {
                tracing::info!(condition = %state.condition, reasons = ?state.reasons.iter().map(ToString::to_string).collect::<Vec<_>>(), "node state changed");
            }
            last_written = Some(state);
            next_write = Instant::now() + refresh;
        } else {
            next_write = Instant::now() + RETRY_AFTER_FAILURE.min(refresh);
        }
    }
    if context.link.is_connected() {
        let state = observe(&context.identity, &context.board.snapshot()).node_state(
            &context.identity,
            context.counters(),
            true,
        );
        write(&context, &store, &key, &state).await;
    }
}

async fn write(context: &Context, store: &Store, key: &str, state: &NodeState) -> bool {
    let payload = wire::encode_node_state(state);
    let before_ms = context.clock.now_unix_ms();
    match store.put(key, payload).await {
        Ok(revision) => {
            context.metrics.state_writes.increment();
            check_clock_against_the_server(context, store, key, revision, before_ms).await;
            true
        }
        Err(error) => {
            // A timed-out put may still apply later; the next write (newer state) follows it
            // on the same connection, so the bucket ends with the newer one.
            context.metrics.state_write_failures.increment();
            tracing::warn!(%error, "node state not written");
            false
        }
    }
}

/// The skew bound of agents without a command path (the command path's default).
const DEFAULT_SKEW_BOUND: Duration = Duration::from_secs(2);

/// The server stamped our write between the moment we sent it and the moment we read it back,
/// by its clock: a stamp outside that window by more than the skew bound means one of the two
/// clocks is off. This is the agent's time reference for a clock *ahead*, which commands alone
/// cannot reveal (a command that waited in the stream looks the same).
async fn check_clock_against_the_server(
    context: &Context,
    store: &Store,
    key: &str,
    revision: u64,
    before_ms: i64,
) {
    // The latest entry, not the entry by revision: a read by sequence is not confined to
    // this node's key, so the agent's credential does not allow it. Only this agent writes
    // the key, so the latest entry is the one just written unless a newer write overtook it.
    let Ok(Some(entry)) = store.entry(key).await else {
        return;
    };
    if entry.revision != revision {
        return;
    }
    let after_ms = context.clock.now_unix_ms();
    let stamped_ms =
        i64::try_from(entry.created.unix_timestamp_nanos() / 1_000_000).unwrap_or(i64::MAX);
    let bound_ms = context
        .config
        .commands
        .as_ref()
        .map_or(DEFAULT_SKEW_BOUND, |path| path.trust.max_clock_skew)
        .as_millis() as i64;
    let ahead_ms = before_ms.saturating_sub(stamped_ms);
    let behind_ms = stamped_ms.saturating_sub(after_ms);
    if ahead_ms > bound_ms {
        context.metrics.clock_skew_warnings.increment();
        tracing::warn!(
            ahead_ms,
            bound_ms,
            "this agent's clock is ahead of the NATS server's by more than the skew bound: commands will be refused as expired early; check time sync on both hosts"
        );
    } else if behind_ms > bound_ms {
        context.metrics.clock_skew_warnings.increment();
        tracing::warn!(
            behind_ms,
            bound_ms,
            "this agent's clock is behind the NATS server's by more than the skew bound: commands will be refused as not yet valid; check time sync on both hosts"
        );
    }
}

async fn open_bucket(context: &Context) -> Option<Store> {
    let name = context.names.bucket(Bucket::Nodes);
    let mut pauses = ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(200))
        .with_max_delay(Duration::from_secs(10))
        .with_jitter()
        .without_max_times()
        .build();
    loop {
        match context.jetstream.get_key_value(&name).await {
            Ok(store) => return Some(store),
            Err(error) => {
                let pause = pauses.next().unwrap_or(Duration::from_secs(10));
                tracing::warn!(bucket = %name, %error, retry_in = ?pause, "node state bucket not available; create it with the network setup");
                tokio::select! {
                    () = context.shutdown.cancelled() => return None,
                    () = tokio::time::sleep(pause) => {}
                }
            }
        }
    }
}
