use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use canton_coordinator::config::Config;
use canton_coordinator::service::Coordinator;
use clap::Parser;

/// The canton-coordinator: leadership with fencing, the durable runbook driver, node registry
/// and the coordinator API.
///
/// Exit codes: 0 stopped by SIGTERM/SIGINT; 1 failed at start (NATS, keys, network
/// configuration); 78 invalid configuration; 86 stopped by a failpoint (FAILPOINTS, drills only).
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The TOML configuration file.
    #[arg(long, env = "CANTON_COORDINATOR_CONFIG")]
    config: PathBuf,
    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t)]
    log_format: sidecar_telemetry::LogFormat,
    /// Serve Prometheus text on `http://<addr>/metrics` (e.g. `127.0.0.1:9465`); off without it.
    #[arg(long, env = "CANTON_COORDINATOR_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
}

const EXIT_CONFIG: u8 = 78;
const EXIT_FAILPOINT: u8 = 86;

fn main() -> ExitCode {
    let args = Args::parse();
    let config = match Config::load(&args.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("canton-coordinator: {error}");
            return ExitCode::from(EXIT_CONFIG);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("canton-coordinator: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let telemetry = match sidecar_telemetry::install("canton-coordinator", args.log_format) {
            Ok(telemetry) => telemetry,
            Err(error) => {
                eprintln!("canton-coordinator: {error}");
                return ExitCode::from(EXIT_CONFIG);
            }
        };
        // Reads FAILPOINTS; every failpoint is off without it.
        let _failpoints = fail::FailScenario::setup();
        let outcome = run(config, &telemetry, args.metrics_listen).await;
        telemetry.shutdown().await;
        match outcome {
            Ok(code) => code,
            Err(error) => {
                eprintln!("canton-coordinator: {error:#}");
                ExitCode::FAILURE
            }
        }
    })
}

async fn run(
    config: Config,
    telemetry: &sidecar_telemetry::Telemetry,
    metrics_listen: Option<std::net::SocketAddr>,
) -> anyhow::Result<ExitCode> {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "canton-coordinator starting"
    );
    let stop_metrics = tokio_util::sync::CancellationToken::new();
    if let Some(addr) = metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding --metrics-listen {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "serving /metrics");
        let stop = stop_metrics.clone();
        tokio::spawn(sidecar_telemetry::metrics_http::serve(
            listener,
            telemetry.metrics_text(),
            async move { stop.cancelled().await },
        ));
    }
    let _stop_metrics = stop_metrics.drop_guard();
    let coordinator = Coordinator::start_observed(config, telemetry.meter())
        .await
        .context("starting the coordinator")?;
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
        () = coordinator.crashed() => {
            // As if the process died here: no cleanup, no lease release.
            std::process::exit(i32::from(EXIT_FAILPOINT));
        }
    }
    tracing::info!("canton-coordinator stopping");
    Ok(ExitCode::SUCCESS)
}
