//! Process-wide telemetry, installed only from `main.rs` files.
//!
//! Libraries never install global state: they emit `tracing` spans and events, take metric
//! instruments (built from the [`Meter`] this crate hands out) as values, and use the
//! [`propagation`] helpers to carry W3C trace context in command bodies and NATS headers.
//!
//! Binaries that only log call [`init`]. The agent and the coordinator call [`install`] inside
//! their tokio runtime: it adds an OpenTelemetry tracer (spans of our own crates only, exported
//! over OTLP gRPC when the standard `OTEL_EXPORTER_OTLP_*` variables name an endpoint) and a
//! meter provider that feeds both OTLP (same condition) and the Prometheus text served on
//! `/metrics` ([`metrics_http`]).

mod json;
pub mod metrics_http;
pub mod propagation;

use std::time::Duration;

pub use opentelemetry::KeyValue;
use opentelemetry::metrics::MeterProvider as _;
pub use opentelemetry::metrics::{Counter, Gauge, Histogram, Meter, UpDownCounter};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::metrics::SdkMeterProvider;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer, Registry, fmt};

/// How log lines are written to stderr.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers; carries `trace_id` and `span_id` inside a span.
    Json,
}

/// The crates whose spans are ours: only these reach the trace exporter, so the exporter's own
/// gRPC calls (h2, hyper, tonic) never feed back into it.
pub const OUR_CRATES: [&str; 7] = [
    "canton_agent",
    "canton_coordinator",
    "sidecar_core",
    "sidecar_bus",
    "sidecar_backup",
    "sidecar_trust",
    "canton_client",
];

/// Why telemetry could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// An `OTEL_*` variable holds something the exporter cannot use.
    #[error("OTLP {signal} exporter: {detail} (check the OTEL_EXPORTER_OTLP_* variables)")]
    Exporter {
        signal: &'static str,
        detail: String,
    },
    #[error("Prometheus exporter: {0}")]
    Prometheus(String),
    #[error("a global tracing subscriber is already installed")]
    AlreadyInstalled,
}

fn log_filter() -> EnvFilter {
    EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new(
            "warn,canton_agent=info,canton_coordinator=info,canton_ops=info,canton_sim=info,sidecar_bus=info,e2e=info",
        )
    })
}

type BoxedLayer = Box<dyn Layer<Registry> + Send + Sync>;

fn log_layer(format: LogFormat) -> BoxedLayer {
    match format {
        LogFormat::Text => fmt::layer()
            .with_writer(std::io::stderr)
            .with_target(false)
            .with_filter(log_filter())
            .boxed(),
        LogFormat::Json => fmt::layer()
            .with_writer(std::io::stderr)
            .fmt_fields(fmt::format::JsonFields::new())
            .event_format(json::JsonWithTrace)
            .with_filter(log_filter())
            .boxed(),
    }
}

/// Installs the global log subscriber only (for the CLI, the sim and tests).
pub fn init(format: LogFormat) -> Guard {
    // A second call (tests that start two binaries' entry points in one process) keeps the first.
    let _ = tracing_subscriber::registry()
        .with(log_layer(format))
        .try_init();
    Guard { _private: () }
}

/// Keeps the log subscriber of [`init`]; nothing to flush.
#[must_use = "keep the guard alive until exit"]
pub struct Guard {
    _private: (),
}

/// Whether the standard variables ask for OTLP export of a signal (`TRACES` or `METRICS`).
/// `OTEL_SDK_DISABLED=true` and `OTEL_<SIGNAL>_EXPORTER=none` turn it off.
fn otlp_wanted(signal: &str) -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var(format!("OTEL_{signal}_EXPORTER"))
            .is_ok_and(|v| v.trim().eq_ignore_ascii_case("none"));
    !disabled
        && (set("OTEL_EXPORTER_OTLP_ENDPOINT")
            || set(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")))
}

fn resource(service: &'static str) -> Resource {
    let builder = Resource::builder();
    // OTEL_SERVICE_NAME (read by the builder) wins over the binary's name.
    let builder = if std::env::var_os("OTEL_SERVICE_NAME").is_some() {
        builder
    } else {
        builder.with_service_name(service)
    };
    builder
        .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
        .build()
}

/// Everything [`install`] set up: the meter for instruments, the Prometheus text, and the
/// providers to flush at exit.
pub struct Telemetry {
    meter: Meter,
    metrics_text: metrics_http::MetricsText,
    tracer_provider: SdkTracerProvider,
    meter_provider: SdkMeterProvider,
    exporting: Exporting,
}

/// Which signals leave the process over OTLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Exporting {
    pub traces: bool,
    pub metrics: bool,
}

/// Installs the global subscriber with the OpenTelemetry tracer, and builds the meter provider.
/// Must run inside a tokio runtime (the OTLP channel lives on it). Spans always get trace ids
/// (for JSON logs and the command envelope); they are exported only when an endpoint is set.
pub fn install(service: &'static str, format: LogFormat) -> Result<Telemetry, TelemetryError> {
    let exporting = Exporting {
        traces: otlp_wanted("TRACES"),
        metrics: otlp_wanted("METRICS"),
    };
    let resource = resource(service);
    let mut tracer_builder = SdkTracerProvider::builder().with_resource(resource.clone());
    if exporting.traces {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_tonic()
            .build()
            .map_err(|error| TelemetryError::Exporter {
                signal: "trace",
                detail: error.to_string(),
            })?;
        tracer_builder = tracer_builder.with_batch_exporter(exporter);
    }
    let tracer_provider = tracer_builder.build();

    let registry = prometheus::Registry::new();
    let prometheus_reader = opentelemetry_prometheus::exporter()
        .with_registry(registry.clone())
        .scope_info_enabled(false)
        .without_target_info()
        .build()
        .map_err(|error| TelemetryError::Prometheus(error.to_string()))?;
    let mut meter_builder = SdkMeterProvider::builder()
        .with_resource(resource)
        .with_reader(prometheus_reader);
    if exporting.metrics {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_tonic()
            .build()
            .map_err(|error| TelemetryError::Exporter {
                signal: "metric",
                detail: error.to_string(),
            })?;
        meter_builder = meter_builder.with_periodic_exporter(exporter);
    }
    let meter_provider = meter_builder.build();

    let mut ours = Targets::new().with_default(LevelFilter::OFF);
    for target in OUR_CRATES {
        ours = ours.with_target(target, LevelFilter::INFO);
    }
    let trace_layer = tracing_opentelemetry::layer()
        .with_tracer(tracer_provider.tracer(service))
        .with_filter(ours)
        .boxed();
    tracing_subscriber::registry()
        .with(vec![trace_layer, log_layer(format)])
        .try_init()
        .map_err(|_| TelemetryError::AlreadyInstalled)?;
    tracing::debug!(?exporting, "telemetry installed");
    Ok(Telemetry {
        meter: meter_provider.meter(service),
        metrics_text: metrics_http::MetricsText::new(registry),
        tracer_provider,
        meter_provider,
        exporting,
    })
}

impl Telemetry {
    /// The meter every instrument of this process is built from (pass it, or the instruments,
    /// as values).
    pub fn meter(&self) -> Meter {
        self.meter.clone()
    }

    /// The Prometheus rendering of every instrument, for `/metrics`.
    pub fn metrics_text(&self) -> metrics_http::MetricsText {
        self.metrics_text.clone()
    }

    pub fn exporting(&self) -> Exporting {
        self.exporting
    }

    /// Exports what is buffered (spans, a last metric collection) and stops the providers. The
    /// SDK's flush blocks, so it runs on a blocking thread while the runtime drives the channel.
    pub async fn shutdown(self) {
        let Self {
            tracer_provider,
            meter_provider,
            ..
        } = self;
        let flushed = tokio::task::spawn_blocking(move || {
            let traces = tracer_provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT);
            let metrics = meter_provider.shutdown_with_timeout(SHUTDOWN_TIMEOUT);
            (traces, metrics)
        })
        .await;
        match flushed {
            Ok((Ok(()), Ok(()))) => {}
            Ok((traces, metrics)) => {
                eprintln!("telemetry flush at exit: traces {traces:?}, metrics {metrics:?}")
            }
            Err(error) => eprintln!("telemetry flush at exit did not finish: {error}"),
        }
    }
}

/// The bound on the flush at exit, so an unreachable collector cannot hold up a shutdown.
const SHUTDOWN_TIMEOUT: Duration = Duration::from_secs(5);

/// A meter whose instruments record nothing, for libraries used without [`install`] (tests,
/// the deterministic simulation).
pub fn noop_meter() -> Meter {
    opentelemetry::metrics::noop::NoopMeterProvider::new().meter("noop")
}
