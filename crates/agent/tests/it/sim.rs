//! The agent against canton-sim nodes: real probes over the Canton admin API, gRPC health,
//! HTTP /health, the ledger API and the node's Postgres database, with injected faults.

use std::time::{Duration, Instant};

use canton_agent::config::CantonConfig;
use canton_agent::{Agent, AgentMetrics};
use canton_sim::network::LaunchOptions;
use canton_sim::{Fault, FaultRule, NetworkSpec, PostgresTarget, SimNetwork};
use proto_sidecar as pb;
use testkit::{NatsServer, Postgres, binary_path};
use tokio_util::sync::CancellationToken;

use crate::support::{Heartbeats, config, largest_gap, network, node_state, schedule, wait_for};

const TOPOLOGY: &str = r#"
[[node]]
id = "sequencer1"
kind = "sequencer"
[[node]]
id = "mediator1"
kind = "mediator"
[[node]]
id = "participant1"
kind = "participant"
"#;

const PARTICIPANT_STATUS: &str =
    "com.digitalasset.canton.admin.participant.v30.ParticipantStatusService";
const PERIOD_MS: u64 = 500;
const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_sim_faults_show_with_the_right_reason_while_heartbeats_keep_their_rate() {
    let nats = NatsServer::shared_or_start().unwrap();
    let postgres = Postgres::shared_or_start().unwrap();
    let sims = SimNetwork::start(
        &NetworkSpec::from_toml(&format!(
            "name = \"{}\"\n{TOPOLOGY}",
            testkit::unique_id("agentit")
        ))
        .unwrap(),
        LaunchOptions {
            postgres: PostgresTarget::of(&postgres),
            binary: &binary_path("canton-sim").unwrap(),
            work_dir: None,
        },
    )
    .unwrap();
    let participant = sims.node("participant1").unwrap();
    let endpoints = participant.endpoints();
    let net = network(nats.url()).await;
    let mut config = config(nats.url(), &net, "participant1");
    let every = schedule(PERIOD_MS);
    config.probes = canton_agent::config::ProbeSchedules {
        status: every,
        grpc_health: every,
        http_health: every,
        synchronizers: every,
        progress: every,
        database: every,
    };
    config.canton = Some(CantonConfig {
        admin_url: format!("http://{}", endpoints.admin.unwrap()),
        grpc_health_url: Some(format!("http://{}", endpoints.grpc_health)),
        grpc_health_service: String::new(),
        http_health_url: endpoints
            .http_health
            .map(|addr| format!("http://{addr}/health")),
        ledger_api_url: endpoints.ledger.map(|addr| format!("http://{addr}")),
    });
    config.database_url = Some(endpoints.database.as_str().into());
    let heartbeats = Heartbeats::collect(&net, "participant1").await;
    let probes = canton_agent::probes::from_config(&config).unwrap();
    let names: Vec<&str> = probes.iter().map(|p| p.name()).collect();
    eprintln!("probes: {names:?}");
    assert!(names.contains(&"status") && names.contains(&"database"));
    let shutdown = CancellationToken::new();
    let agent =
        tokio::spawn(Agent::new(config, probes, AgentMetrics::default()).run(shutdown.clone()));

    wait_for("healthy participant", DEADLINE, || async {
        heartbeats
            .last()
            .is_some_and(|h| h.condition() == pb::NodeCondition::Healthy)
    })
    .await;
    let healthy = heartbeats.last().unwrap();
    assert!(!healthy.versions.as_ref().unwrap().canton.is_empty());
    assert!(healthy.progress.as_ref().unwrap().database_reachable);
    assert!(
        healthy
            .probes
            .iter()
            .all(|p| p.status() == pb::ProbeStatus::Ok)
    );
    wait_for("synchronizers in KV", DEADLINE, || async {
        node_state(&net, "participant1")
            .await
            .is_some_and(|s| !s.synchronizers.is_empty() && !s.uid.is_empty())
    })
    .await;

    let control = participant.control();
    for (fault, expected) in [
        (Fault::Hang, "timeout"),
        (
            Fault::Error {
                code: 13,
                message: "injected".to_owned(),
            },
            "error",
        ),
        (Fault::Crash, "unreachable"),
    ] {
        let id = control
            .add_fault(&FaultRule {
                method: PARTICIPANT_STATUS.to_owned(),
                fault: fault.clone(),
                times: None,
            })
            .await
            .unwrap();
        let start = Instant::now();
        let took = wait_for(
            &format!("{fault:?} seen as {expected}"),
            DEADLINE,
            || async {
                heartbeats.last().is_some_and(|h| {
                    h.condition() == pb::NodeCondition::Unhealthy
                        && h.reasons
                            .iter()
                            .any(|r| r.probe == "status" && r.kind == expected)
                })
            },
        )
        .await;
        eprintln!(
            "{fault:?}: reflected after {took:?} (2 probe periods = {} ms)",
            2 * PERIOD_MS
        );
        let during = heartbeats.since(start);
        let seqs: Vec<u64> = during.iter().map(|(_, h)| h.seq).collect();
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "{seqs:?}");
        let gap = largest_gap(&during);
        assert!(
            gap < Duration::from_secs(3),
            "largest heartbeat gap {gap:?}"
        );
        if fault != Fault::Crash {
            control.remove_fault(id).await.unwrap();
            wait_for("healthy again", DEADLINE, || async {
                heartbeats
                    .last()
                    .is_some_and(|h| h.condition() == pb::NodeCondition::Healthy)
            })
            .await;
        }
    }
    wait_for("crash in KV", DEADLINE, || async {
        node_state(&net, "participant1").await.is_some_and(|s| {
            s.condition() == pb::NodeCondition::Unhealthy
                && s.reasons.iter().any(|r| r.kind == "unreachable")
        })
    })
    .await;
    // Heartbeats keep coming while the node is down.
    let count = heartbeats.all().len();
    wait_for("heartbeats while the node is down", DEADLINE, || async {
        heartbeats.all().len() >= count + 3
    })
    .await;
    shutdown.cancel();
    agent.await.unwrap().unwrap();
    drop(sims);
}
