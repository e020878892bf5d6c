//! The command path's wall clock: what a command's issue and expiry times and the server's
//! delivery stamps are compared with, and what journal records are stamped with.
//!
//! The agent always runs on the system clock; there is no setting for another. An agent built
//! in-process by a test may be given a [`SkewedClock`] (through `Agent::with_clock`) to play
//! a host whose clock is off, without changing the machine's time.

use std::fmt::Debug;

pub trait WallClock: Send + Sync + Debug {
    /// Milliseconds since the Unix epoch, as this host believes.
    fn now_unix_ms(&self) -> i64;
}

#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl WallClock for SystemClock {
    fn now_unix_ms(&self) -> i64 {
        crate::commands::unix_ms_now()
    }
}

/// The system clock off by a fixed amount: ahead for a positive offset, behind for a negative.
#[derive(Clone, Copy, Debug)]
pub struct SkewedClock {
    pub offset_ms: i64,
}

impl WallClock for SkewedClock {
    fn now_unix_ms(&self) -> i64 {
        SystemClock.now_unix_ms().saturating_add(self.offset_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_skewed_clock_is_off_by_its_offset() {
        let ahead = SkewedClock { offset_ms: 30_000 };
        let behind = SkewedClock { offset_ms: -30_000 };
        let (before, ahead_now, behind_now, after) = (
            SystemClock.now_unix_ms(),
            ahead.now_unix_ms(),
            behind.now_unix_ms(),
            SystemClock.now_unix_ms(),
        );
        assert!((before + 30_000..=after + 30_000).contains(&ahead_now));
        assert!((before - 30_000..=after - 30_000).contains(&behind_now));
    }
}
