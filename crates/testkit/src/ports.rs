//! Free ports for servers that cannot pick their own.
//!
//! A port from the kernel's ephemeral range (what binding port 0 returns) is released before the
//! server binds it, and in that gap the kernel hands the same range out as source ports of
//! outgoing connections — the many PostgreSQL and NATS clients of a test run — so servers lost
//! races for their port. Ports here come from below the ephemeral range, where the kernel never
//! assigns source ports; each process starts at a random point and never hands a port out
//! twice, so only another test process choosing the same port at the same moment can collide.

use std::collections::BTreeSet;
use std::hash::{BuildHasher, RandomState};
use std::net::TcpListener;
use std::sync::Mutex;

use crate::error::{Error, ErrorKind, Result};

/// Lowest port handed out: above the well-known and most registered service ports.
const LOWEST: u16 = 10_000;
/// Used when the ephemeral range cannot be read (Linux's default lower bound).
const DEFAULT_EPHEMERAL_LOW: u16 = 32_768;

static HANDED_OUT: Mutex<BTreeSet<u16>> = Mutex::new(BTreeSet::new());

/// A TCP port on 127.0.0.1 that was free at the time of the call and that this process has not
/// handed out before. Servers that can pick their own port (`nats-server -p -1`) should.
pub fn free_port() -> Result<u16> {
    let high = ephemeral_low().saturating_sub(1).max(LOWEST + 1);
    let span = u32::from(high - LOWEST) + 1;
    let offset = u32::try_from(RandomState::new().hash_one(std::process::id()) % u64::from(span))
        .unwrap_or(0);
    let mut handed_out = HANDED_OUT
        .lock()
        .map_err(|_| Error::new(ErrorKind::Spawn, "the port registry was poisoned"))?;
    for step in 0..span {
        let Ok(port) = u16::try_from(u32::from(LOWEST) + (offset + step) % span) else {
            continue;
        };
        if handed_out.contains(&port) {
            continue;
        }
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            handed_out.insert(port);
            return Ok(port);
        }
    }
    Err(Error::new(
        ErrorKind::Spawn,
        format!("no free port on 127.0.0.1 between {LOWEST} and {high}"),
    ))
}

fn ephemeral_low() -> u16 {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| text.split_whitespace().next()?.parse().ok())
        .unwrap_or(DEFAULT_EPHEMERAL_LOW)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ports_are_below_the_ephemeral_range_bindable_and_never_repeated() {
        let low = ephemeral_low();
        let ports: Vec<u16> = (0..200).map(|_| free_port().unwrap()).collect();
        let distinct: BTreeSet<u16> = ports.iter().copied().collect();
        assert_eq!(distinct.len(), ports.len(), "a port was handed out twice");
        for port in ports {
            assert!(
                (LOWEST..low).contains(&port),
                "port {port} outside {LOWEST}..{low}"
            );
        }
        let port = free_port().unwrap();
        TcpListener::bind(("127.0.0.1", port)).expect("a handed-out port binds");
    }
}
