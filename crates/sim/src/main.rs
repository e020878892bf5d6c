//! canton-sim: a Canton stand-in node on Postgres that serves the same admin API for tests and the demo.
use std::path::PathBuf;

use anyhow::Context;
use canton_sim::network::{LaunchOptions, NetworkSpec, PostgresTarget, SimNetwork};
use canton_sim::{NodeConfig, NodeKind};
use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;

mod migrate;

/// canton-sim: a Canton stand-in node on Postgres that serves the same admin API for tests and the demo.
#[derive(Parser, Debug)]
#[command(version, args_conflicts_with_subcommands = true)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Kind of node to run.
    #[arg(long, value_enum)]
    kind: Option<NodeKind>,
    /// The node's TOML config.
    #[arg(long)]
    config: Option<PathBuf>,
    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t, global = true)]
    log_format: sidecar_telemetry::LogFormat,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Starts a whole topology from one file, prints its endpoints as JSON and runs until
    /// interrupted (SIGINT/SIGTERM), then stops every node.
    Network {
        /// The topology file.
        file: PathBuf,
        /// Postgres server for the node databases (`postgres://user@host:port`); default: the
        /// file's `postgres`, else a private cluster started for the network.
        #[arg(long)]
        postgres: Option<String>,
        /// Where node configs and logs go (default: a temporary dir).
        #[arg(long)]
        work_dir: Option<PathBuf>,
    },
    /// Network disaster recovery of one participant and its app, as a redeploy with migration
    /// enabled: resets the participant's database (it must be off its synchronizer), then has
    /// the app import the migration dump. When the app is at the migration already it changes
    /// nothing. Prints one JSON line; exits non-zero on failure. The participant is left
    /// disconnected: connect it with the admin API (ReconnectSynchronizers) afterwards.
    Migrate {
        /// The participant's control endpoint (`host:port` or `http://host:port`).
        #[arg(long)]
        participant_control: String,
        /// The app's control endpoint (`host:port` or `http://host:port`).
        #[arg(long)]
        app_control: String,
        /// The migration dump file (JSON) taken from the app at the recovery timestamp.
        #[arg(long, env = "CS_MIGRATION_DUMP")]
        dump: PathBuf,
        /// The migration id the app moves to (default: the dump's `migration_id`).
        #[arg(long, env = "CS_MIGRATION_ID")]
        migration_id: Option<i64>,
    },
    /// Rehydration of a participant: replaces its database with a new, empty one keeping its
    /// identity (`POST /control/reset-database`); its synchronizers are registered again but
    /// not connected, so a reconnect replays its history from the sequencer. Refused while it
    /// is connected. Prints one JSON line; exits non-zero on failure.
    ResetDatabase {
        /// The participant's control endpoint (`host:port` or `http://host:port`).
        #[arg(long)]
        participant_control: String,
        /// Refuse unless the participant is this uid (the agent's hook passes it).
        #[arg(long, env = "CS_PARTICIPANT_UID")]
        expect_uid: Option<String>,
    },
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let _telemetry = sidecar_telemetry::init(args.log_format);
    let runtime = tokio::runtime::Runtime::new().context("starting the tokio runtime")?;
    match args.command {
        Some(Command::Network {
            file,
            postgres,
            work_dir,
        }) => runtime.block_on(run_network(file, postgres, work_dir)),
        Some(Command::Migrate {
            participant_control,
            app_control,
            dump,
            migration_id,
        }) => {
            let outcome = runtime.block_on(migrate::run(migrate::Options {
                participant_control,
                app_control,
                dump,
                migration_id,
            }));
            drop(runtime);
            if let Err(e) = outcome {
                // One readable line for the operator (the hook's caller), no backtrace.
                eprintln!("canton-sim migrate: {e:#}");
                drop(_telemetry);
                std::process::exit(1);
            }
            Ok(())
        }
        Some(Command::ResetDatabase {
            participant_control,
            expect_uid,
        }) => {
            let outcome =
                runtime.block_on(migrate::reset(&participant_control, expect_uid.as_deref()));
            drop(runtime);
            if let Err(e) = outcome {
                eprintln!("canton-sim reset-database: {e:#}");
                drop(_telemetry);
                std::process::exit(1);
            }
            Ok(())
        }
        None => {
            let (Some(kind), Some(config)) = (args.kind, args.config) else {
                anyhow::bail!(
                    "give --kind participant|sequencer|mediator|app and --config FILE, or the `network FILE` subcommand"
                );
            };
            let config = NodeConfig::load(&config, kind)?;
            runtime.block_on(run_node(config))
        }
    }
}

async fn run_node(config: NodeConfig) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let signals = stop_signals()?;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        signals.await;
        stop.cancel();
    });
    let node = config.id.clone();
    canton_sim::node::run(config, shutdown)
        .await
        .with_context(|| format!("node {node}"))?;
    tracing::info!("stopped");
    Ok(())
}

/// Installs the SIGTERM and SIGINT handlers at once (a signal that arrived before they were
/// in place would kill the process instead of stopping it cleanly) and returns the wait for
/// either.
fn stop_signals() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut interrupt = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    Ok(async move {
        tokio::select! {
            _ = term.recv() => {}
            _ = interrupt.recv() => {}
        }
    })
}

async fn run_network(
    file: PathBuf,
    postgres: Option<String>,
    work_dir: Option<PathBuf>,
) -> anyhow::Result<()> {
    // Installed first: a stop requested while the nodes start (or as soon as the endpoints are
    // printed) stops them all once they are up, instead of orphaning them.
    let signals = stop_signals()?;
    let spec = NetworkSpec::from_file(&file)?;
    let binary = std::env::current_exe().context("locating the canton-sim binary")?;
    let url = postgres.or_else(|| spec.postgres.clone());
    let (target, _private) = match url {
        Some(url) => (PostgresTarget::from_url(&url)?, None),
        None => {
            let cluster = tokio::task::spawn_blocking(testkit::Postgres::start)
                .await
                .context("starting a private Postgres")?
                .context("starting a private Postgres")?;
            (PostgresTarget::of(&cluster), Some(cluster))
        }
    };
    let network = tokio::task::spawn_blocking(move || {
        SimNetwork::start(
            &spec,
            LaunchOptions {
                postgres: target,
                binary: &binary,
                work_dir,
            },
        )
    })
    .await
    .context("starting the network")??;
    println!("{}", serde_json::to_string_pretty(&network.endpoints())?);
    signals.await;
    tokio::task::spawn_blocking(move || network.stop())
        .await
        .context("stopping the network")??;
    tracing::info!("network stopped");
    Ok(())
}
