//! The command path in this process against a real nats-server and a canton-sim participant:
//! every rejection executes nothing (the sim's own action log is the witness), a redelivery
//! during a running action does not run it again, fences depose old epochs, mutating actions on
//! a node never overlap, and a lost journal refuses commands issued before the restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use canton_agent::actions::{
    ActionContext, ActionError, ActionHandler, ActionName, ActionOutput, Command, Idempotency,
};
use canton_sim::{Fault, FaultRule};
use futures::future::BoxFuture;
use prost::Message;
use proto_sidecar as pb;
use proto_sidecar::action::Kind;
use sidecar_bus::Bucket;
use sidecar_trust::{KeyPurpose, SigningIdentity};
use testkit::{NatsServer, Postgres};
use tokio::sync::Semaphore;

use crate::command_support::*;
use crate::support::{config, network, wait_for};

const CONNECTIVITY: &str =
    "/com.digitalasset.canton.admin.participant.v30.SynchronizerConnectivityService";

struct Setup {
    _nats: NatsServer,
    _postgres: Postgres,
    sims: canton_sim::SimNetwork,
    net: sidecar_bus::Network,
    trust: Trust,
    dir: tempfile::TempDir,
    acks: Acks,
    url: String,
}

async fn setup() -> Setup {
    show_logs();
    let nats = NatsServer::shared_or_start().unwrap();
    let postgres = Postgres::shared_or_start().unwrap();
    let sims = start_sim(&postgres).await;
    let net = network(nats.url()).await;
    let trust = Trust::new(net.names.network().as_str());
    let acks = Acks::collect(&net, &trust).await;
    Setup {
        url: nats.url().to_owned(),
        _nats: nats,
        _postgres: postgres,
        sims,
        net,
        trust,
        dir: tempfile::tempdir().unwrap(),
        acks,
    }
}

impl Setup {
    fn agent(&self, ack_wait: Duration, extra: Vec<Arc<dyn ActionHandler>>) -> RunningAgent {
        let mut agent_config = config(&self.url, &self.net, NODE);
        agent_config.canton = Some(canton_config(&self.sims));
        let trust_config = self.trust.write(self.dir.path());
        RunningAgent::start(
            agent_config,
            &trust_config,
            commands_config(&self.dir.path().join("journal"), ack_wait),
            extra,
        )
    }

    async fn send(&self, command: &pb::Command) {
        publish(&self.net, self.trust.sign(command)).await;
    }

    /// Confirms `epoch` with a fence, then runs probe `rp/probe/participant1` so the journal
    /// holds a command a replay can name; returns that command.
    async fn fence_then_journal_a_probe(&self, epoch: u64) -> pb::Command {
        self.send(&fence(&self.trust, "f1", epoch)).await;
        self.acks
            .wait("f1/fence/participant1", pb::AckStatus::Done)
            .await;
        let journalled = self.trust.command("rp", "probe", probe(), epoch);
        self.send(&journalled).await;
        self.acks
            .wait("rp/probe/participant1", pb::AckStatus::Done)
            .await;
        journalled
    }

    async fn reconnect_participant(&self) {
        let client = participant_client(&self.sims);
        client.reconnect_all_synchronizers(false).await.unwrap();
        wait_for("participant reconnected", DEADLINE, || async {
            client
                .list_connected_synchronizers()
                .await
                .is_ok_and(|list| !list.is_empty())
        })
        .await;
    }
}

fn fence(trust: &Trust, run: &str, epoch: u64) -> pb::Command {
    trust.command(run, "fence", Kind::Fence(pb::Fence { epoch }), epoch)
}

fn probe() -> Kind {
    Kind::Probe(pb::Probe::default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_every_rejection_reason_executes_nothing_and_a_valid_command_runs_once() {
    let s = setup().await;
    let agent = s.agent(Duration::from_secs(30), Vec::new());
    let log = ActionLog::from_now(&s.sims).await;
    let trust = &s.trust;
    const EPOCH: u64 = 3;

    let journalled = s.fence_then_journal_a_probe(EPOCH).await;
    let revoke = trust.command(
        "rv0",
        "revoke",
        Kind::Revoke(pb::Revoke {
            command_id: "rv/disconnect/participant1".into(),
            up_to_attempt: 1,
        }),
        EPOCH,
    );
    s.send(&revoke).await;
    s.acks
        .wait("rv0/revoke/participant1", pb::AckStatus::Done)
        .await;

    let disconnect = |run: &str| trust.command(run, "disconnect", disconnect_all(), EPOCH);
    let changed = |run: &str, change: &dyn Fn(&mut pb::Command)| {
        let mut command = disconnect(run);
        change(&mut command);
        command
    };
    let rogue = SigningIdentity::from_seed("org-a/rogue", KeyPurpose::Coordinator, ORG, [66; 32]);
    let mut bad_signature = sidecar_trust::sign_command(&trust.coordinator, &disconnect("bs"));
    bad_signature.signature[5] ^= 1;
    let mut wrong_org = disconnect("wo");
    wrong_org.organisation = "org-b".into();
    let mut replay = journalled.clone();
    replay.traceparent = "00-other".into();

    // (reason, envelope bytes, the run of the signed Rejected ack, when one is due: the
    // signature verified and the command names this node)
    let cases: Vec<(&str, Vec<u8>, Option<&str>)> = vec![
        ("bad_signature", bad_signature.encode_to_vec(), None),
        (
            "unknown_key",
            sidecar_trust::sign_command(&rogue, &disconnect("uk")).encode_to_vec(),
            None,
        ),
        (
            "wrong_network",
            trust.sign(&changed("wn", &|c| c.network = "elsewhere".into())),
            Some("wn"),
        ),
        (
            "wrong_node",
            trust.sign(&changed("wd", &|c| {
                c.node = "participant9".into();
                c.command_id = "wd/disconnect/participant9".into();
            })),
            None,
        ),
        (
            "wrong_organisation",
            sidecar_trust::sign_command(&trust.other_coordinator, &wrong_org).encode_to_vec(),
            Some("wo"),
        ),
        (
            "expired",
            trust.sign(&changed("ex", &|c| {
                c.issued_at_unix_ms -= 1_200_000;
                c.expires_at_unix_ms = now_ms() - 600_000;
            })),
            Some("ex"),
        ),
        (
            "not_yet_valid",
            trust.sign(&changed("ny", &|c| {
                c.issued_at_unix_ms += 600_000;
                c.expires_at_unix_ms += 600_000;
            })),
            Some("ny"),
        ),
        (
            "stale_epoch",
            trust.sign(&changed("se", &|c| c.epoch = EPOCH - 1)),
            Some("se"),
        ),
        (
            "future_epoch",
            trust.sign(&changed("fe", &|c| c.epoch = EPOCH + 5)),
            Some("fe"),
        ),
        (
            "replay_with_different_body",
            trust.sign(&replay),
            Some("rp"),
        ),
        ("revoked", trust.sign(&disconnect("rv")), Some("rv")),
        (
            "missing_approval",
            trust.sign(&trust.command(
                "ma",
                "restore",
                Kind::Restore(pb::Restore {
                    backup_set: "b1".into(),
                    ..Default::default()
                }),
                EPOCH,
            )),
            Some("ma"),
        ),
        (
            "malformed",
            trust.sign(&changed("ml", &|c| c.command_id = "not-an-id".into())),
            None,
        ),
        ("oversized", vec![0u8; 70 * 1024], None),
        (
            "invalid_claim",
            trust.sign(&changed("ic", &|c| {
                c.claim = Some(pb::Claim {
                    run: "someone-else".into(),
                    epoch: EPOCH,
                    revision: 1,
                })
            })),
            Some("ic"),
        ),
        (
            "not_supported",
            trust.sign(&trust.command(
                "ns",
                "backup",
                Kind::Backup(pb::Backup {
                    backup_set: "b1".into(),
                    ..Default::default()
                }),
                EPOCH,
            )),
            Some("ns"),
        ),
    ];
    for (reason, raw, _) in &cases {
        publish(&s.net, raw.clone()).await;
        wait_for(&format!("rejected as {reason}"), DEADLINE, || async {
            agent.rejected(reason) == 1
        })
        .await;
    }
    for (reason, _, ack_run) in &cases {
        let Some(run) = ack_run else { continue };
        wait_for(
            &format!("signed rejection ack for {reason}"),
            DEADLINE,
            || async {
                s.acks.all().iter().any(|seen| {
                    seen.ack.run == *run && seen.ack.status() == pb::AckStatus::Rejected
                })
            },
        )
        .await;
    }
    let stale = s
        .acks
        .all()
        .into_iter()
        .find(|seen| seen.ack.run == "se")
        .unwrap();
    assert_eq!(stale.ack.reject_reason(), pb::RejectReason::StaleEpoch);
    assert_eq!(stale.message_id, "se/disconnect/participant1/1/rejected");
    assert!(
        log.calls().await.is_empty(),
        "rejected commands reached the node: {:?}",
        log.calls().await
    );

    // A valid command runs exactly once, with its result in the signed Done ack.
    s.send(&disconnect("ok")).await;
    let done = s
        .acks
        .wait("ok/disconnect/participant1", pb::AckStatus::Done)
        .await;
    assert_eq!(done.message_id, "ok/disconnect/participant1/1/done");
    let result: serde_json::Value = serde_json::from_slice(&done.ack.result).unwrap();
    assert!(
        result["synchronizers"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["connected"] == false),
        "{result}"
    );
    assert_eq!(log.count("DisconnectAllSynchronizers").await, 1);
    s.send(&trust.command("ok2", "reconnect", reconnect_all(), EPOCH))
        .await;
    s.acks
        .wait("ok2/reconnect/participant1", pb::AckStatus::Done)
        .await;
    assert_eq!(log.count("ReconnectSynchronizers").await, 1);
    // The probe, the disconnect and the reconnect (fences and revokes are not actions).
    assert_eq!(agent.metrics.commands_done.get(), 3);
    // Every delivery was settled: acked, or terminated so it is never redelivered.
    wait_for("no delivery left unacked", DEADLINE, || async {
        ack_pending(&s.net).await == 0
    })
    .await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_a_command_redelivered_while_its_action_runs_is_not_run_again() {
    let s = setup().await;
    let agent = s.agent(Duration::from_secs(1), Vec::new());
    let log = ActionLog::from_now(&s.sims).await;
    let control = s.sims.node(NODE).unwrap().control();
    let hang = control
        .add_fault(&FaultRule {
            method: format!("{CONNECTIVITY}/DisconnectAllSynchronizers"),
            fault: Fault::Hang,
            times: None,
        })
        .await
        .unwrap();
    let command = s.trust.command("slow", "disconnect", disconnect_all(), 0);
    s.send(&command).await;
    wait_for(
        "two redeliveries while the action hangs",
        DEADLINE,
        || async { agent.metrics.commands_redelivered_running.get() >= 2 },
    )
    .await;
    let progress = s
        .acks
        .wait(&command.command_id, pb::AckStatus::Progress)
        .await;
    assert!(
        progress.message_id.contains("/1/progress/"),
        "{}",
        progress.message_id
    );
    control.remove_fault(hang).await.unwrap();
    s.acks.wait(&command.command_id, pb::AckStatus::Done).await;
    assert_eq!(log.count("DisconnectAllSynchronizers").await, 1);
    assert_eq!(agent.metrics.commands_done.get(), 1);
    s.reconnect_participant().await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_a_command_past_max_deliver_is_reported_as_poison() {
    let s = setup().await;
    let mut agent_config = config(&s.url, &s.net, NODE);
    agent_config.canton = Some(canton_config(&s.sims));
    let trust_config = s.trust.write(s.dir.path());
    let mut settings = commands_config(&s.dir.path().join("journal"), Duration::from_secs(1));
    settings.max_deliver = 2;
    let agent = RunningAgent::start(agent_config, &trust_config, settings, Vec::new());
    let control = s.sims.node(NODE).unwrap().control();
    let hang = control
        .add_fault(&FaultRule {
            method: format!("{CONNECTIVITY}/DisconnectAllSynchronizers"),
            fault: Fault::Hang,
            times: None,
        })
        .await
        .unwrap();
    let command = s.trust.command("poison", "disconnect", disconnect_all(), 0);
    s.send(&command).await;
    wait_for("max deliveries advisory", DEADLINE, || async {
        agent.metrics.commands_poisoned.get() == 1
    })
    .await;
    assert_eq!(agent.metrics.commands_redelivered_running.get(), 1);
    control.remove_fault(hang).await.unwrap();
    // The action still finishes and reports; the server just stopped redelivering it.
    s.acks.wait(&command.command_id, pb::AckStatus::Done).await;
    s.reconnect_participant().await;
    agent.stop().await;
}

/// A new leader advances `epoch.<org>` before it publishes anything; a command of the deposed
/// leader that reaches the agent before the new leader's fence (an agent frozen while the
/// leadership changed reads its subject in stream order) is refused, not run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_a_deposed_leaders_command_ahead_of_the_fence_is_refused_by_the_epoch_key() {
    let s = setup().await;
    let leader = s.net.kv(Bucket::Leader);
    let key = s.net.names.epoch_key(ORG);
    let epoch = |n: u64| {
        serde_json::to_vec(&serde_json::json!({"epoch": n, "holder": "c1", "tenure": 1}))
            .unwrap()
            .into()
    };
    let revision = leader.create(&key, epoch(1)).await.unwrap();
    let agent = s.agent(Duration::from_secs(30), Vec::new());
    let log = ActionLog::from_now(&s.sims).await;
    let trust = &s.trust;
    s.send(&trust.command("warm", "probe", probe(), 1)).await;
    s.acks
        .wait("warm/probe/participant1", pb::AckStatus::Done)
        .await;

    // The takeover: the epoch key moves to 2; no fence has reached the agent.
    leader.update(&key, epoch(2), revision).await.unwrap();
    s.send(&trust.command("late", "disconnect", disconnect_all(), 1))
        .await;
    let refused = s
        .acks
        .wait("late/disconnect/participant1", pb::AckStatus::Rejected)
        .await;
    assert_eq!(refused.ack.reject_reason(), pb::RejectReason::StaleEpoch);
    assert_eq!(refused.ack.epoch, 2, "the agent confirmed the key's epoch");
    s.send(&trust.command("next", "probe", probe(), 2)).await;
    s.acks
        .wait("next/probe/participant1", pb::AckStatus::Done)
        .await;
    assert!(log.calls().await.is_empty(), "{:?}", log.calls().await);
    assert_eq!(agent.rejected("stale_epoch"), 1);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_the_epoch_is_read_at_start_and_a_fence_deposes_older_epochs() {
    let s = setup().await;
    let heartbeats = crate::support::Heartbeats::collect(&s.net, NODE).await;
    let leader = s.net.kv(Bucket::Leader);
    leader
        .create(
            &s.net.names.epoch_key(ORG),
            serde_json::to_vec(&serde_json::json!({"epoch": 4, "holder": "c1", "tenure": 1}))
                .unwrap()
                .into(),
        )
        .await
        .unwrap();
    let agent = s.agent(Duration::from_secs(30), Vec::new());
    let log = ActionLog::from_now(&s.sims).await;
    let trust = &s.trust;

    s.send(&trust.command("e3", "disconnect", disconnect_all(), 3))
        .await;
    wait_for("epoch 3 below the stored 4", DEADLINE, || async {
        agent.rejected("stale_epoch") == 1
    })
    .await;
    s.send(&trust.command("e4", "probe", probe(), 4)).await;
    s.acks
        .wait("e4/probe/participant1", pb::AckStatus::Done)
        .await;

    s.send(&fence(trust, "f6", 6)).await;
    s.acks
        .wait("f6/fence/participant1", pb::AckStatus::Done)
        .await;
    s.send(&trust.command("old", "disconnect", disconnect_all(), 4))
        .await;
    let deposed = s
        .acks
        .wait("old/disconnect/participant1", pb::AckStatus::Rejected)
        .await;
    assert_eq!(deposed.ack.reject_reason(), pb::RejectReason::StaleEpoch);
    assert_eq!(agent.rejected("stale_epoch"), 2);
    s.send(&trust.command("new", "probe", probe(), 6)).await;
    let done = s
        .acks
        .wait("new/probe/participant1", pb::AckStatus::Done)
        .await;
    assert_eq!(done.ack.epoch, 6);
    wait_for("heartbeats carry the confirmed epoch", DEADLINE, || async {
        heartbeats.last().is_some_and(|h| h.confirmed_epoch == 6)
    })
    .await;
    assert!(log.calls().await.is_empty(), "{:?}", log.calls().await);
    agent.stop().await;

    // The fence is journalled: a restart keeps epoch 6 although the bucket says 4.
    let agent = s.agent(Duration::from_secs(30), Vec::new());
    s.send(&trust.command("old2", "disconnect", disconnect_all(), 5))
        .await;
    wait_for("epoch 5 refused after the restart", DEADLINE, || async {
        agent.rejected("stale_epoch") == 1
    })
    .await;
    assert!(log.calls().await.is_empty());
    agent.stop().await;
}

/// A mutating action that holds until the test releases it, recording overlaps.
struct Gate {
    kind: ActionName,
    active: Arc<AtomicUsize>,
    most_active: Arc<AtomicUsize>,
    started: Arc<AtomicUsize>,
    release: Arc<Semaphore>,
}

impl ActionHandler for Gate {
    fn kind(&self) -> ActionName {
        self.kind
    }

    fn idempotency(&self) -> Idempotency {
        Idempotency::Natural
    }

    fn run(
        &self,
        _command: Command,
        _context: ActionContext,
    ) -> BoxFuture<'static, Result<ActionOutput, ActionError>> {
        let (active, most, started, release) = (
            Arc::clone(&self.active),
            Arc::clone(&self.most_active),
            Arc::clone(&self.started),
            Arc::clone(&self.release),
        );
        Box::pin(async move {
            let now = active.fetch_add(1, Ordering::SeqCst) + 1;
            most.fetch_max(now, Ordering::SeqCst);
            started.fetch_add(1, Ordering::SeqCst);
            let permit = release.acquire().await;
            drop(permit);
            active.fetch_sub(1, Ordering::SeqCst);
            Ok(ActionOutput::default())
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_mutating_actions_on_a_node_never_overlap_while_probes_run_alongside() {
    let s = setup().await;
    let active = Arc::new(AtomicUsize::new(0));
    let most_active = Arc::new(AtomicUsize::new(0));
    let started = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Semaphore::new(0));
    let gates: Vec<Arc<dyn ActionHandler>> = [ActionName::Stop, ActionName::Start]
        .into_iter()
        .map(|kind| {
            Arc::new(Gate {
                kind,
                active: Arc::clone(&active),
                most_active: Arc::clone(&most_active),
                started: Arc::clone(&started),
                release: Arc::clone(&release),
            }) as Arc<dyn ActionHandler>
        })
        .collect();
    let agent = s.agent(Duration::from_secs(30), gates);
    let trust = &s.trust;
    s.send(&trust.command("g1", "stop", Kind::Stop(pb::Stop::default()), 0))
        .await;
    s.send(&trust.command("g2", "start", Kind::Start(pb::Start::default()), 0))
        .await;
    s.send(&trust.command("g3", "probe", probe(), 0)).await;
    wait_for("first gated action started", DEADLINE, || async {
        started.load(Ordering::SeqCst) == 1
    })
    .await;
    // The probe was delivered after both gated commands and finished while the first holds
    // the node: the second has been dispatched and waits its turn.
    s.acks
        .wait("g3/probe/participant1", pb::AckStatus::Done)
        .await;
    assert_eq!(started.load(Ordering::SeqCst), 1);
    release.add_permits(2);
    s.acks
        .wait("g1/stop/participant1", pb::AckStatus::Done)
        .await;
    s.acks
        .wait("g2/start/participant1", pb::AckStatus::Done)
        .await;
    assert_eq!(started.load(Ordering::SeqCst), 2);
    assert_eq!(most_active.load(Ordering::SeqCst), 1);
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_a_lost_journal_refuses_commands_issued_before_the_restart() {
    let s = setup().await;
    let log = ActionLog::from_now(&s.sims).await;
    let trust = &s.trust;
    let agent = s.agent(Duration::from_secs(30), Vec::new());
    s.send(&trust.command("before", "disconnect", disconnect_all(), 0))
        .await;
    s.acks
        .wait("before/disconnect/participant1", pb::AckStatus::Done)
        .await;
    agent.stop().await;
    std::fs::remove_dir_all(s.dir.path().join("journal")).unwrap();

    let issued_before_restart = trust.command("early", "reconnect", reconnect_all(), 0);
    s.send(&issued_before_restart).await;
    let agent = s.agent(Duration::from_secs(30), Vec::new());
    let refused = s
        .acks
        .wait("early/reconnect/participant1", pb::AckStatus::Rejected)
        .await;
    assert_eq!(refused.ack.reject_reason(), pb::RejectReason::LostJournal);
    assert_eq!(agent.rejected("lost_journal"), 1);
    assert_eq!(log.count("ReconnectSynchronizers").await, 0);
    wait_for("refused command terminated", DEADLINE, || async {
        ack_pending(&s.net).await == 0
    })
    .await;

    // Issued after the refusal above, so after the restart.
    let mut issued_after = trust.command("late", "reconnect", reconnect_all(), 0);
    issued_after.issued_at_unix_ms = now_ms();
    s.send(&issued_after).await;
    s.acks
        .wait("late/reconnect/participant1", pb::AckStatus::Done)
        .await;
    assert_eq!(log.count("ReconnectSynchronizers").await, 1);
    agent.stop().await;

    // The loss is journalled: a later start still refuses what was issued before it.
    let agent = s.agent(Duration::from_secs(30), Vec::new());
    let mut stale = trust.command("early2", "disconnect", disconnect_all(), 0);
    stale.issued_at_unix_ms = issued_before_restart.issued_at_unix_ms;
    s.send(&stale).await;
    s.acks
        .wait("early2/disconnect/participant1", pb::AckStatus::Rejected)
        .await;
    assert_eq!(log.count("DisconnectAllSynchronizers").await, 1);
    agent.stop().await;
}

/// A handler of a chosen idempotency class that counts its runs and answers `already_done`
/// as told.
struct Recording {
    kind: ActionName,
    idempotency: Idempotency,
    done_already: bool,
    runs: Arc<AtomicUsize>,
}

impl ActionHandler for Recording {
    fn kind(&self) -> ActionName {
        self.kind
    }

    fn idempotency(&self) -> Idempotency {
        self.idempotency
    }

    fn already_done(
        &self,
        _command: &Command,
    ) -> BoxFuture<'static, Result<Option<ActionOutput>, ActionError>> {
        let answer = self.done_already.then(|| ActionOutput {
            result: b"{\"found\":true}".to_vec(),
            detail: "found in place".into(),
        });
        Box::pin(async move { Ok(answer) })
    }

    fn run(
        &self,
        _command: Command,
        _context: ActionContext,
    ) -> BoxFuture<'static, Result<ActionOutput, ActionError>> {
        self.runs.fetch_add(1, Ordering::SeqCst);
        Box::pin(async { Ok(ActionOutput::default()) })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_an_attempt_interrupted_by_an_earlier_boot_follows_its_idempotency_class() {
    use canton_agent::commands::{FileJournal, Journal, Record};
    let s = setup().await;
    let trust = &s.trust;
    // (action, class, already done?, expected ack, expected runs)
    let cases = [
        (
            ActionName::ImportPartyAcs,
            Idempotency::Unguardable,
            true,
            pb::AckStatus::OutcomeUnknown,
            0,
        ),
        (
            ActionName::Backup,
            Idempotency::Guarded,
            true,
            pb::AckStatus::Done,
            0,
        ),
        (
            ActionName::Verify,
            Idempotency::Guarded,
            false,
            pb::AckStatus::Done,
            1,
        ),
        (
            ActionName::SetPruningSchedule,
            Idempotency::Natural,
            false,
            pb::AckStatus::Done,
            1,
        ),
    ];
    let kinds = [
        Kind::ImportPartyAcs(pb::ImportPartyAcs::default()),
        Kind::Backup(pb::Backup::default()),
        Kind::Verify(pb::Verify::default()),
        Kind::SetPruningSchedule(pb::SetPruningSchedule::default()),
    ];
    let mut handlers: Vec<Arc<dyn ActionHandler>> = Vec::new();
    let mut runs = Vec::new();
    let mut commands = Vec::new();
    {
        let mut journal = FileJournal::open(&s.dir.path().join("journal"))
            .unwrap()
            .journal;
        for ((action, class, done_already, _, _), kind) in cases.iter().zip(kinds) {
            let counter = Arc::new(AtomicUsize::new(0));
            handlers.push(Arc::new(Recording {
                kind: *action,
                idempotency: *class,
                done_already: *done_already,
                runs: Arc::clone(&counter),
            }));
            runs.push(counter);
            let mut command = trust.command("int", action.as_str(), kind, 0);
            if *action == ActionName::ImportPartyAcs {
                // Destructive by default: it carries an operator's approval.
                let approval = pb::OperatorApproval {
                    network: command.network.clone(),
                    organisation: ORG.into(),
                    run: command.run.clone(),
                    step: command.step.clone(),
                    nodes: vec![NODE.into()],
                    operator: "alice".into(),
                    approved_at_unix_ms: now_ms() - 1_000,
                    expires_at_unix_ms: now_ms() + 600_000,
                    comment: String::new(),
                };
                command.approval = Some(sidecar_trust::sign_approval(&trust.operator, &approval));
            }
            journal
                .append(&Record::Started {
                    command_id: command.command_id.clone(),
                    attempt: 1,
                    body_hash: sidecar_trust::body_hash(&command.encode_to_vec()),
                    boot_id: "an-earlier-boot".into(),
                    action: action.to_string(),
                    expires_at_unix_ms: command.expires_at_unix_ms,
                    at_unix_ms: now_ms() - 5_000,
                })
                .unwrap();
            commands.push(command);
        }
    }
    let agent = s.agent(Duration::from_secs(30), handlers);
    for (command, ((_, _, _, status, expected_runs), runs)) in
        commands.iter().zip(cases.iter().zip(&runs))
    {
        s.send(command).await;
        let ack = s.acks.wait(&command.command_id, *status).await;
        assert_eq!(
            runs.load(Ordering::SeqCst),
            *expected_runs,
            "{}",
            command.command_id
        );
        if *status == pb::AckStatus::OutcomeUnknown {
            assert!(
                ack.ack.detail.contains("operator") || ack.ack.detail.contains("mark it done"),
                "{}",
                ack.ack.detail
            );
            assert_eq!(
                ack.message_id,
                format!("{}/1/outcome_unknown", command.command_id)
            );
        }
    }
    assert_eq!(agent.metrics.commands_outcome_unknown.get(), 1);
    agent.stop().await;
}

/// A long action that journals a child process group and reports progress as it goes.
struct Long {
    runs: Arc<AtomicUsize>,
    child_pgid: Arc<std::sync::Mutex<Option<i32>>>,
}

impl ActionHandler for Long {
    fn kind(&self) -> ActionName {
        ActionName::Backup
    }

    fn idempotency(&self) -> Idempotency {
        Idempotency::Guarded
    }

    fn run(
        &self,
        _command: Command,
        context: ActionContext,
    ) -> BoxFuture<'static, Result<ActionOutput, ActionError>> {
        let runs = Arc::clone(&self.runs);
        let child_pgid = Arc::clone(&self.child_pgid);
        Box::pin(async move {
            runs.fetch_add(1, Ordering::SeqCst);
            let mut child = tokio::process::Command::new("sleep")
                .arg("300")
                .process_group(0)
                .spawn()
                .map_err(|e| ActionError::Failed(e.to_string()))?;
            let pid = i32::try_from(child.id().unwrap_or_default()).unwrap_or_default();
            context.record_child(pid).await?;
            *child_pgid.lock().unwrap() = Some(pid);
            for step in 0..25u64 {
                context.progress(canton_agent::actions::Progress {
                    done: step,
                    total: 25,
                    unit: "steps".into(),
                    message: String::new(),
                });
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            child
                .kill()
                .await
                .map_err(|e| ActionError::Failed(e.to_string()))?;
            Ok(ActionOutput {
                result: b"{}".to_vec(),
                detail: "long action done".into(),
            })
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_a_long_action_reports_progress_keeps_its_delivery_and_journals_its_child() {
    use canton_agent::commands::{FileJournal, Record};
    let s = setup().await;
    let runs = Arc::new(AtomicUsize::new(0));
    let child_pgid = Arc::new(std::sync::Mutex::new(None));
    let handler = Arc::new(Long {
        runs: Arc::clone(&runs),
        child_pgid: Arc::clone(&child_pgid),
    });
    // Five seconds of work against a 3 s ack_wait: progress keeps the delivery alive.
    let agent = s.agent(Duration::from_secs(3), vec![handler]);
    let command = s
        .trust
        .command("long", "backup", Kind::Backup(pb::Backup::default()), 0);
    s.send(&command).await;
    let progress = s
        .acks
        .wait(&command.command_id, pb::AckStatus::Progress)
        .await;
    assert_eq!(progress.ack.progress.as_ref().unwrap().total, 25);
    s.acks.wait(&command.command_id, pb::AckStatus::Done).await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    assert_eq!(agent.metrics.commands_redelivered_running.get(), 0);
    let progress_acks = s
        .acks
        .of(&command.command_id)
        .iter()
        .filter(|seen| seen.ack.status() == pb::AckStatus::Progress)
        .count();
    // Rate-limited to one a second over five seconds of reports every 200 ms.
    assert!(
        (2..=7).contains(&progress_acks),
        "{progress_acks} progress acks"
    );
    agent.stop().await;

    let pgid = child_pgid.lock().unwrap().unwrap();
    let records = FileJournal::open(&s.dir.path().join("journal"))
        .unwrap()
        .records;
    assert!(
        records.iter().any(|r| matches!(r, Record::Child { pgid: p, command_id, .. } if *p == pgid && *command_id == command.command_id)),
        "{records:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_a_mutating_command_runs_only_while_its_run_holds_the_node_claim() {
    let s = setup().await;
    let agent = s.agent(Duration::from_secs(30), Vec::new());
    let log = ActionLog::from_now(&s.sims).await;
    let claims = s.net.kv(Bucket::Claims);
    let claimed = |run: &str, step: &str, kind: Kind| {
        let mut command = s.trust.command(run, step, kind, 0);
        command.claim = Some(pb::Claim {
            run: run.into(),
            epoch: 0,
            revision: 0,
        });
        command
    };
    let claim_value = |run: &str| {
        serde_json::to_vec(&serde_json::json!({"run": run, "epoch": 0, "organisation": ORG}))
            .unwrap()
            .into()
    };

    // No claim in the bucket.
    let unclaimed = claimed("c1", "disconnect", disconnect_all());
    s.send(&unclaimed).await;
    let refused = s
        .acks
        .wait(&unclaimed.command_id, pb::AckStatus::Rejected)
        .await;
    assert_eq!(refused.ack.reject_reason(), pb::RejectReason::InvalidClaim);

    // Held by another run.
    let revision = claims
        .create(&s.net.names.claim_key(NODE), claim_value("someone"))
        .await
        .unwrap();
    let other = claimed("c2", "disconnect", disconnect_all());
    s.send(&other).await;
    s.acks
        .wait(&other.command_id, pb::AckStatus::Rejected)
        .await;
    assert_eq!(agent.rejected("invalid_claim"), 2);
    assert!(log.calls().await.is_empty(), "{:?}", log.calls().await);

    // Held by the command's run.
    claims
        .update(&s.net.names.claim_key(NODE), claim_value("c3"), revision)
        .await
        .unwrap();
    let holder = claimed("c3", "disconnect", disconnect_all());
    s.send(&holder).await;
    s.acks.wait(&holder.command_id, pb::AckStatus::Done).await;
    assert_eq!(log.count("DisconnectAllSynchronizers").await, 1);
    s.reconnect_participant().await;
    agent.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_connectivity_actions_change_one_synchronizer_and_keep_the_rest_of_its_config() {
    let s = setup().await;
    let agent = s.agent(Duration::from_secs(30), Vec::new());
    let log = ActionLog::from_now(&s.sims).await;
    let client = participant_client(&s.sims);
    let registered = client.list_registered_synchronizers().await.unwrap();
    let original = registered[0].clone();
    let alias = original.alias.clone();
    let trust = &s.trust;
    let run = |name: &str, kind: Kind| trust.command(name, "connectivity", kind, 0);

    let manual = run(
        "m1",
        Kind::SetManualConnect(pb::SetManualConnect {
            synchronizer_alias: alias.clone(),
            manual_connect: true,
        }),
    );
    s.send(&manual).await;
    s.acks.wait(&manual.command_id, pb::AckStatus::Done).await;
    let after = client.list_registered_synchronizers().await.unwrap();
    assert!(after[0].manual_connect);
    assert_eq!(
        after[0].sequencer_urls, original.sequencer_urls,
        "the rest of the config is kept"
    );
    assert_eq!(after[0].priority, original.priority);

    let one = run(
        "d1",
        Kind::Disconnect(pb::Disconnect {
            synchronizer_alias: alias.clone(),
        }),
    );
    s.send(&one).await;
    let done = s.acks.wait(&one.command_id, pb::AckStatus::Done).await;
    let result: serde_json::Value = serde_json::from_slice(&done.ack.result).unwrap();
    assert_eq!(result["synchronizers"][0]["connected"], false, "{result}");

    // Reconnect-all skips a manual-connect synchronizer.
    let all = run("r1", reconnect_all());
    s.send(&all).await;
    s.acks.wait(&all.command_id, pb::AckStatus::Done).await;
    assert!(
        client
            .list_connected_synchronizers()
            .await
            .unwrap()
            .is_empty()
    );

    let named = run(
        "r2",
        Kind::Reconnect(pb::Reconnect {
            synchronizer_alias: alias.clone(),
        }),
    );
    s.send(&named).await;
    s.acks.wait(&named.command_id, pb::AckStatus::Done).await;
    assert_eq!(
        client.list_connected_synchronizers().await.unwrap().len(),
        1
    );

    // Connecting a registered alias reconnects it rather than registering it twice.
    let connect = run(
        "c1",
        Kind::Connect(pb::Connect {
            synchronizer_alias: alias.clone(),
            sequencer_urls: original.sequencer_urls.clone(),
            manual_connect: true,
        }),
    );
    s.send(&connect).await;
    s.acks.wait(&connect.command_id, pb::AckStatus::Done).await;

    let back = run(
        "m2",
        Kind::SetManualConnect(pb::SetManualConnect {
            synchronizer_alias: alias.clone(),
            manual_connect: false,
        }),
    );
    s.send(&back).await;
    s.acks.wait(&back.command_id, pb::AckStatus::Done).await;
    assert!(!client.list_registered_synchronizers().await.unwrap()[0].manual_connect);

    let unknown = run(
        "u1",
        Kind::Disconnect(pb::Disconnect {
            synchronizer_alias: "no-such-alias".into(),
        }),
    );
    s.send(&unknown).await;
    let failed = s
        .acks
        .wait(&unknown.command_id, pb::AckStatus::Failed)
        .await;
    assert!(
        failed.ack.detail.contains("participant1"),
        "{}",
        failed.ack.detail
    );

    assert_eq!(
        log.calls().await,
        [
            "ModifySynchronizer",
            "DisconnectSynchronizer",
            "ReconnectSynchronizers",
            "ReconnectSynchronizer",
            "ReconnectSynchronizer",
            "ModifySynchronizer",
            "DisconnectSynchronizer",
        ]
    );
    agent.stop().await;
}

/// A small deterministic generator: the hostile mix is the same on every run.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, bound: usize) -> usize {
        usize::try_from(self.next() % bound as u64).unwrap()
    }

    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next() as u8).collect()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_a_thousand_hostile_envelopes_are_all_rejected_by_reason_and_nothing_runs() {
    const HOSTILE: usize = 1_000;
    const EPOCH: u64 = 2;
    let s = setup().await;
    let agent = s.agent(Duration::from_secs(30), Vec::new());
    let heartbeats = crate::support::Heartbeats::collect(&s.net, NODE).await;
    let log = ActionLog::from_now(&s.sims).await;
    let trust = &s.trust;
    let journalled = s.fence_then_journal_a_probe(EPOCH).await;
    let before = agent.metrics.commands_rejected.get();

    let rogue = SigningIdentity::from_seed("org-a/rogue", KeyPurpose::Coordinator, ORG, [77; 32]);
    let mut rng = SplitMix(0x5eed_cafe);
    // Classes whose reason is fixed, and how many of each were sent.
    let mut expected: std::collections::BTreeMap<&str, u64> = Default::default();
    let started = std::time::Instant::now();
    for i in 0..HOSTILE {
        let run = format!("h{i}");
        let mut command = trust.command(&run, "disconnect", disconnect_all(), EPOCH);
        let (raw, reason) = match i % 14 {
            // Garbage, truncated and bit-flipped envelopes: any reason, never executed.
            0 => {
                let len = rng.below(600);
                (rng.bytes(len), None)
            }
            1 => {
                let signed = trust.sign(&command);
                let cut = rng.below(signed.len());
                (signed[..cut].to_vec(), None)
            }
            2 => {
                let mut signed = trust.sign(&command);
                let at = rng.below(signed.len());
                signed[at] ^= 1 << rng.below(8);
                (signed, None)
            }
            3 => {
                let mut unsigned = sidecar_trust::sign_command(&trust.coordinator, &command);
                unsigned.signature.clear();
                (unsigned.encode_to_vec(), Some("bad_signature"))
            }
            4 => (
                sidecar_trust::sign_command(&rogue, &command).encode_to_vec(),
                Some("unknown_key"),
            ),
            5 => {
                command.organisation = "org-b".into();
                (
                    sidecar_trust::sign_command(&trust.other_coordinator, &command).encode_to_vec(),
                    Some("wrong_organisation"),
                )
            }
            6 => {
                command.issued_at_unix_ms -= 1_200_000;
                command.expires_at_unix_ms = now_ms() - 600_000;
                (trust.sign(&command), Some("expired"))
            }
            7 => {
                command.issued_at_unix_ms += 600_000;
                command.expires_at_unix_ms += 600_000;
                (trust.sign(&command), Some("not_yet_valid"))
            }
            8 => {
                command.epoch = EPOCH - 1;
                (trust.sign(&command), Some("stale_epoch"))
            }
            9 => {
                command.epoch = EPOCH + 1 + rng.next() % 1_000;
                (trust.sign(&command), Some("future_epoch"))
            }
            10 => {
                command.node = "participant9".into();
                command.command_id = format!("{run}/disconnect/participant9");
                (trust.sign(&command), Some("wrong_node"))
            }
            11 => {
                command.network = format!("other{i}");
                (trust.sign(&command), Some("wrong_network"))
            }
            12 => {
                // The journalled command again, with another body.
                let mut replay = journalled.clone();
                replay.traceparent = format!("00-replay-{i}");
                (trust.sign(&replay), Some("replay_with_different_body"))
            }
            _ => {
                let len = 65 * 1024 + rng.below(128 * 1024);
                (rng.bytes(len), Some("oversized"))
            }
        };
        if let Some(reason) = reason {
            *expected.entry(reason).or_default() += 1;
        }
        publish(&s.net, raw).await;
    }
    let published = started.elapsed();
    let took = wait_for("every hostile envelope rejected", DEADLINE, || async {
        agent.metrics.commands_rejected.get() - before == HOSTILE as u64
    })
    .await;
    eprintln!(
        "{HOSTILE} hostile envelopes published in {published:?}, all rejected {took:?} later"
    );
    // Garbage, cut and flipped envelopes fail at decoding, the key or the signature; every
    // other reason can only come from its own class.
    let reached_by_mutation = ["malformed", "unknown_key", "bad_signature"];
    for (reason, count) in &expected {
        let counted = agent.rejected(reason);
        if reached_by_mutation.contains(reason) {
            assert!(counted >= *count, "{reason}: {counted} < {count}");
        } else {
            assert_eq!(counted, *count, "rejections counted as {reason}");
        }
    }
    let by_reason: u64 = agent.metrics.rejections.iter().map(|(_, n)| n).sum();
    assert_eq!(
        by_reason - before,
        HOSTILE as u64,
        "each rejection under one reason"
    );
    assert!(
        log.calls().await.is_empty(),
        "hostile input reached the node: {:?}",
        log.calls().await
    );
    assert_eq!(
        agent.metrics.commands_done.get(),
        1,
        "the probe only (a fence is not an action)"
    );
    wait_for("no hostile delivery left unacked", DEADLINE, || async {
        ack_pending(&s.net).await == 0
    })
    .await;

    // The agent is still itself: heartbeating, and a valid command runs exactly once.
    let after_flood = std::time::Instant::now();
    wait_for("heartbeats after the flood", DEADLINE, || async {
        !heartbeats.since(after_flood).is_empty()
    })
    .await;
    s.send(&trust.command("ok", "disconnect", disconnect_all(), EPOCH))
        .await;
    s.acks
        .wait("ok/disconnect/participant1", pb::AckStatus::Done)
        .await;
    assert_eq!(log.count("DisconnectAllSynchronizers").await, 1);
    agent.stop().await;
}
