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
}

const EXIT_CONFIG: u8 = 78;
const EXIT_FAILPOINT: u8 = 86;

fn main() -> ExitCode {
    let args = Args::parse();
    let _telemetry = sidecar_telemetry::init(args.log_format);
    // Reads FAILPOINTS; every failpoint is off without it.
    let _failpoints = fail::FailScenario::setup();
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
    match runtime.block_on(run(config)) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("canton-coordinator: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(config: Config) -> anyhow::Result<ExitCode> {
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        "canton-coordinator starting"
    );
    let coordinator = Coordinator::start(config)
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
