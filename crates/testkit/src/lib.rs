//! Process harness for tests, benchmarks and the demo: private `nats-server` and PostgreSQL
//! servers on free 127.0.0.1 ports in temporary directories, product binaries from the target
//! dir, and a TCP proxy that puts network faults between a client and its server. No product
//! dependencies, so every crate can use it.
//!
//! Every server is a direct child: it is killed and its directory removed when its handle drops,
//! also while a test panics (the handle then prints the tail of the child's log). Children stay in
//! the test's process group, so a test runner that kills the group on timeout takes them too.
//!
//! Tests may share servers started by the test script: [`NatsServer::shared_or_start`] and
//! [`Postgres::shared_or_start`] use `CS_TEST_NATS_URL` / `CS_TEST_PG_URL` when set. Every NATS
//! name carries a network id, so sharing is safe when each test uses [`unique_id`].

mod binaries;
mod error;
pub mod fuzz;
mod nats;
mod ports;
mod postgres;
mod process;
mod proxy;
mod skip;
mod tls;

pub use binaries::{binary_path, workspace_root};
pub use error::{Error, ErrorKind, Result};
pub use nats::{
    ClusterMembership, MIN_NATS_VERSION, NatsCluster, NatsOptions, NatsServer, check_nats_server,
    nats_server_binary, nats_server_version,
};
pub use ports::free_port;
pub use postgres::{Postgres, pg_bin};
pub use process::{ChildProcess, wait_until};
pub use proxy::{ProxyMode, ProxyStats, TcpProxy};
pub use skip::{SKIP_FILE_VAR, on_path, skip};
pub use tls::{TlsFiles, tls_files};

use std::sync::atomic::{AtomicU32, Ordering};

/// A name unique across concurrently running test processes: lowercase letters and digits only,
/// so it is valid as a NATS subject token, stream/bucket name part and Postgres identifier.
pub fn unique_id(prefix: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!(
        "{prefix}{}{}{}",
        base36(u64::from(std::process::id())),
        base36(u64::from(n)),
        base36(u64::from(nanos % 46_656))
    )
}

fn base36(mut value: u64) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut out = Vec::new();
    loop {
        out.push(DIGITS[(value % 36) as usize]);
        value /= 36;
        if value == 0 {
            break;
        }
    }
    out.reverse();
    String::from_utf8(out).unwrap_or_default()
}
