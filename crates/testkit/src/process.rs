use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use crate::{Error, ErrorKind, Result};

/// A child process owned by a test. Its stdout and stderr go to a log file; it is stopped when
/// dropped (first `stop_signal`, then SIGKILL after a grace period), and when the drop happens
/// during a panic the tail of its log is printed so the failure explains itself.
pub struct ChildProcess {
    name: String,
    child: Child,
    log_path: PathBuf,
    log_start: u64,
    stop_signal: Signal,
}

impl ChildProcess {
    /// Starts `command` with its output appended to `log_path`.
    pub fn spawn(
        name: &str,
        mut command: Command,
        log_path: &Path,
        stop_signal: Signal,
    ) -> Result<Self> {
        let log = File::options()
            .create(true)
            .append(true)
            .open(log_path)
            .map_err(|e| {
                Error::io(
                    ErrorKind::Filesystem,
                    format!("opening log {}", log_path.display()),
                    e,
                )
            })?;
        let log_start = log.metadata().map(|m| m.len()).unwrap_or(0);
        let log_err = log
            .try_clone()
            .map_err(|e| Error::io(ErrorKind::Filesystem, "duplicating the log handle", e))?;
        command.stdin(Stdio::null()).stdout(log).stderr(log_err);
        let child = command.spawn().map_err(|e| {
            Error::io(
                ErrorKind::Spawn,
                format!("starting {name} ({command:?})"),
                e,
            )
        })?;
        Ok(Self {
            name: name.to_owned(),
            child,
            log_path: log_path.to_owned(),
            log_start,
            stop_signal,
        })
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// Whether the process is still running (not exited, not yet reaped).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Sends a signal (SIGSTOP/SIGCONT to pause, SIGKILL to crash, …).
    pub fn signal(&self, signal: Signal) -> Result<()> {
        kill(self.nix_pid(), signal).map_err(|e| {
            Error::new(
                ErrorKind::Child,
                format!(
                    "sending {signal} to {} (pid {}): {e}",
                    self.name,
                    self.pid()
                ),
            )
        })
    }

    /// Freezes the process with SIGSTOP and returns once the kernel reports it stopped, so
    /// whatever the caller does next really happens while it is frozen.
    pub fn pause(&self) -> Result<()> {
        self.signal(Signal::SIGSTOP)?;
        let stat_path = format!("/proc/{}/stat", self.pid());
        wait_until(
            &format!("{} stopped", self.name),
            Duration::from_secs(10),
            || {
                std::fs::read_to_string(&stat_path)
                    .ok()
                    .and_then(|stat| {
                        stat.rfind(')')
                            .map(|end| stat[end + 1..].trim_start().starts_with('T'))
                    })
                    .unwrap_or(false)
            },
        )?;
        Ok(())
    }

    /// Lets a paused process continue.
    pub fn resume(&self) -> Result<()> {
        self.signal(Signal::SIGCONT)
    }

    /// Kills the process and the processes it started with SIGKILL, as a machine crash would,
    /// and reaps it.
    pub fn kill(&mut self) {
        let descendants = descendants(self.pid());
        let _ = self.child.kill();
        for pid in descendants {
            let _ = kill(
                Pid::from_raw(i32::try_from(pid).unwrap_or(i32::MAX)),
                Signal::SIGKILL,
            );
        }
        let _ = self.child.wait();
    }

    /// Sends the stop signal and waits up to `grace` for a clean exit before SIGKILL.
    /// Returns whether the exit was clean (status 0 or terminated by the stop signal).
    pub fn stop(&mut self, grace: Duration) -> bool {
        if !self.is_running() {
            return true;
        }
        let _ = kill(self.nix_pid(), Signal::SIGCONT);
        let _ = kill(self.nix_pid(), self.stop_signal);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            match self.child.try_wait() {
                Ok(Some(status)) => return status.success() || status.code().is_none(),
                Ok(None) => std::thread::sleep(Duration::from_millis(10)),
                Err(_) => break,
            }
        }
        self.kill();
        false
    }

    /// Waits until `found` extracts a value from what this run of the process logged (earlier
    /// runs appending to the same log are ignored), failing early with the log's tail if
    /// the process exits first.
    pub fn wait_for_log<T>(
        &mut self,
        deadline: Duration,
        mut found: impl FnMut(&str) -> Option<T>,
    ) -> Result<T> {
        let start = Instant::now();
        let mut text = String::new();
        let mut offset = self.log_start;
        loop {
            if let Ok(mut file) = File::open(&self.log_path) {
                let _ = file.seek(SeekFrom::Start(offset));
                let mut chunk = String::new();
                if let Ok(read) = file.read_to_string(&mut chunk) {
                    offset += read as u64;
                    text.push_str(&chunk);
                }
            }
            if let Some(value) = found(&text) {
                return Ok(value);
            }
            if !self.is_running() {
                return Err(Error::new(
                    ErrorKind::Spawn,
                    format!(
                        "{} exited before it was ready; log tail:\n{}",
                        self.name,
                        self.log_tail(30)
                    ),
                ));
            }
            if start.elapsed() > deadline {
                return Err(Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "{} not ready after {:?}; log tail:\n{}",
                        self.name,
                        deadline,
                        self.log_tail(30)
                    ),
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The last `lines` lines of the child's log.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log_path).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    fn nix_pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id()).unwrap_or(i32::MAX))
    }
}

impl Drop for ChildProcess {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!(
                "--- last lines of {} (pid {}, log {}) ---\n{}\n---",
                self.name,
                self.pid(),
                self.log_path.display(),
                self.log_tail(40)
            );
        }
        self.stop(Duration::from_secs(5));
    }
}

/// Polls `condition` every 10 ms until it holds or `deadline` passes; returns how long it took,
/// so callers can log it. Synchronisation for tests without sleeping a fixed time.
pub fn wait_until(
    what: &str,
    deadline: Duration,
    mut condition: impl FnMut() -> bool,
) -> Result<Duration> {
    let start = Instant::now();
    loop {
        if condition() {
            return Ok(start.elapsed());
        }
        if start.elapsed() > deadline {
            return Err(Error::new(
                ErrorKind::Timeout,
                format!("{what}: not reached within {deadline:?}"),
            ));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Pids of all running descendants of `pid`, read from `/proc`.
fn descendants(pid: u32) -> Vec<u32> {
    let parents: Vec<(u32, u32)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let child: u32 = entry.file_name().to_str()?.parse().ok()?;
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            // The command name may contain spaces; fields after its closing parenthesis are fixed.
            let after_name = &stat[stat.rfind(')')? + 2..];
            let parent = after_name.split_whitespace().nth(1)?.parse().ok()?;
            Some((child, parent))
        })
        .collect();
    let mut found = vec![pid];
    let mut index = 0;
    while index < found.len() {
        let current = found[index];
        found.extend(
            parents
                .iter()
                .filter(|(_, parent)| *parent == current)
                .map(|(child, _)| *child),
        );
        index += 1;
    }
    found.remove(0);
    found
}
