//! Fault injection: rules that make chosen RPCs hang, answer slowly, fail with a given gRPC
//! code, or crash the process; and a node-wide "stop processing" switch. Rules are selected per
//! RPC (full method path, a whole service, or `*`) and apply to every API the node serves,
//! including the health servers (`/grpc.health.v1.Health/Check`, HTTP `/health`).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::{Request, State};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use std::sync::Arc;

/// What a matching call suffers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Fault {
    /// Never answers while the rule is in place (the call completes once the rule is removed).
    Hang,
    /// Answers after the delay.
    Slow { delay_ms: u64 },
    /// Fails with this gRPC status code (HTTP 500 for HTTP endpoints).
    Error {
        code: i32,
        #[serde(default)]
        message: String,
    },
    /// The process exits abruptly when a matching call arrives, as a crash would.
    Crash,
}

/// A fault rule as added through the control endpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FaultRule {
    /// Full method path (`/pkg.Service/Method`), a service (`pkg.Service`), an HTTP path
    /// (`/health`) or `*` for everything.
    pub method: String,
    pub fault: Fault,
    /// Number of calls the rule applies to before it retires itself; `None` = until removed.
    #[serde(default)]
    pub times: Option<u64>,
}

/// A rule in force, with how many calls it has hit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ActiveFault {
    pub id: u64,
    pub rule: FaultRule,
    pub hits: u64,
    /// A hang rule that used up its `times`: it matches no new call, and the calls it holds
    /// stay hung until it is removed.
    pub exhausted: bool,
}

#[derive(Default)]
pub struct Faults {
    rules: Mutex<Vec<ActiveFault>>,
    next_id: AtomicU64,
    processing_stopped: AtomicBool,
    changed: tokio::sync::Notify,
}

impl Faults {
    pub fn new() -> Arc<Self> {
        Arc::new(Self::default())
    }

    pub fn add(&self, rule: FaultRule) -> u64 {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed) + 1;
        self.with_rules(|rules| {
            rules.push(ActiveFault {
                id,
                rule,
                hits: 0,
                exhausted: false,
            });
        });
        tracing::warn!(id, "fault rule added");
        id
    }

    /// Removes one rule; returns whether it existed.
    pub fn remove(&self, id: u64) -> bool {
        let removed = self.with_rules(|rules| {
            let before = rules.len();
            rules.retain(|r| r.id != id);
            before != rules.len()
        });
        self.changed.notify_waiters();
        removed
    }

    pub fn clear(&self) {
        self.with_rules(Vec::clear);
        self.changed.notify_waiters();
    }

    pub fn list(&self) -> Vec<ActiveFault> {
        self.with_rules(|rules| rules.clone())
    }

    pub fn set_processing_stopped(&self, stopped: bool) {
        self.processing_stopped.store(stopped, Ordering::SeqCst);
        self.changed.notify_waiters();
    }

    /// Whether background processing (sequencing, event reading, workload) is halted.
    pub fn processing_stopped(&self) -> bool {
        self.processing_stopped.load(Ordering::SeqCst)
    }

    /// Waits until processing may go on.
    pub async fn wait_processing(&self) {
        loop {
            let changed = self.changed.notified();
            if !self.processing_stopped() {
                return;
            }
            changed.await;
        }
    }

    /// The fault for a call to `path`, counting the hit (and retiring exhausted rules).
    pub fn take(&self, path: &str) -> Option<(u64, Fault)> {
        self.with_rules(|rules| {
            let index = rules
                .iter()
                .position(|r| !r.exhausted && matches(&r.rule.method, path))?;
            let rule = &mut rules[index];
            rule.hits += 1;
            let found = (rule.id, rule.rule.fault.clone());
            if rule.rule.times.is_some_and(|times| rule.hits >= times) {
                if rule.rule.fault == Fault::Hang {
                    rule.exhausted = true;
                } else {
                    rules.remove(index);
                }
            }
            Some(found)
        })
    }

    fn is_active(&self, id: u64) -> bool {
        self.with_rules(|rules| rules.iter().any(|r| r.id == id))
    }

    fn with_rules<T>(&self, f: impl FnOnce(&mut Vec<ActiveFault>) -> T) -> T {
        let mut rules = self
            .rules
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        f(&mut rules)
    }

    /// Applies the fault for `path` before the call proceeds: returns a response to send
    /// instead of calling the service, or `None` to go on.
    pub async fn apply(&self, path: &str, grpc: bool) -> Option<Response> {
        let (id, fault) = self.take(path)?;
        tracing::warn!(path, ?fault, "injecting fault");
        match fault {
            Fault::Hang => {
                loop {
                    let changed = self.changed.notified();
                    if !self.is_active(id) {
                        break;
                    }
                    changed.await;
                }
                None
            }
            Fault::Slow { delay_ms } => {
                tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                None
            }
            Fault::Error { code, message } => {
                let message = if message.is_empty() {
                    format!("injected fault on {path}")
                } else {
                    message
                };
                if grpc {
                    let status = tonic::Status::new(tonic::Code::from_i32(code), message);
                    Some(status.into_http::<axum::body::Body>().into_response())
                } else {
                    Some((axum::http::StatusCode::INTERNAL_SERVER_ERROR, message).into_response())
                }
            }
            Fault::Crash => {
                tracing::error!(path, "crash fault: exiting abruptly");
                std::process::exit(CRASH_EXIT_CODE);
            }
        }
    }
}

/// Exit status of a process ended by a crash fault.
pub const CRASH_EXIT_CODE: i32 = 70;

fn matches(selector: &str, path: &str) -> bool {
    if selector == "*" || selector == path {
        return true;
    }
    // `pkg.Service` selects every method of the service.
    path.strip_prefix('/')
        .and_then(|rest| rest.rsplit_once('/'))
        .is_some_and(|(service, _)| service == selector)
}

/// axum middleware applying fault rules to gRPC calls.
pub async fn grpc_fault_layer(
    State(faults): State<Arc<Faults>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    if let Some(response) = faults.apply(&path, true).await {
        return response;
    }
    next.run(request).await
}

/// axum middleware applying fault rules to plain HTTP endpoints.
pub async fn http_fault_layer(
    State(faults): State<Arc<Faults>>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().to_owned();
    if let Some(response) = faults.apply(&path, false).await {
        return response;
    }
    next.run(request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_match_methods_services_and_everything() {
        let path = "/com.digitalasset.canton.admin.participant.v30.SynchronizerConnectivityService/DisconnectSynchronizer";
        assert!(matches("*", path));
        assert!(matches(path, path));
        assert!(matches(
            "com.digitalasset.canton.admin.participant.v30.SynchronizerConnectivityService",
            path
        ));
        assert!(!matches(
            "com.digitalasset.canton.admin.participant.v30.PruningService",
            path
        ));
        assert!(!matches("/other/Method", path));
        assert!(matches("/health", "/health"));
    }

    #[test]
    fn limited_rules_retire_after_their_hits() {
        let faults = Faults::default();
        let id = faults.add(FaultRule {
            method: "*".to_owned(),
            fault: Fault::Slow { delay_ms: 1 },
            times: Some(2),
        });
        assert_eq!(faults.take("/a/b").map(|f| f.0), Some(id));
        assert_eq!(faults.list()[0].hits, 1);
        assert!(faults.take("/a/b").is_some());
        assert!(faults.take("/a/b").is_none());
        assert!(faults.list().is_empty());
    }
}
