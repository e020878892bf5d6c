//! Child process groups of actions: identified when recorded, killed at start-up when their
//! command was interrupted by a crash.
//!
//! A process id can be reused, so a group is killed only when it is provably ours: the kernel
//! has not rebooted since (children never outlive a reboot), and the group leader, if still
//! alive, started at the recorded time. A group whose leader died cannot have its id reused
//! while members remain, so signalling it reaches only our leftovers.

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::state::{ChildGroup, JournalState};

const KERNEL_BOOT_ID: &str = "/proc/sys/kernel/random/boot_id";

pub fn kernel_boot_id() -> Option<String> {
    std::fs::read_to_string(KERNEL_BOOT_ID)
        .ok()
        .map(|text| text.trim().to_owned())
}

/// Start time of process `pid` in clock ticks since boot (`/proc/<pid>/stat` field 22).
pub fn process_start(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name (field 2) may contain spaces and parentheses; fields after it are plain.
    let after_name = &stat[stat.rfind(')')? + 1..];
    after_name.split_whitespace().nth(19)?.parse().ok()
}

/// What happened to one recorded group.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Reaped {
    Killed,
    AlreadyGone,
    /// Recorded before a reboot or its id now belongs to another process: left alone.
    NotOurs,
}

pub fn reap(child: &ChildGroup) -> Reaped {
    if let (Some(recorded), Some(now)) = (&child.kernel_boot, kernel_boot_id())
        && *recorded != now
    {
        return Reaped::NotOurs;
    }
    if let (Some(recorded), Some(now)) = (child.leader_start, process_start(child.pgid))
        && recorded != now
    {
        return Reaped::NotOurs;
    }
    if child.pgid <= 1 {
        return Reaped::NotOurs;
    }
    match killpg(Pid::from_raw(child.pgid), Signal::SIGKILL) {
        Ok(()) => Reaped::Killed,
        Err(_) => Reaped::AlreadyGone,
    }
}

/// Kills the leftover groups of every attempt the journal holds as Started.
pub fn reap_leftovers(state: &JournalState) -> usize {
    let mut killed = 0;
    for ((command_id, attempt), entry) in state.unfinished() {
        for child in &entry.children {
            let outcome = reap(child);
            tracing::warn!(command = %command_id, attempt, pgid = child.pgid, ?outcome, "leftover child process group of an interrupted command");
            if outcome == Reaped::Killed {
                killed += 1;
            }
        }
    }
    killed
}
