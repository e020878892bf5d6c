//! The agent's task structure.
//!
//! ```text
//! probe runners (one task each) ──► ProbeBoard ──► heartbeat ticker ──► cs.<net>.hb.<node>
//!                                             └──► node state writer ──► KV cs_<net>_nodes
//! ```
//! Probes start at once; the bus tasks start when NATS is first reached. Every task gets a
//! [`Context`] and stops on its shutdown token. A task that ends on its own is a bug: the agent
//! then stops everything and reports it, so the supervisor restarts the process.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use sidecar_bus::Names;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::clock::{SystemClock, WallClock};
use crate::commands::{CommandPath, run_commands};
use crate::config::AgentConfig;
use crate::connection::Link;
use crate::context::Context;
use crate::heartbeat::run_heartbeats;
use crate::metrics::AgentMetrics;
use crate::probe::{Probe, ProbeBoard, run_probe};
use crate::report::Identity;
use crate::state::run_node_state;

/// Bound on each JetStream request (KV writes), so a stalled server cannot hold a task.
const JETSTREAM_TIMEOUT: Duration = Duration::from_secs(5);

/// Why the agent stopped other than by request.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("agent task `{task}` ended unexpectedly: {detail}")]
    TaskEnded { task: &'static str, detail: String },
}

/// One agent beside one node.
pub struct Agent {
    config: Arc<AgentConfig>,
    probes: Vec<Arc<dyn Probe>>,
    metrics: AgentMetrics,
    identity: Identity,
    board: ProbeBoard,
    commands: Option<CommandPath>,
    clock: Arc<dyn WallClock>,
}

impl Agent {
    pub fn new(config: AgentConfig, probes: Vec<Arc<dyn Probe>>, metrics: AgentMetrics) -> Self {
        let identity = Identity {
            network: config.network.clone(),
            node: config.node.clone(),
            kind: config.kind,
            organisation: config
                .commands
                .as_ref()
                .map(|path| path.trust.organisation.clone())
                .unwrap_or_default(),
            participant: config.participant.as_ref().map(|p| p.as_str().to_owned()),
            app_role: config
                .splice
                .as_ref()
                .map(|splice| splice.role.as_str().to_owned()),
            ack_key_id: config
                .commands
                .as_ref()
                .map(|path| path.trust.ack_key_id.clone())
                .unwrap_or_default(),
            boot_id: uuid::Uuid::now_v7().to_string(),
            agent_version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let board = ProbeBoard::new(&probes);
        Self {
            config: Arc::new(config),
            probes,
            metrics,
            identity,
            board,
            commands: None,
            clock: Arc::new(SystemClock),
        }
    }

    /// Enables the signed command path (without it the agent only probes and heartbeats).
    pub fn with_commands(mut self, commands: CommandPath) -> Self {
        self.commands = Some(commands);
        self
    }

    /// Replaces the command path's wall clock; tests use it to play a host whose clock is off.
    pub fn with_clock(mut self, clock: Arc<dyn WallClock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The probes' latest results (readable while the agent runs).
    pub fn board(&self) -> ProbeBoard {
        self.board.clone()
    }

    /// Runs until `shutdown` is cancelled, then stops every task within `shutdown.grace`.
    pub async fn run(mut self, shutdown: CancellationToken) -> Result<(), AgentError> {
        if self.commands.is_none() {
            tracing::info!("no [trust] section: commands are disabled; heartbeats and probes only");
        }
        let tasks_stop = shutdown.child_token();
        let mut tasks: JoinSet<&'static str> = JoinSet::new();
        for probe in &self.probes {
            let (probe, board, metrics, stop) = (
                Arc::clone(probe),
                self.board.clone(),
                self.metrics.clone(),
                tasks_stop.clone(),
            );
            tasks.spawn(async move {
                run_probe(probe, board, metrics, stop).await;
                "probe"
            });
        }

        let client_name = format!(
            "canton-agent {}/{}",
            self.identity.network, self.identity.node
        );
        let inbox = Names::new(self.identity.network.clone()).agent_inbox(&self.identity.node);
        let connecting = Link::establish(
            &self.config.nats,
            &client_name,
            &inbox,
            &self.metrics,
            &tasks_stop,
        );
        let outcome = tokio::select! {
            link = connecting => match link {
                Some(link) => {
                    let context = self.context(link, tasks_stop.clone());
                    spawn_bus_tasks(&mut tasks, &context, self.commands.take());
                    watch(&mut tasks, &shutdown).await
                }
                None => Ok(()),
            },
            ended = tasks.join_next(), if !tasks.is_empty() => task_ended(ended, &shutdown),
        };
        tasks_stop.cancel();
        self.drain(tasks).await;
        outcome
    }

    fn context(&self, link: Link, shutdown: CancellationToken) -> Context {
        let jetstream = jetstream::ContextBuilder::new()
            .timeout(JETSTREAM_TIMEOUT)
            .build(link.client.clone());
        Context {
            config: Arc::clone(&self.config),
            identity: self.identity.clone(),
            names: Names::new(self.identity.network.clone()),
            link,
            jetstream,
            board: self.board.clone(),
            metrics: self.metrics.clone(),
            clock: Arc::clone(&self.clock),
            shutdown,
        }
    }

    /// Waits up to the grace period for the tasks' last words (the final node state), then
    /// aborts what is left and flushes the client.
    async fn drain(&self, mut tasks: JoinSet<&'static str>) {
        let grace = self.config.shutdown_grace;
        let drained =
            tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} }).await;
        if drained.is_err() {
            tracing::warn!(grace = ?grace, left = tasks.len(), "tasks did not stop in time; aborting them");
            tasks.abort_all();
        }
    }
}

fn spawn_bus_tasks(
    tasks: &mut JoinSet<&'static str>,
    context: &Context,
    commands: Option<CommandPath>,
) {
    if let Some(commands) = commands {
        let command_context = context.clone();
        tasks.spawn(async move {
            if let Err(error) = run_commands(command_context, commands).await {
                tracing::error!(%error, "command path stopped; not accepting commands");
            }
            "commands"
        });
    }
    let heartbeat_context = context.clone();
    tasks.spawn(async move {
        run_heartbeats(heartbeat_context).await;
        "heartbeat"
    });
    let state_context = context.clone();
    tasks.spawn(async move {
        run_node_state(state_context).await;
        "node state"
    });
}

/// Waits for shutdown; a task that ends first is an error.
async fn watch(
    tasks: &mut JoinSet<&'static str>,
    shutdown: &CancellationToken,
) -> Result<(), AgentError> {
    tokio::select! {
        biased;
        () = shutdown.cancelled() => Ok(()),
        ended = tasks.join_next() => task_ended(ended, shutdown),
    }
}

/// A task that ended: expected once shutdown began (the shutdown token is also the tasks'),
/// a bug before.
fn task_ended(
    ended: Option<Result<&'static str, tokio::task::JoinError>>,
    shutdown: &CancellationToken,
) -> Result<(), AgentError> {
    if shutdown.is_cancelled() {
        return Ok(());
    }
    Err(match ended {
        Some(Ok(task)) => AgentError::TaskEnded {
            task,
            detail: "returned before shutdown".to_owned(),
        },
        Some(Err(error)) => AgentError::TaskEnded {
            task: "unknown",
            detail: error.to_string(),
        },
        None => AgentError::TaskEnded {
            task: "all",
            detail: "no task left".to_owned(),
        },
    })
}
