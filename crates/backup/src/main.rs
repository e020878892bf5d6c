//! `sidecar-backup`: one backup, verify or leftover kill by hand, outside the coordinator
//! (operators, and tests that need a backup process to crash). Events are printed as JSON lines.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use futures::future::BoxFuture;
use sidecar_backup::{
    BackupConfig, BackupJob, Backups, ChildInfo, Database, NodeKind, NodeRef, Observer,
    ProcessGroup, Progress, SqlPointSource, kill_process_group,
};
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(version, about = "Backups of one Canton node's database, by hand")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// pg_dump the node's database into <root>/<set>/<node>.dump with its manifest.
    Backup {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        set: String,
        #[arg(long)]
        node: String,
        /// participant, sequencer, mediator or app.
        #[arg(long)]
        kind: String,
        #[arg(long, default_value = "default")]
        organisation: String,
        /// For an app: the participant it reads from.
        #[arg(long)]
        participant: Option<String>,
        #[arg(long)]
        command_id: String,
        /// libpq connection string or postgres:// URL of the node's database.
        #[arg(long)]
        database: String,
        #[arg(long)]
        pg_bin_dir: Option<PathBuf>,
        /// SELECT returning (sequencer_ts_micros, ledger_offset); default per kind.
        #[arg(long)]
        snapshot_point_query: Option<String>,
        #[arg(long, default_value = "2s", value_parser = humantime::parse_duration)]
        progress_interval: std::time::Duration,
    },
    /// Check the manifests of a set against their files.
    Verify {
        #[arg(long)]
        root: PathBuf,
        #[arg(long)]
        set: String,
        #[arg(long)]
        node: Vec<String>,
    },
    /// Kill a process group a crashed run left behind.
    KillGroup {
        #[arg(long)]
        pgid: u32,
        #[arg(long)]
        leader_start_ticks: Option<u64>,
    },
}

/// Prints every event as one JSON line on stdout.
struct PrintingObserver;

fn print_line(value: serde_json::Value) {
    println!("{value}");
}

impl Observer for PrintingObserver {
    fn child_started<'a>(&'a self, child: &'a ChildInfo) -> BoxFuture<'a, Result<(), String>> {
        print_line(serde_json::json!({
            "event": "child_started",
            "what": child.what,
            "pgid": child.group.pgid,
            "leader_start_ticks": child.group.leader_start_ticks,
        }));
        Box::pin(async { Ok(()) })
    }

    fn progress(&self, progress: Progress) {
        print_line(serde_json::json!({
            "event": "progress",
            "phase": progress.phase.as_str(),
            "bytes": progress.bytes,
        }));
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Command::Backup {
            root,
            set,
            node,
            kind,
            organisation,
            participant,
            command_id,
            database,
            pg_bin_dir,
            snapshot_point_query,
            progress_interval,
        } => {
            let kind: NodeKind = kind.parse()?;
            let database = Database::new(&database)?;
            let point =
                SqlPointSource::for_kind(database.clone(), kind, snapshot_point_query.as_deref())?;
            let mut config = BackupConfig::new(root);
            config.pg_bin_dir = pg_bin_dir;
            config.progress_interval = progress_interval;
            let backups = Backups::new(config)?;
            let node = NodeRef {
                id: node,
                kind,
                organisation,
                participant,
                replica: None,
            };
            let job = BackupJob {
                set: &set,
                node: &node,
                command_id: &command_id,
                database: &database,
                point: &point,
            };
            let cancel = CancellationToken::new();
            let interrupt = cancel.clone();
            tokio::spawn(async move {
                if tokio::signal::ctrl_c().await.is_ok() {
                    interrupt.cancel();
                }
            });
            let manifest = backups.backup(&job, &PrintingObserver, &cancel).await?;
            print_line(serde_json::json!({ "event": "done", "manifest": manifest }));
        }
        Command::Verify { root, set, node } => {
            let backups = Backups::new(BackupConfig::new(root))?;
            let manifests = backups.verify(&set, &node).await?;
            for manifest in manifests {
                print_line(serde_json::json!({ "event": "verified", "manifest": manifest }));
            }
        }
        Command::KillGroup {
            pgid,
            leader_start_ticks,
        } => {
            let outcome = kill_process_group(ProcessGroup {
                pgid,
                leader_start_ticks,
            })
            .await
            .context("killing the leftover group")?;
            print_line(serde_json::json!({ "event": "killed", "outcome": format!("{outcome:?}") }));
        }
    }
    Ok(())
}
