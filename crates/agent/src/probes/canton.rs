//! Probes over the Canton admin API, the node's gRPC health server and the ledger API, all
//! through `canton-client` (the agent never sees Canton wire types).

use canton_client::types::{ComponentState, ServingStatus};
use canton_client::{CantonClient, ErrorKind, Profile};
use futures::future::BoxFuture;

use crate::config::Schedule;
use crate::probe::{Facts, Probe, ProbeOutcome, ReasonKind, Synchronizer};

/// What a failed call means for the node.
fn failure(error: &canton_client::Error) -> ProbeOutcome {
    let kind = match error.kind() {
        ErrorKind::Unavailable => ReasonKind::Unreachable,
        ErrorKind::DeadlineExceeded => ReasonKind::Timeout,
        ErrorKind::NotInitialized => ReasonKind::NotServing,
        _ => ReasonKind::Error,
    };
    ProbeOutcome::failed(kind, error.to_string())
}

/// A probe that makes one kind of call with its own per-call deadline.
struct Call {
    client: CantonClient,
    schedule: Schedule,
}

impl Call {
    fn new(client: &CantonClient, schedule: Schedule) -> Self {
        Self {
            // The client's own deadline matches the probe's, so a hang is reported as a
            // deadline by the node's client and, failing that, by the probe runner.
            client: client.with_timeout(schedule.timeout),
            schedule,
        }
    }
}

/// Admin status: version, uid, active flag, uptime, component health.
pub struct StatusProbe(Call);

impl StatusProbe {
    pub fn new(client: &CantonClient, schedule: Schedule) -> Self {
        Self(Call::new(client, schedule))
    }
}

impl Probe for StatusProbe {
    fn name(&self) -> &'static str {
        "status"
    }

    fn schedule(&self) -> Schedule {
        self.0.schedule
    }

    fn check(&self) -> BoxFuture<'static, ProbeOutcome> {
        let client = self.0.client.clone();
        Box::pin(async move {
            let status = match client.status().await {
                Ok(status) => status,
                Err(error) => return failure(&error),
            };
            let facts = Facts {
                release_line: status
                    .version
                    .as_deref()
                    .and_then(|v| Profile::for_version(v).ok())
                    .map(|profile| profile.to_string()),
                version: status.version.clone(),
                uid: status.uid.clone(),
                active: Some(status.active),
                uptime: status.uptime,
                ..Facts::default()
            };
            if !status.initialized {
                let waiting = status
                    .waiting_for
                    .map_or_else(String::new, |w| format!(" (waiting for {w:?})"));
                return ProbeOutcome::Unhealthy {
                    facts,
                    kind: ReasonKind::NotServing,
                    detail: format!("node not initialised{waiting}"),
                };
            }
            let broken: Vec<String> = status
                .components
                .iter()
                .filter(|c| matches!(c.state, ComponentState::Failed | ComponentState::Fatal))
                .map(|c| match &c.description {
                    Some(description) => format!("{} {:?}: {description}", c.name, c.state),
                    None => format!("{} {:?}", c.name, c.state),
                })
                .collect();
            if broken.is_empty() {
                ProbeOutcome::Healthy(facts)
            } else {
                // A passive replica reports its storage failed ("instance is passive"); the
                // assessment turns that into Passive when `active` is false.
                ProbeOutcome::Unhealthy {
                    facts,
                    kind: ReasonKind::NotServing,
                    detail: format!("components: {}", broken.join("; ")),
                }
            }
        })
    }
}

/// `grpc.health.v1.Health/Check` on the node's dedicated health server.
pub struct GrpcHealthProbe {
    call: Call,
    service: String,
}

impl GrpcHealthProbe {
    pub fn new(client: &CantonClient, schedule: Schedule, service: String) -> Self {
        Self {
            call: Call::new(client, schedule),
            service,
        }
    }
}

impl Probe for GrpcHealthProbe {
    fn name(&self) -> &'static str {
        "grpc_health"
    }

    fn schedule(&self) -> Schedule {
        self.call.schedule
    }

    fn check(&self) -> BoxFuture<'static, ProbeOutcome> {
        let client = self.call.client.clone();
        let service = self.service.clone();
        Box::pin(async move {
            let shown = if service.is_empty() {
                "(all)"
            } else {
                &service
            };
            match client.health_check(&service).await {
                Ok(ServingStatus::Serving) => ProbeOutcome::Healthy(Facts {
                    serving: Some(true),
                    ..Facts::default()
                }),
                Ok(ServingStatus::NotServing) => ProbeOutcome::Unhealthy {
                    facts: Facts {
                        serving: Some(false),
                        ..Facts::default()
                    },
                    kind: ReasonKind::NotServing,
                    detail: format!("service {shown} NOT_SERVING"),
                },
                Ok(other) => ProbeOutcome::failed(
                    ReasonKind::Error,
                    format!("service {shown} answered {other:?}"),
                ),
                Err(error) => failure(&error),
            }
        })
    }
}

/// A participant's connected synchronizers.
pub struct SynchronizersProbe(Call);

impl SynchronizersProbe {
    pub fn new(client: &CantonClient, schedule: Schedule) -> Self {
        Self(Call::new(client, schedule))
    }
}

impl Probe for SynchronizersProbe {
    fn name(&self) -> &'static str {
        "synchronizers"
    }

    fn schedule(&self) -> Schedule {
        self.0.schedule
    }

    fn check(&self) -> BoxFuture<'static, ProbeOutcome> {
        let client = self.0.client.clone();
        Box::pin(async move {
            match client.list_connected_synchronizers().await {
                Ok(list) => {
                    let mut synchronizers: Vec<Synchronizer> = list
                        .into_iter()
                        .map(|s| Synchronizer {
                            alias: s.alias,
                            id: s.synchronizer_id,
                            healthy: s.healthy,
                        })
                        .collect();
                    synchronizers.sort();
                    ProbeOutcome::Healthy(Facts {
                        synchronizers: Some(synchronizers),
                        ..Facts::default()
                    })
                }
                Err(error) => failure(&error),
            }
        })
    }
}

/// How far the node has got: a participant's ledger end, a sequencer's latest sequenced time.
pub struct ProgressProbe {
    call: Call,
    of: ProgressOf,
}

/// Which progress marker the node has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ProgressOf {
    LedgerEnd,
    SequencerTime,
}

impl ProgressProbe {
    pub fn new(client: &CantonClient, schedule: Schedule, of: ProgressOf) -> Self {
        Self {
            call: Call::new(client, schedule),
            of,
        }
    }
}

impl Probe for ProgressProbe {
    fn name(&self) -> &'static str {
        "progress"
    }

    fn schedule(&self) -> Schedule {
        self.call.schedule
    }

    fn check(&self) -> BoxFuture<'static, ProbeOutcome> {
        let client = self.call.client.clone();
        let of = self.of;
        Box::pin(async move {
            let facts = match of {
                ProgressOf::LedgerEnd => client.ledger_end().await.map(|offset| Facts {
                    ledger_end: Some(offset),
                    ..Facts::default()
                }),
                ProgressOf::SequencerTime => {
                    client.sequencer_pruning_status().await.map(|status| Facts {
                        sequencer_timestamp_micros: Some(status.now_micros),
                        ..Facts::default()
                    })
                }
            };
            match facts {
                Ok(facts) => ProbeOutcome::Healthy(facts),
                Err(error) => failure(&error),
            }
        })
    }
}
