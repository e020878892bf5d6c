//! Process-wide telemetry set-up, called only from `main.rs` files.
//!
//! Libraries never install global state; they emit `tracing` events and take metric handles as
//! values. Binaries call [`init`] once, first thing, and keep the returned guard alive until exit.

use tracing_subscriber::{EnvFilter, fmt, layer::SubscriberExt, util::SubscriberInitExt};

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

/// Installs the global tracing subscriber. The filter comes from `RUST_LOG`, defaulting to
/// `info` for our crates and `warn` for dependencies.
pub fn init(format: LogFormat) -> Guard {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "warn,canton_agent=info,canton_coordinator=info,canton_ops=info,canton_sim=info,sidecar_bus=info,e2e=info",
        )
    });
    let registry = tracing_subscriber::registry().with(filter);
    let installed = match format {
        LogFormat::Text => registry
            .with(fmt::layer().with_writer(std::io::stderr).with_target(false))
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .with_writer(std::io::stderr)
                    .with_current_span(true),
            )
            .try_init(),
    };
    // A second call (tests that start two binaries' entry points in one process) keeps the first.
    let _ = installed;
    Guard { _private: () }
}

/// Flushes telemetry on drop. Exporters added later hang their shutdown off this guard.
#[must_use = "telemetry is flushed when the guard drops; keep it alive until exit"]
pub struct Guard {
    _private: (),
}
