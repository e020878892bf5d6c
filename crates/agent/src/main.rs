//! `canton-agent`: the sidecar beside one Canton node. Reads its configuration, runs until
//! SIGTERM or SIGINT, stops within `shutdown.grace` and exits 0.
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use canton_agent::{Agent, AgentConfig, AgentMetrics};
use clap::Parser;
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// The canton-agent sidecar: probes, heartbeats, node state and the signed command path against one Canton node.
#[derive(Parser, Debug)]
#[command(version)]
struct Args {
    /// The agent's TOML configuration; `CANTON_AGENT__<SECTION>__<KEY>` variables override it.
    #[arg(long, short, env = "CANTON_AGENT_CONFIG")]
    config: PathBuf,
    /// Check the configuration, print it and exit.
    #[arg(long)]
    check_config: bool,
    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t)]
    log_format: sidecar_telemetry::LogFormat,
    /// Serve Prometheus text on `http://<addr>/metrics` (e.g. `127.0.0.1:9464`); off without it.
    #[arg(long, env = "CANTON_AGENT_METRICS_LISTEN")]
    metrics_listen: Option<std::net::SocketAddr>,
}

/// Exit status of a configuration the agent cannot use (sysexits' EX_CONFIG).
const EXIT_CONFIG: u8 = 78;

fn main() -> anyhow::Result<ExitCode> {
    let args = Args::parse();
    let config = match AgentConfig::load(&args.config) {
        Ok(config) => config,
        Err(error) => {
            eprintln!("canton-agent: {error}");
            return Ok(ExitCode::from(EXIT_CONFIG));
        }
    };
    let trust = match &config.commands {
        Some(path) => match canton_agent::commands::TrustMaterial::load(
            &path.trust,
            &config.network,
            &config.node,
            canton_agent::commands::unix_ms_now(),
        ) {
            Ok(trust) => Some(trust),
            Err(error) => {
                eprintln!("canton-agent: {error}");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
        },
        None => None,
    };
    if args.check_config {
        println!("{config:#?}");
        return Ok(ExitCode::SUCCESS);
    }
    // Two workers: a probe stuck in blocking code still leaves one for the heartbeat ticker.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async {
        let telemetry = match sidecar_telemetry::install("canton-agent", args.log_format) {
            Ok(telemetry) => telemetry,
            Err(error) => {
                eprintln!("canton-agent: {error}");
                return Ok(ExitCode::from(EXIT_CONFIG));
            }
        };
        // Crash points exist for the kill-at-every-step tests and are inert unless FAILPOINTS is set.
        let _crash_points = std::env::var_os("FAILPOINTS").map(|points| {
            tracing::warn!(
                ?points,
                "FAILPOINTS set: this agent kills itself at the named crash points"
            );
            fail::FailScenario::setup()
        });
        let outcome = run(config, trust, &telemetry, args.metrics_listen).await;
        telemetry.shutdown().await;
        outcome.map(|()| ExitCode::SUCCESS)
    })
}

async fn run(
    config: AgentConfig,
    trust: Option<canton_agent::commands::TrustMaterial>,
    telemetry: &sidecar_telemetry::Telemetry,
    metrics_listen: Option<std::net::SocketAddr>,
) -> anyhow::Result<()> {
    let mut terminate =
        signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let shutdown = CancellationToken::new();
    let metrics = AgentMetrics::new(&telemetry.meter(), config.node.as_str());
    if let Some(addr) = metrics_listen {
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("binding --metrics-listen {addr}"))?;
        tracing::info!(addr = %listener.local_addr()?, "serving /metrics");
        let stop = shutdown.clone();
        tokio::spawn(sidecar_telemetry::metrics_http::serve(
            listener,
            telemetry.metrics_text(),
            async move { stop.cancelled().await },
        ));
    }
    let probes = canton_agent::probes::from_config(&config)
        .context("building the Canton client from the [canton] section")?;
    tracing::info!(
        version = env!("CARGO_PKG_VERSION"),
        network = %config.network,
        node = %config.node,
        kind = %config.kind,
        probes = probes.len(),
        "canton-agent started"
    );
    let commands = config.commands.clone();
    let mut agent = Agent::new(config.clone(), probes, metrics);
    if let (Some(path), Some(trust)) = (commands, trust) {
        let registry = canton_agent::actions::standard_registry(
            &config,
            agent.board(),
            agent.identity().clone(),
        )
        .context("building the action handlers")?;
        agent = agent.with_commands(canton_agent::commands::CommandPath {
            trust,
            settings: path.commands,
            registry,
        });
    }
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => tracing::info!("SIGTERM: stopping"),
            _ = interrupt.recv() => tracing::info!("SIGINT: stopping"),
        }
        stop.cancel();
    });
    agent.run(shutdown).await?;
    tracing::info!("canton-agent stopped");
    Ok(())
}
