//! Child processes in their own process group: the group is reported to the caller before the
//! child is waited for (so a restarted agent can kill leftovers), killed as a whole on
//! cancellation or drop, and its output captured in files (a hook that leaves a daemon behind
//! holding its stdout must not keep us reading a pipe forever).

use std::ffi::OsString;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

use crate::error::{Error, ErrorKind, Result};

/// Bytes of stdout kept (status and snapshot commands print a few lines).
const STDOUT_LIMIT: u64 = 1024 * 1024;
/// Bytes of stderr quoted in errors.
const STDERR_TAIL: u64 = 4096;
/// The gate every child starts behind (see [`run_child`]).
const GATE_SHELL: &str = "/bin/sh";
const GATE_SCRIPT: &str = r#"read -r go || exit 125; exec "$0" "$@""#;
/// How long a killed group may take to disappear.
const KILL_WAIT: Duration = Duration::from_secs(10);

/// A child's process group as the agent journals it. The leader's start time (clock ticks since
/// boot, from `/proc/<pid>/stat`) tells our group from a later one that reused the number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessGroup {
    pub pgid: u32,
    pub leader_start_ticks: Option<u64>,
}

/// What [`kill_process_group`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GroupKill {
    /// Nothing of the group was left.
    NotRunning,
    /// Members were left and are gone now.
    Killed,
}

/// A running child, as reported to [`Observer::child_started`].
#[derive(Clone, Debug)]
pub struct ChildInfo {
    /// What the child does, e.g. `pg_dump of participant1`.
    pub what: String,
    pub program: PathBuf,
    pub group: ProcessGroup,
}

/// Progress of a long step (bytes of the dump written so far).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Progress {
    pub phase: Phase,
    pub bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    Dumping,
    Restoring,
}

impl Phase {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dumping => "dumping",
            Self::Restoring => "restoring",
        }
    }
}

/// The caller's view of an action: where child process groups are recorded (the agent's
/// journal) and where progress goes (progress acks).
pub trait Observer: Send + Sync {
    /// Called after the child started and before it is waited for. An error kills the child's
    /// group and fails the action: a child nobody recorded could outlive a crash unnoticed.
    fn child_started<'a>(
        &'a self,
        child: &'a ChildInfo,
    ) -> BoxFuture<'a, std::result::Result<(), String>>;

    /// Called once the child exited or its group was killed.
    fn child_finished(&self, _child: &ChildInfo) {}

    fn progress(&self, _progress: Progress) {}
}

/// An observer that records nothing (tools and tests that journal nothing).
pub struct NoObserver;

impl Observer for NoObserver {
    fn child_started<'a>(
        &'a self,
        _child: &'a ChildInfo,
    ) -> BoxFuture<'a, std::result::Result<(), String>> {
        Box::pin(async { Ok(()) })
    }
}

/// A command to run as a child.
#[derive(Clone, Debug)]
pub struct ChildCommand {
    pub what: String,
    pub program: PathBuf,
    pub args: Vec<OsString>,
    pub env: Vec<(String, OsString)>,
}

impl ChildCommand {
    pub fn new(what: impl Into<String>, program: impl Into<PathBuf>) -> Self {
        Self {
            what: what.into(),
            program: program.into(),
            args: Vec::new(),
            env: Vec::new(),
        }
    }

    pub fn arg(mut self, arg: impl Into<OsString>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn args<I, A>(mut self, args: I) -> Self
    where
        I: IntoIterator<Item = A>,
        A: Into<OsString>,
    {
        self.args.extend(args.into_iter().map(Into::into));
        self
    }

    pub fn env(mut self, key: impl Into<String>, value: impl Into<OsString>) -> Self {
        self.env.push((key.into(), value.into()));
        self
    }

    /// The command line for messages (arguments only; secrets travel in the environment).
    pub fn display(&self) -> String {
        let mut line = self.program.display().to_string();
        for arg in &self.args {
            line.push(' ');
            line.push_str(&arg.to_string_lossy());
        }
        line
    }
}

/// A finished child's exit status and captured output.
#[derive(Debug)]
pub struct ChildOutput {
    pub status: ExitStatus,
    pub stdout: String,
    pub stderr_tail: String,
}

impl ChildOutput {
    /// This output if the child exited 0, else a [`ErrorKind::Command`] error quoting stderr.
    pub fn success(self, command: &ChildCommand) -> Result<Self> {
        if self.status.success() {
            return Ok(self);
        }
        Err(Error::new(
            ErrorKind::Command,
            format!(
                "{} (`{}`) exited with {}: {}",
                command.what,
                command.display(),
                self.status,
                tail_or_none(&self.stderr_tail)
            ),
        ))
    }
}

fn tail_or_none(text: &str) -> &str {
    let text = text.trim();
    if text.is_empty() {
        "(no stderr output)"
    } else {
        text
    }
}

/// Kills the group on drop unless disarmed: dropping the future that runs a child (a timeout,
/// an aborted task) must not leave the child running.
struct GroupGuard {
    group: Option<ProcessGroup>,
}

impl GroupGuard {
    fn disarm(&mut self) {
        self.group = None;
    }
}

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(group) = self.group.take() {
            signal_group(group.pgid, Signal::SIGKILL);
        }
    }
}

/// Runs `command` to completion in its own process group. The child is held at a gate until
/// [`Observer::child_started`] recorded its group, so it does no work unrecorded. Cancelling
/// `cancel` (or dropping the returned future) kills the whole group. A non-zero exit is returned as the output, not as an
/// error (status commands use it); see [`ChildOutput::success`].
pub async fn run_child(
    command: &ChildCommand,
    observer: &dyn Observer,
    cancel: &CancellationToken,
) -> Result<ChildOutput> {
    if cancel.is_cancelled() {
        return Err(cancelled(command));
    }
    let stdout_file = capture_file(command)?;
    let stderr_file = capture_file(command)?;
    let program = resolve_program(command)?;
    // The child starts behind a gate: a shell that waits for one line on stdin, then execs the
    // program (same process, same group). The line is written only once the observer recorded
    // the group, so nothing works unrecorded; if we die first, the gate reads EOF and exits.
    let mut child = tokio::process::Command::new(GATE_SHELL)
        .arg("-c")
        .arg(GATE_SCRIPT)
        .arg(&program)
        .args(&command.args)
        .envs(command.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::piped())
        .stdout(Stdio::from(clone_file(&stdout_file, command)?))
        .stderr(Stdio::from(clone_file(&stderr_file, command)?))
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| {
            Error::with_source(
                ErrorKind::Command,
                format!(
                    "{}: cannot start `{}` through {GATE_SHELL}",
                    command.what,
                    command.display()
                ),
                e,
            )
        })?;
    let gate = child.stdin.take();
    let pid = child.id().ok_or_else(|| {
        Error::new(
            ErrorKind::Command,
            format!("{}: `{}` exited at once", command.what, command.display()),
        )
    })?;
    let group = ProcessGroup {
        pgid: pid,
        leader_start_ticks: start_ticks(pid),
    };
    let mut guard = GroupGuard { group: Some(group) };
    let info = ChildInfo {
        what: command.what.clone(),
        program: command.program.clone(),
        group,
    };
    tracing::debug!(what = %command.what, pgid = pid, "child started");
    if let Err(reason) = observer.child_started(&info).await {
        drop(guard);
        let _ = child.wait().await;
        observer.child_finished(&info);
        return Err(Error::new(
            ErrorKind::Observer,
            format!(
                "{}: could not record process group {pid}, so it was killed: {reason}",
                command.what
            ),
        ));
    }
    if let Some(mut gate) = gate {
        use tokio::io::AsyncWriteExt as _;
        // A child that died already (killed from outside) shows in its exit status below.
        let _ = gate.write_all(b"go\n").await;
    }
    let status = tokio::select! {
        status = child.wait() => status.map_err(|e| Error::io(format!("{}: waiting for the child", command.what), e)),
        () = cancel.cancelled() => {
            drop(guard);
            let _ = child.wait().await;
            observer.child_finished(&info);
            return Err(cancelled(command));
        }
    };
    // A hook may leave a daemon in its group on purpose (a start hook); only an unfinished
    // child is killed.
    guard.disarm();
    observer.child_finished(&info);
    let status = status?;
    Ok(ChildOutput {
        status,
        stdout: read_captured(stdout_file, 0, STDOUT_LIMIT),
        stderr_tail: read_captured(stderr_file, STDERR_TAIL, STDERR_TAIL),
    })
}

fn cancelled(command: &ChildCommand) -> Error {
    Error::new(
        ErrorKind::Cancelled,
        format!("{} was cancelled; nothing was published", command.what),
    )
}

fn capture_file(command: &ChildCommand) -> Result<std::fs::File> {
    tempfile::tempfile().map_err(|e| {
        Error::io(
            format!("{}: creating a file for the child's output", command.what),
            e,
        )
    })
}

fn clone_file(file: &std::fs::File, command: &ChildCommand) -> Result<std::fs::File> {
    file.try_clone()
        .map_err(|e| Error::io(format!("{}: duplicating the output file", command.what), e))
}

/// Up to `limit` bytes of the file: from the start, or the last `from_end` bytes.
fn read_captured(mut file: std::fs::File, from_end: u64, limit: u64) -> String {
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let start = if from_end > 0 {
        len.saturating_sub(from_end)
    } else {
        0
    };
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_ok() {
        let _ = file.take(limit).read_to_end(&mut bytes);
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// Start time of process `pid` in clock ticks since boot (field 22 of `/proc/<pid>/stat`).
fn start_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields = proc_stat_fields(&stat)?;
    // Fields after the command name start at field 3 (state); start time is field 22.
    fields.get(22 - 3)?.parse().ok()
}

/// The fields of a `/proc/<pid>/stat` line after `(comm)`, which may itself contain spaces.
fn proc_stat_fields(stat: &str) -> Option<Vec<&str>> {
    let end = stat.rfind(')')?;
    Some(stat.get(end + 1..)?.split_whitespace().collect())
}

fn signal_group(pgid: u32, signal: Signal) -> Option<Errno> {
    let Ok(raw) = i32::try_from(pgid) else {
        return Some(Errno::EINVAL);
    };
    if raw <= 1 {
        return Some(Errno::EINVAL);
    }
    killpg(Pid::from_raw(raw), signal).err()
}

/// Whether any member of process group `pgid` is alive. Zombies do not count: an orphan is
/// reparented to whatever reaps on this host, and some init processes never do.
pub fn process_group_alive(pgid: u32) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return signal_group(pgid, Signal::SIGCONT).is_none_or(|e| e != Errno::ESRCH);
    };
    entries.flatten().any(|entry| {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            return false;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            return false;
        };
        let Some(fields) = proc_stat_fields(&stat) else {
            return false;
        };
        // Field 3 is the state, field 5 the process group.
        let state = fields.first().copied().unwrap_or("");
        let pgrp = fields.get(5 - 3).and_then(|p| p.parse::<u32>().ok());
        pgrp == Some(pgid) && state != "Z" && state != "X"
    })
}

/// Kills what is left of a process group an earlier agent journalled, and waits until it is
/// gone. Safe when the group is gone already, and when its number was reused: a live leader
/// with another start time is a different group and is left alone (while any member of our
/// group lived, the kernel could not hand the number out again).
pub async fn kill_process_group(group: ProcessGroup) -> Result<GroupKill> {
    if let Some(expected) = group.leader_start_ticks
        && let Some(actual) = start_ticks(group.pgid)
        && actual != expected
    {
        return Ok(GroupKill::NotRunning);
    }
    if !process_group_alive(group.pgid) {
        return Ok(GroupKill::NotRunning);
    }
    match signal_group(group.pgid, Signal::SIGKILL) {
        None => {}
        Some(Errno::ESRCH) => return Ok(GroupKill::NotRunning),
        Some(errno) => {
            return Err(Error::new(
                ErrorKind::Command,
                format!(
                    "cannot kill leftover process group {}: {errno}; kill it by hand (kill -9 -- -{})",
                    group.pgid, group.pgid
                ),
            ));
        }
    }
    wait_group_gone(group.pgid).await?;
    Ok(GroupKill::Killed)
}

async fn wait_group_gone(pgid: u32) -> Result<()> {
    let started = Instant::now();
    while process_group_alive(pgid) {
        if started.elapsed() > KILL_WAIT {
            return Err(Error::new(
                ErrorKind::Command,
                format!(
                    "process group {pgid} is still alive {KILL_WAIT:?} after SIGKILL; check `ps -g {pgid}`"
                ),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

/// The program's path: as given when it names a directory, else the first match on `PATH`.
fn resolve_program(command: &ChildCommand) -> Result<PathBuf> {
    let program = &command.program;
    let found = if program.components().count() > 1 {
        is_executable(program).then(|| program.clone())
    } else {
        std::env::var_os("PATH").and_then(|path| {
            std::env::split_paths(&path)
                .map(|dir| dir.join(program))
                .find(|candidate| is_executable(candidate))
        })
    };
    found.ok_or_else(|| {
        Error::new(
            ErrorKind::Command,
            format!(
                "{}: program {} not found or not executable; install it or give its full path",
                command.what,
                program.display()
            ),
        )
    })
}

/// Whether `path` names an executable file.
pub(crate) fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}
