//! The NATS connection: the first connect is retried forever with jittered backoff (so an agent
//! started before NATS waits for it), and the client then reconnects by itself, also forever
//! and with jitter. Tasks ask [`Link::is_connected`] before publishing: async-nats buffers core
//! publishes while disconnected and would flush a burst of stale heartbeats on reconnect.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::connection::State;
use backon::{BackoffBuilder, ExponentialBuilder, Retryable};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::config::NatsConfig;
use crate::metrics::AgentMetrics;

/// A connected client plus a signal that flips on every (re)connect and disconnect.
#[derive(Clone)]
pub struct Link {
    pub client: async_nats::Client,
    connected: watch::Receiver<bool>,
}

const MIN_RECONNECT_DELAY: Duration = Duration::from_millis(100);

fn backoff(max: Duration) -> ExponentialBuilder {
    ExponentialBuilder::default()
        .with_min_delay(MIN_RECONNECT_DELAY)
        .with_max_delay(max)
        .with_jitter()
        .without_max_times()
}

/// Pause before reconnect attempt `attempts` (1-based), jittered and capped at `max`.
fn reconnect_delay(attempts: usize, max: Duration) -> Duration {
    // Attempts beyond ~20 are all at the cap; skipping further keeps the call cheap in long outages.
    backoff(max)
        .build()
        .nth(attempts.saturating_sub(1).min(20))
        .map_or(max, |delay| delay.min(max))
}

impl Link {
    /// Connects, retrying forever until connected or `shutdown`; `None` means shut down first.
    pub async fn establish(
        config: &NatsConfig,
        client_name: &str,
        inbox_prefix: &str,
        metrics: &AgentMetrics,
        shutdown: &CancellationToken,
    ) -> Option<Link> {
        let (connected_tx, connected) = watch::channel(false);
        let ever_connected = Arc::new(AtomicBool::new(false));
        let attempt = || async {
            let options = options(
                config,
                client_name,
                inbox_prefix,
                connected_tx.clone(),
                Arc::clone(&ever_connected),
                metrics.clone(),
            )
            .await?;
            let servers = sidecar_bus::server_addrs(&config.url).map_err(|e| e.to_string())?;
            options.connect(servers).await.map_err(|e| e.to_string())
        };
        let connecting = attempt
            .retry(backoff(config.max_reconnect_delay))
            .notify(|error: &String, pause: Duration| {
                tracing::warn!(url = %config.url, %error, retry_in = ?pause, "cannot connect to NATS; retrying");
            });
        tokio::select! {
            () = shutdown.cancelled() => None,
            result = connecting => match result {
                Ok(client) => {
                    tracing::info!(url = %config.url, "connected to NATS");
                    Some(Link { client, connected })
                }
                // `without_max_times` retries forever; an error can only mean the retry gave up.
                Err(error) => {
                    tracing::error!(%error, "gave up connecting to NATS");
                    None
                }
            },
        }
    }

    /// Whether a publish now would go out rather than into a reconnect buffer.
    pub fn is_connected(&self) -> bool {
        self.client.connection_state() == State::Connected
    }

    /// A receiver that changes on every connect (`true`) and disconnect (`false`).
    pub fn connected(&self) -> watch::Receiver<bool> {
        self.connected.clone()
    }
}

async fn options(
    config: &NatsConfig,
    client_name: &str,
    inbox_prefix: &str,
    connected: watch::Sender<bool>,
    ever_connected: Arc<AtomicBool>,
    metrics: AgentMetrics,
) -> Result<async_nats::ConnectOptions, String> {
    let max_delay = config.max_reconnect_delay;
    let options = config
        .auth
        .apply(async_nats::ConnectOptions::new())
        .await
        .map_err(|e| e.to_string())?;
    Ok(options
        .name(client_name)
        .custom_inbox_prefix(inbox_prefix)
        .ping_interval(config.ping_interval)
        .connection_timeout(config.connect_timeout)
        .max_reconnects(None)
        .reconnect_delay_callback(move |attempts| reconnect_delay(attempts, max_delay))
        .event_callback(move |event| {
            let connected = connected.clone();
            let metrics = metrics.clone();
            let ever_connected = Arc::clone(&ever_connected);
            async move {
                match event {
                    async_nats::Event::Connected => {
                        connected.send_replace(true);
                        if ever_connected.swap(true, Ordering::Relaxed) {
                            metrics.reconnects.increment();
                        }
                        tracing::info!("NATS connected");
                    }
                    async_nats::Event::Disconnected => {
                        connected.send_replace(false);
                        tracing::warn!("NATS disconnected; reconnecting");
                    }
                    // One per failed reconnect attempt: debug, or an outage floods the log.
                    async_nats::Event::ClientError(error) => {
                        tracing::debug!(%error, "NATS client error");
                    }
                    other => tracing::info!(event = %other, "NATS event"),
                }
            }
        }))
}
