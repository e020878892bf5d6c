//! Cross-crate end-to-end tests and the demo driver.
//!
//! The demo (`canton-demo`, started by `scripts/demo.sh`) and the e2e tests share the
//! scaffolding here: private servers from `testkit`, product binaries from the target dir,
//! provisioned keys ([`keys`]) and the whole network with its agents ([`stack`]).

pub mod keys;
pub mod observe;
pub mod orchestrator;
pub mod otlp;
pub mod prometheus_text;
pub mod stack;

/// Wall-clock Unix milliseconds, for documents that carry an issue time.
pub fn now_unix_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}
