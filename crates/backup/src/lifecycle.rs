//! Stopping and starting a node through configured hook commands (a systemd unit, docker,
//! `kubectl scale` run from outside the node's pod …), confirmed by a status command: a hook
//! that returned is not proof, the status command saying so within the wait is.

use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use tokio_util::sync::CancellationToken;

use crate::child::{NoObserver, Observer, run_child};
use crate::error::{Error, ErrorKind, Result};
use crate::liveness::{Activity, StoppedCheck};
use crate::template::CommandTemplate;

/// Placeholders of the stop hook.
pub const STOP_PLACEHOLDERS: &[&str] = &["node", "command_id", "grace_seconds"];
/// Placeholders of the start hook.
pub const START_PLACEHOLDERS: &[&str] = &["node", "command_id"];
/// Placeholders of the status command.
pub const STATUS_PLACEHOLDERS: &[&str] = &["node"];

/// Words the status command may print (the first of them on its first line counts, any case,
/// so `p1: stopped` works too).
const RUNNING_WORDS: &[&str] = &["running", "active", "true", "up", "started"];
const STOPPED_WORDS: &[&str] = &[
    "stopped", "inactive", "false", "down", "exited", "dead", "failed",
];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LifecycleConfig {
    /// `[lifecycle] stop`.
    pub stop: CommandTemplate,
    /// `[lifecycle] start`.
    pub start: CommandTemplate,
    /// `[lifecycle] status`: prints `running` or `stopped` (also `active`/`inactive`, as
    /// `systemctl is-active` does, or `true`/`false`, as `docker inspect -f '{{.State.Running}}'`);
    /// without such a word its exit status decides, as for `is-active` and LSB status
    /// commands: 0 running, 3 stopped.
    pub status: CommandTemplate,
    /// How long the node may take to reach the state after the hook returned.
    pub wait: Duration,
    /// How often the status command runs while waiting.
    pub poll: Duration,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NodeStatus {
    Running,
    Stopped,
}

impl NodeStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Running => "running",
            Self::Stopped => "stopped",
        }
    }
}

/// What a stop or start did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transition {
    /// The node was in the state already; no hook ran.
    AlreadyThere,
    /// The hook ran and the status command confirmed the state after `took`.
    Done { took: Duration },
}

/// The lifecycle hooks of one node.
#[derive(Clone, Debug)]
pub struct Lifecycle {
    config: LifecycleConfig,
    node: String,
}

impl Lifecycle {
    pub fn new(config: LifecycleConfig, node: impl Into<String>) -> Result<Self> {
        if config.poll.is_zero() || config.wait.is_zero() {
            return Err(Error::config(
                "[lifecycle] wait and poll must be longer than zero",
            ));
        }
        Ok(Self {
            config,
            node: node.into(),
        })
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    /// Runs the status command once.
    pub async fn status(&self, cancel: &CancellationToken) -> Result<NodeStatus> {
        let command = self.config.status.render(
            format!("status command of node {}", self.node),
            &[("node", &self.node)],
        );
        let output = run_child(&command, &NoObserver, cancel).await?;
        if let Some(status) = status_from_output(&output.stdout, output.status.code()) {
            return Ok(status);
        }
        Err(Error::new(
            ErrorKind::Command,
            format!(
                "{} (`{}`) printed {:?} and exited with {}; it must print `running` or `stopped`, or exit 0 (running) or 3 (stopped) ({}); stderr: {}",
                command.what,
                command.display(),
                output.stdout.trim(),
                output.status,
                self.config.status.key(),
                output.stderr_tail.trim()
            ),
        ))
    }

    /// Stops the node and waits until the status command reports it stopped.
    pub async fn stop(
        &self,
        command_id: &str,
        grace: Duration,
        observer: &dyn Observer,
        cancel: &CancellationToken,
    ) -> Result<Transition> {
        let grace = grace.as_secs().to_string();
        let values = [
            ("node", self.node.as_str()),
            ("command_id", command_id),
            ("grace_seconds", grace.as_str()),
        ];
        self.transition(
            NodeStatus::Stopped,
            &self.config.stop,
            &values,
            observer,
            cancel,
        )
        .await
    }

    /// Starts the node and waits until the status command reports it running.
    pub async fn start(
        &self,
        command_id: &str,
        observer: &dyn Observer,
        cancel: &CancellationToken,
    ) -> Result<Transition> {
        let values = [("node", self.node.as_str()), ("command_id", command_id)];
        self.transition(
            NodeStatus::Running,
            &self.config.start,
            &values,
            observer,
            cancel,
        )
        .await
    }

    async fn transition(
        &self,
        target: NodeStatus,
        hook: &CommandTemplate,
        values: &[(&str, &str)],
        observer: &dyn Observer,
        cancel: &CancellationToken,
    ) -> Result<Transition> {
        if self.status(cancel).await? == target {
            return Ok(Transition::AlreadyThere);
        }
        let command = hook.render(format!("{} of node {}", hook.key(), self.node), values);
        run_child(&command, observer, cancel)
            .await?
            .success(&command)?;
        let started = Instant::now();
        loop {
            if self.status(cancel).await? == target {
                let took = started.elapsed();
                tracing::info!(node = %self.node, state = target.as_str(), ?took, "lifecycle hook confirmed");
                return Ok(Transition::Done { took });
            }
            if started.elapsed() >= self.config.wait {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "node {} is not {} {:?} after `{}` ({}) returned; check the hook and the node's logs, or raise [lifecycle] wait",
                        self.node,
                        target.as_str(),
                        self.config.wait,
                        command.display(),
                        hook.key()
                    ),
                ));
            }
            tokio::select! {
                () = tokio::time::sleep(self.config.poll) => {}
                () = cancel.cancelled() => {
                    return Err(Error::new(
                        ErrorKind::Cancelled,
                        format!("waiting for node {} to be {} was cancelled", self.node, target.as_str()),
                    ));
                }
            }
        }
    }
}

/// The status a status command's output and exit code stand for.
fn status_from_output(stdout: &str, exit_code: Option<i32>) -> Option<NodeStatus> {
    let first_line = stdout.lines().next().unwrap_or("");
    for word in first_line.split_whitespace() {
        let word = word
            .trim_matches(|c: char| !c.is_ascii_alphanumeric())
            .to_ascii_lowercase();
        if RUNNING_WORDS.contains(&word.as_str()) {
            return Some(NodeStatus::Running);
        }
        if STOPPED_WORDS.contains(&word.as_str()) {
            return Some(NodeStatus::Stopped);
        }
    }
    match exit_code {
        Some(0) => Some(NodeStatus::Running),
        Some(3) => Some(NodeStatus::Stopped),
        _ => None,
    }
}

impl StoppedCheck for Lifecycle {
    fn describe(&self) -> String {
        format!("status command of node {}", self.node)
    }

    fn check(&self) -> BoxFuture<'_, Result<Activity>> {
        Box::pin(async move {
            let cancel = CancellationToken::new();
            Ok(match self.status(&cancel).await? {
                NodeStatus::Stopped => Activity::Stopped,
                NodeStatus::Running => Activity::Running(format!(
                    "the status command says node {} is running",
                    self.node
                )),
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_words_then_exit_codes_decide() {
        let cases = [
            ("running\n", Some(1), Some(NodeStatus::Running)),
            ("inactive\n", Some(3), Some(NodeStatus::Stopped)),
            (
                "participant1: stopped\n",
                Some(3),
                Some(NodeStatus::Stopped),
            ),
            ("p1: running\n", Some(0), Some(NodeStatus::Running)),
            ("true\n", Some(0), Some(NodeStatus::Running)),
            ("", Some(3), Some(NodeStatus::Stopped)),
            ("", Some(0), Some(NodeStatus::Running)),
            ("maybe\n", Some(2), None),
            ("", None, None),
        ];
        for (stdout, code, expected) in cases {
            assert_eq!(
                status_from_output(stdout, code),
                expected,
                "{stdout:?} {code:?}"
            );
        }
    }
}
