//! The network on a NATS server configured by `canton-ops gen nats-config` (TLS, one nkey user
//! per agent and coordinator): every process logs in and a coordinated backup completes with no
//! permission violation in the server's log. Then one agent's seed, as a thief would use it,
//! is refused by the server for everything that is not that agent's own: another node's
//! heartbeat and acks, the lease and epoch, another node's commands, run records, other
//! clients' replies. Each refusal is the server's permission violation, not a missing answer.
use std::time::{Duration, Instant};

use async_nats::{Event, ServerError};
use bytes::Bytes;
use sidecar_bus::{Bucket, NodeId};
use tokio::sync::mpsc;

use crate::support::{ORGANISATION, final_run, manifests, ops_json, running_stack_with_logins};

const TOPOLOGY: &str = r#"
name = "login"
[[node]]
id = "sequencer1"
kind = "sequencer"
organisation = "operator"
[[node]]
id = "mediator1"
kind = "mediator"
organisation = "operator"
[[node]]
id = "participant1"
kind = "participant"
organisation = "operator"
[[node]]
id = "participant2"
kind = "participant"
organisation = "operator"
"#;

const SET: &str = "login-set";
/// Connection name of the client with the stolen credential, as the server logs it.
const INTRUDER: &str = "intruder";

/// Lines of the server log that report a refused publish or subscription.
fn violations(log: &str) -> Vec<&str> {
    log.lines().filter(|l| l.contains("Violation")).collect()
}

/// A client logged in with a stolen credential, and the errors the server sends it.
struct Intruder {
    client: async_nats::Client,
    errors: mpsc::UnboundedReceiver<String>,
}

impl Intruder {
    /// Waits for the server's next error and checks that it is the permission violation of
    /// `operation` ("Publish" or "Subscription") on `subject`.
    async fn refused(&mut self, operation: &str, subject: &str) {
        let started = Instant::now();
        let error = tokio::time::timeout(Duration::from_secs(10), self.errors.recv())
            .await
            .unwrap_or_else(|_| panic!("no error from the server for {operation} to {subject}"))
            .expect("the event channel is open");
        let expected = format!("Permissions Violation for {operation} to \"{subject}\"");
        assert!(
            error.contains(&expected),
            "expected {expected:?}, the server said {error:?}"
        );
        eprintln!("refused after {:?}: {error}", started.elapsed());
    }

    async fn publish(&mut self, subject: &str) {
        self.client
            .publish(subject.to_owned(), Bytes::from_static(b"forged"))
            .await
            .expect("queued");
        self.client.flush().await.expect("flushed");
    }

    /// A request whose subject the server refuses; its answer never comes, the error does.
    async fn request(&mut self, subject: &str) {
        let request = async_nats::Request::new()
            .payload(Bytes::from_static(b"{}"))
            .timeout(Some(Duration::from_millis(500)));
        let answer = self.client.send_request(subject.to_owned(), request).await;
        assert!(answer.is_err(), "{subject} was answered: {answer:?}");
        self.refused("Publish", subject).await;
    }

    async fn subscribe(&mut self, subject: &str) {
        let _subscription = self
            .client
            .subscribe(subject.to_owned())
            .await
            .expect("the client sends the subscription");
        self.client.flush().await.expect("flushed");
        self.refused("Subscription", subject).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn generated_nats_users_log_in_and_a_stolen_agent_credential_is_confined_to_its_node() {
    let stack = running_stack_with_logins(TOPOLOGY).await;
    let started = Instant::now();
    let (status, values) = ops_json(
        &stack,
        &[
            "run",
            "backup",
            "--param",
            &format!("backup_set={SET}"),
            "--wait",
        ],
    );
    eprintln!("backup run took {:?}", started.elapsed());
    assert!(status.success(), "backup failed: {values:#?}");
    let run = final_run(&values);
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let run_id = run["run_id"].as_str().unwrap_or_default().to_owned();
    assert!(!run_id.is_empty(), "{run:#}");
    assert_eq!(manifests(&stack, SET).len(), 4, "every node was dumped");

    let log_path = stack.nats.log_path().expect("a private server");
    let log = std::fs::read_to_string(&log_path).expect("the server log");
    assert!(
        violations(&log).is_empty(),
        "the processes needed nothing beyond their permissions: {:#?}",
        violations(&log)
    );

    let login = stack
        .nats_login
        .as_ref()
        .expect("the server requires logins");
    // Without a credential the server lets nobody in.
    let anonymous = async_nats::ConnectOptions::new()
        .add_root_certificates(login.tls.ca.clone())
        .require_tls(true)
        .connect(stack.nats.url())
        .await;
    assert!(
        anonymous.is_err(),
        "a client without credentials is refused"
    );

    let names = stack.names().clone();
    let thief = NodeId::new("participant1").unwrap();
    let victim = NodeId::new("participant2").unwrap();
    let (sender, errors) = mpsc::unbounded_channel();
    let options = login
        .auth(&format!("agent-{thief}"))
        .apply(async_nats::ConnectOptions::new())
        .await
        .expect("the stolen seed");
    let client = options
        .name(INTRUDER)
        .custom_inbox_prefix(names.agent_inbox(&thief))
        .event_callback(move |event| {
            let sender = sender.clone();
            async move {
                if let Event::ServerError(ServerError::Other(text)) = event {
                    let _ = sender.send(text);
                }
            }
        })
        .connect(stack.nats.url())
        .await
        .expect("the stolen credential logs in");
    let mut intruder = Intruder { client, errors };

    // What the credential is for still works: its own heartbeat draws no error, so the
    // first error is about the forged one that follows it.
    intruder.publish(&names.heartbeat(&thief)).await;
    let forged_heartbeat = names.heartbeat(&victim);
    intruder.publish(&forged_heartbeat).await;
    intruder.refused("Publish", &forged_heartbeat).await;

    // Another node's ack, through JetStream as an agent sends one.
    let forged_ack = names.ack(&victim, &run_id);
    let jetstream = async_nats::jetstream::new(intruder.client.clone());
    let pending = jetstream
        .publish(forged_ack.clone(), Bytes::from_static(b"forged"))
        .await
        .expect("queued");
    intruder.refused("Publish", &forged_ack).await;
    assert!(
        tokio::time::timeout(Duration::from_secs(2), pending)
            .await
            .map_or(true, |ack| ack.is_err()),
        "the stream stored no forged ack"
    );

    // The lease and the epoch of the organisation.
    for key in [names.lease_key(ORGANISATION), names.epoch_key(ORGANISATION)] {
        let subject = names.bucket_key_subject(Bucket::Leader, &key);
        intruder.publish(&subject).await;
        intruder.refused("Publish", &subject).await;
    }

    // Another node's commands: its consumer, a consumer of ours filtering its subject, an
    // ephemeral consumer, or a plain subscription.
    let commands = names.command_stream();
    for subject in [
        format!(
            "$JS.API.CONSUMER.MSG.NEXT.{commands}.{}",
            names.agent_consumer(&victim)
        ),
        format!(
            "$JS.API.CONSUMER.INFO.{commands}.{}",
            names.agent_consumer(&victim)
        ),
        format!(
            "$JS.API.CONSUMER.CREATE.{commands}.{}.{}",
            names.agent_consumer(&thief),
            names.command(&victim)
        ),
        format!("$JS.API.CONSUMER.CREATE.{commands}"),
    ] {
        intruder.request(&subject).await;
    }
    intruder.subscribe(&names.commands()).await;

    // Another node's state: neither by its key nor by sequence (which is not confined to
    // a key).
    let nodes = names.bucket_stream(Bucket::Nodes);
    let victim_state = names.bucket_key_subject(Bucket::Nodes, victim.as_str());
    intruder
        .request(&format!("$JS.API.DIRECT.GET.{nodes}.{victim_state}"))
        .await;
    intruder
        .request(&format!("$JS.API.DIRECT.GET.{nodes}"))
        .await;
    intruder.publish(&victim_state).await;
    intruder.refused("Publish", &victim_state).await;

    // Run records: neither read nor written.
    let runs = names.bucket_stream(Bucket::Runs);
    let record = names.bucket_key_subject(Bucket::Runs, &run_id);
    intruder
        .request(&format!("$JS.API.DIRECT.GET.{runs}.{record}"))
        .await;
    intruder
        .request(&format!("$JS.API.STREAM.INFO.{runs}"))
        .await;
    intruder.publish(&record).await;
    intruder.refused("Publish", &record).await;

    // Other clients' replies (the coordinator's reads of run records come back there) and
    // other nodes' heartbeats.
    intruder.subscribe("_INBOX.>").await;
    intruder.subscribe(&names.heartbeats()).await;

    // The legitimate processes were not disturbed: the coordinator still answers.
    let (status, _) = ops_json(&stack, &["nodes"]);
    assert!(status.success(), "canton-ops nodes after the attempts");
    let log = std::fs::read_to_string(&log_path).expect("the server log");
    let refused = violations(&log);
    assert!(
        refused.iter().all(|line| line.contains(INTRUDER)),
        "only the intruder was refused: {refused:#?}"
    );
    let unclean = stack.shutdown().await.expect("shutdown");
    assert!(unclean.is_empty(), "did not stop cleanly: {unclean:?}");
}
