//! The network-DR migration dump against canton-sim's Splice app: for a timestamp the
//! participant has not reached the app answers 429, which the action asks again, reporting
//! each wait, until the command's deadline, and then fails writing nothing; an app without the dump endpoints (404)
//! is refused naming the missing endpoint; once caught up the dump is written with its
//! checksum and a repeat answers from the file.
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use canton_agent::actions::{ActionContext, ActionError, ActionHooks, ActionName, Progress};
use canton_agent::config::{SpliceConfig, SpliceRole};
use canton_sim::network::LaunchOptions;
use canton_sim::{NetworkSpec, PostgresTarget, SimNetwork};
use futures::future::BoxFuture;
use proto_sidecar as pb;
use testkit::{NatsServer, Postgres, binary_path};
use tokio_util::sync::CancellationToken;

use crate::support::{config, network, wait_for};

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
workload = { rate_per_second = 4.0 }
[[node]]
id = "app1"
kind = "app"
participant = "participant1"
"#;

/// Records the progress a handler reports; children are not expected.
#[derive(Default)]
struct RecordedHooks {
    progress: Mutex<Vec<Progress>>,
}

impl ActionHooks for RecordedHooks {
    fn progress(&self, progress: Progress) {
        self.progress.lock().unwrap().push(progress);
    }

    fn record_child(&self, _pgid: i32) -> BoxFuture<'static, Result<(), ActionError>> {
        Box::pin(async { Ok(()) })
    }
}

fn dump_command(timestamp: &str, expires_in: Duration) -> pb::Command {
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap()
            .as_millis(),
    )
    .unwrap();
    pb::Command {
        command_id: "r1/dump-svs/app1".to_owned(),
        expires_at_unix_ms: now + i64::try_from(expires_in.as_millis()).unwrap(),
        action: Some(pb::Action {
            kind: Some(pb::action::Kind::MigrationDump(pb::MigrationDump {
                timestamp: timestamp.to_owned(),
                migration_id: 1,
                force: false,
            })),
        }),
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_a_migration_dump_waits_for_the_app_to_catch_up_and_refuses_an_app_without_dumps() {
    let started = Instant::now();
    let started_at = SystemTime::now();
    let nats = NatsServer::shared_or_start().unwrap();
    let postgres = Postgres::shared_or_start().unwrap();
    let sims = SimNetwork::start(
        &NetworkSpec::from_toml(&format!(
            "name = \"{}\"\n{TOPOLOGY}",
            testkit::unique_id("agentdump")
        ))
        .unwrap(),
        LaunchOptions {
            postgres: PostgresTarget::of(&postgres),
            binary: &binary_path("canton-sim").unwrap(),
            work_dir: None,
        },
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let net = network(nats.url()).await;
    let app = sims.node("app1").unwrap();
    let splice = |admin_url: String| SpliceConfig {
        admin_url,
        role: SpliceRole::Sv,
        token_file: None,
        dump_dir: dir.path().to_owned(),
        redeploy: None,
        redeploy_timeout: Duration::from_secs(60),
    };
    let handler = |splice: SpliceConfig| {
        let mut config = config(nats.url(), &net, "app1");
        config.kind = canton_agent::NodeKind::App;
        config.splice = Some(splice);
        let agent = canton_agent::Agent::new(
            config.clone(),
            Vec::new(),
            canton_agent::AgentMetrics::default(),
        );
        canton_agent::actions::standard_registry(&config, agent.board(), agent.identity().clone())
            .unwrap()
            .get(ActionName::MigrationDump)
            .expect("the migration_dump handler")
    };
    let dump_file = dir.path().join("migration-1").join("migration-dump.json");

    // The participant is connected and processing: its workload has created a contract.
    let database = sims
        .node("participant1")
        .unwrap()
        .database_name()
        .to_owned();
    wait_for("participant1 processing", Duration::from_secs(60), || {
        let postgres = &postgres;
        let database = database.clone();
        async move {
            postgres
                .psql(&database, "SELECT count(*) FROM participant_contract")
                .is_ok_and(|count| count.trim() != "0")
        }
    })
    .await;

    // A minute ahead: the participant has not reached it, so the app answers 429.
    let fresh = handler(splice(format!("http://{}", app.http_addr().unwrap())));
    let hooks = Arc::new(RecordedHooks::default());
    let ahead =
        humantime::format_rfc3339_micros(SystemTime::now() + Duration::from_secs(60)).to_string();
    let context = ActionContext::new(
        "r1/dump-svs/app1",
        1,
        hooks.clone(),
        CancellationToken::new(),
    );
    let waited = Instant::now();
    let error = fresh
        .run(dump_command(&ahead, Duration::from_millis(2_600)), context)
        .await
        .expect_err("the participant does not reach the timestamp before the deadline");
    eprintln!(
        "429 until the deadline after {:?}: {error}",
        waited.elapsed()
    );
    let text = error.to_string();
    assert!(
        text.contains("has not caught up") && text.contains("429"),
        "{text}"
    );
    let waits = hooks.progress.lock().unwrap().len();
    assert!(waits >= 2, "each 429 is reported as progress: {waits}");
    assert!(!dump_file.exists(), "nothing was written");

    // A timestamp of the test's start: the action waits until the app processed past it, then
    // the dump is written with its checksum, and a repeat answers from the file.
    let timestamp = humantime::format_rfc3339_micros(started_at).to_string();
    let hooks = Arc::new(RecordedHooks::default());
    let context = ActionContext::new(
        "r1/dump-svs/app1",
        2,
        hooks.clone(),
        CancellationToken::new(),
    );
    let output = fresh
        .run(dump_command(&timestamp, Duration::from_secs(30)), context)
        .await
        .expect("the dump once the app caught up");
    let result: serde_json::Value = serde_json::from_slice(&output.result).unwrap();
    assert_eq!(result["reused"], false, "{result}");
    let bytes = std::fs::read(&dump_file).unwrap();
    let checksum = std::fs::read_to_string(dump_file.with_extension("json.sha256")).unwrap();
    assert!(
        checksum.starts_with(result["sha256"].as_str().unwrap()),
        "{checksum}"
    );
    let again = fresh
        .already_done(&dump_command(&timestamp, Duration::from_secs(30)))
        .await
        .unwrap()
        .expect("answered from the file");
    let again: serde_json::Value = serde_json::from_slice(&again.result).unwrap();
    assert_eq!(again["reused"], true);
    assert_eq!(again["sha256"], result["sha256"]);
    assert_eq!(std::fs::read(&dump_file).unwrap(), bytes, "not rewritten");

    // An HTTP server without Splice's dump endpoints (the participant's /health server).
    std::fs::remove_dir_all(dir.path().join("migration-1")).unwrap();
    let participant = sims.node("participant1").unwrap();
    let without = handler(splice(format!(
        "http://{}",
        participant.http_health_addr().unwrap()
    )));
    let context = ActionContext::new(
        "r1/dump-svs/app1",
        1,
        Arc::new(RecordedHooks::default()),
        CancellationToken::new(),
    );
    let error = without
        .run(dump_command(&timestamp, Duration::from_secs(10)), context)
        .await
        .expect_err("no dump endpoints");
    let text = error.to_string();
    assert!(
        text.contains("404") && text.contains("data-snapshot") && text.contains("Splice release"),
        "{text}"
    );
    assert!(!dump_file.exists());
    sims.stop().unwrap();
    eprintln!("test took {:?}", started.elapsed());
}
