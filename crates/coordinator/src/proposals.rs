//! The cross-organisation proposal exchange (DESIGN §5). A proposal is an immutable document
//! every organisation's coordinator signs answers to: `Accept(hash)` or `Abort(hash)`. All of
//! it lives on one stream, `CS_<NET>_PROP` (`cs.<net>.prop.<org>`, each organisation
//! publishing under its own token only), and every coordinator rebuilds its view by reading
//! the stream and checking each message against the signed network configuration, so no
//! coordinator has to trust another's bookkeeping and a restarted one loses nothing.
//!
//! Messages are published with a `Nats-Msg-Id` derived from (organisation, kind, hash), and
//! an answer is only sent when the book does not show it yet, so repeating a call sends
//! nothing twice.
//!
//! A joint run (`joint-disconnect`) has phases. No organisation touches its nodes before every
//! organisation accepted; then each leader runs the phase on its own nodes as an ordinary run
//! (its id derived from the proposal hash, so a restarted or new leader finds it) and reports
//! the nodes' outcomes in a signed `PhaseDone`. The phase is done when every organisation
//! reported it; until then the view names who is missing.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use proto_sidecar as pb;
use proto_sidecar::proposal_message::Kind;
use sha2::{Digest, Sha256};
use sidecar_trust::{ProposalBook, sign_proposal_message, verify_proposal_message};

use crate::driver::StartRequest;
use crate::driver::ports::{Clock, RunStore, SystemClock};
use crate::driver::record::{RunRecord, run_key};
use crate::nats::{NatsStore, publish_durable};
use crate::service::Shared;
use sidecar_core::NodeStatus;

/// The runbook name a recovery-timestamp proposal carries.
pub const DR_TIMESTAMP: &str = "dr-timestamp";
/// Every organisation disconnects its participants from a synchronizer.
pub const JOINT_DISCONNECT: &str = "joint-disconnect";
/// The one phase of a joint disconnect, and the local runbook each organisation runs for it.
const DISCONNECT_PHASE: &str = "disconnect";
/// How long reading the whole stream may take before the call fails as unavailable.
const READ_DEADLINE: Duration = Duration::from_secs(10);

/// Why a proposal call failed.
#[derive(Debug, thiserror::Error)]
pub enum ProposalsError {
    #[error("the proposal stream is unavailable: {0}")]
    Unavailable(String),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Refused(String),
}

/// Every proposal on the stream with the answers recorded against it, oldest first. Messages
/// that fail verification (unknown key, wrong organisation, another network, not canonical)
/// or do not fit their proposal are skipped and logged: a forged answer changes nothing.
pub async fn books(shared: &Shared) -> Result<Vec<ProposalBook>, ProposalsError> {
    let raw = tokio::time::timeout(READ_DEADLINE, read_stream(shared))
        .await
        .map_err(|_| {
            ProposalsError::Unavailable(format!("reading took longer than {READ_DEADLINE:?}"))
        })??;
    let now = SystemClock.now_ms();
    let network = shared.config.network.as_str().to_owned();
    let mut books: Vec<ProposalBook> = Vec::new();
    let mut answers = Vec::new();
    for (sequence, payload) in raw {
        let verified = match verify_proposal_message(&payload, &shared.keys, &network, now) {
            Ok(verified) => verified,
            Err(rejection) => {
                tracing::warn!(sequence, %rejection, "proposal stream: message refused");
                continue;
            }
        };
        match &verified.message {
            Kind::Proposal(document) => match ProposalBook::open(document.clone()) {
                Ok(book) if books.iter().all(|known| known.hash() != book.hash()) => {
                    books.push(book);
                }
                Ok(_) => {}
                Err(error) => tracing::warn!(sequence, %error, "proposal stream: document refused"),
            },
            _ => answers.push((sequence, verified)),
        }
    }
    for (sequence, answer) in answers {
        let hash = answered_hash(&answer.message);
        let Some(book) = books.iter_mut().find(|book| book.hash()[..] == hash[..]) else {
            tracing::warn!(sequence, organisation = %answer.organisation, "proposal stream: answer to an unknown proposal");
            continue;
        };
        if let Err(error) = book.record(&answer) {
            tracing::warn!(sequence, %error, "proposal stream: answer refused");
        }
    }
    Ok(books)
}

fn answered_hash(message: &Kind) -> &[u8] {
    match message {
        Kind::Accept(accept) => &accept.proposal_hash,
        Kind::PhaseDone(done) => &done.proposal_hash,
        Kind::Abort(abort) => &abort.proposal_hash,
        Kind::Proposal(_) => &[],
    }
}

/// (stream sequence, payload) of every message, in stream order.
async fn read_stream(shared: &Shared) -> Result<Vec<(u64, Bytes)>, ProposalsError> {
    let unavailable = |e: &dyn std::fmt::Display| ProposalsError::Unavailable(e.to_string());
    let jetstream = &shared.network.jetstream;
    let mut stream = jetstream
        .get_stream(shared.names().proposal_stream())
        .await
        .map_err(|e| unavailable(&e))?;
    let state = stream
        .info()
        .await
        .map_err(|e| unavailable(&e))?
        .state
        .clone();
    if state.messages == 0 {
        return Ok(Vec::new());
    }
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::push::OrderedConfig {
            deliver_subject: jetstream.client().new_inbox(),
            ..Default::default()
        })
        .await
        .map_err(|e| unavailable(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| unavailable(&e))?;
    let mut read = Vec::new();
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| unavailable(&e))?;
        let sequence = message.info().map_err(|e| unavailable(&e))?.stream_sequence;
        read.push((sequence, message.payload.clone()));
        if sequence >= state.last_sequence {
            break;
        }
    }
    Ok(read)
}

/// The book whose hash is `wanted` (full hex, or a prefix of at least 8 digits naming one).
pub fn find<'a>(
    books: &'a [ProposalBook],
    wanted: &str,
) -> Result<&'a ProposalBook, ProposalsError> {
    let wanted = wanted.trim().to_ascii_lowercase();
    if wanted.len() < 8 || !wanted.chars().all(|c| c.is_ascii_hexdigit()) {
        return Err(ProposalsError::Refused(format!(
            "{wanted:?} is not a proposal hash: give at least 8 hex digits (`canton-ops proposals` lists them)"
        )));
    }
    let matching: Vec<&ProposalBook> = books
        .iter()
        .filter(|book| hex::encode(book.hash()).starts_with(&wanted))
        .collect();
    match matching.as_slice() {
        [one] => Ok(one),
        [] => Err(ProposalsError::NotFound(format!(
            "no proposal with hash {wanted} on the network's proposal stream"
        ))),
        _ => Err(ProposalsError::Refused(format!(
            "hash prefix {wanted} names {} proposals; give more digits",
            matching.len()
        ))),
    }
}

/// Signs `message` with our coordinator key and publishes it under our organisation's
/// subject. The message id makes a resend within the stream's duplicate window a no-op.
async fn publish(
    shared: &Shared,
    message: &pb::ProposalMessage,
    id: &str,
) -> Result<(), ProposalsError> {
    let envelope = sign_proposal_message(&shared.proposal_signer, message);
    publish_durable(
        &shared.network.jetstream,
        shared.names().proposals(&shared.organisation),
        &format!("{}/{id}", shared.organisation),
        Bytes::from(envelope.encode_to_vec()),
        Duration::from_secs(5),
    )
    .await
    .map_err(ProposalsError::Unavailable)
}

/// Publishes `document` (if the stream does not have it yet) and our acceptance of it
/// (if not recorded yet). Returns the proposal's book as the stream then shows it.
pub async fn propose(
    shared: &Shared,
    document: pb::Proposal,
) -> Result<ProposalBook, ProposalsError> {
    let known = books(shared).await?;
    propose_among(shared, document, &known).await
}

/// [`propose`] with the books already read from the stream.
async fn propose_among(
    shared: &Shared,
    document: pb::Proposal,
    known: &[ProposalBook],
) -> Result<ProposalBook, ProposalsError> {
    let mut book =
        ProposalBook::open(document.clone()).map_err(|e| ProposalsError::Refused(e.to_string()))?;
    let hash = hex::encode(book.hash());
    if let Some(existing) = known.iter().find(|known| known.hash() == book.hash()) {
        book = existing.clone();
    } else {
        let message = pb::ProposalMessage {
            kind: Some(Kind::Proposal(document)),
        };
        publish(shared, &message, &format!("proposal/{hash}")).await?;
    }
    if book.missing_accepts().contains(&shared.organisation) && book.aborted().is_none() {
        // The answer reads the proposal back from the stream.
        return answer(shared, &book, true, "").await;
    }
    reread(shared, &hash).await
}

/// Our organisation's answer to `book`: accept, or abort with `reason`. Refused when it
/// cannot change anything: an aborted proposal is not accepted, an agreed one not aborted.
pub async fn answer(
    shared: &Shared,
    book: &ProposalBook,
    accept: bool,
    reason: &str,
) -> Result<ProposalBook, ProposalsError> {
    let hash = hex::encode(book.hash());
    let ours = &shared.organisation;
    let proposal = book.proposal();
    if !proposal
        .organisations
        .iter()
        .any(|o| &o.organisation == ours)
    {
        return Err(ProposalsError::Refused(format!(
            "organisation {ours} is not a party to proposal {hash}"
        )));
    }
    if let Some((by, why)) = book.aborted() {
        if !accept && by == ours {
            return Ok(book.clone());
        }
        return Err(ProposalsError::Refused(format!(
            "proposal {hash} was aborted by {by} ({why}); nothing based on it goes ahead — make a new proposal"
        )));
    }
    let already_accepted = !book.missing_accepts().contains(ours);
    let at_unix_ms = SystemClock.now_ms();
    let (kind, id) = if accept {
        if already_accepted {
            return Ok(book.clone());
        }
        (
            Kind::Accept(pb::Accept {
                proposal_hash: book.hash().to_vec(),
                organisation: ours.clone(),
                at_unix_ms,
            }),
            format!("accept/{hash}"),
        )
    } else {
        if book.all_accepted() {
            return Err(ProposalsError::Refused(format!(
                "proposal {hash} is agreed by every organisation; an abort can no longer withdraw it"
            )));
        }
        if reason.trim().is_empty() {
            return Err(ProposalsError::Refused(
                "an abort needs a reason (--reason) for the other organisations".to_owned(),
            ));
        }
        (
            Kind::Abort(pb::Abort {
                proposal_hash: book.hash().to_vec(),
                organisation: ours.clone(),
                reason: reason.trim().to_owned(),
                at_unix_ms,
            }),
            format!("abort/{hash}"),
        )
    };
    publish(shared, &pb::ProposalMessage { kind: Some(kind) }, &id).await?;
    reread(shared, &hash).await
}

/// The book of `hash` read back from the stream, so the answer reports what others will see.
async fn reread(shared: &Shared, hash: &str) -> Result<ProposalBook, ProposalsError> {
    let books = books(shared).await?;
    find(&books, hash).cloned()
}

/// The proposal document for a recorded recovery timestamp: every organisation of the
/// network with its nodes, the timestamp and how it was reached, and a digest of the
/// evidence table, so accepting it means accepting exactly that evidence.
pub fn dr_timestamp_document(
    network: &str,
    proposer: &str,
    organisations: &BTreeMap<String, Vec<String>>,
    record: &crate::dr::DrRecord,
    proposal: &sidecar_core::dr_timestamp::Proposal,
) -> pb::Proposal {
    let evidence = serde_json::to_vec(&proposal.evidence).unwrap_or_default();
    let parameters = [
        ("timestamp_micros", proposal.timestamp_micros.to_string()),
        (
            "agreed_period_end_micros",
            proposal.agreed_period_end_micros.to_string(),
        ),
        ("margin_micros", proposal.margin_micros.to_string()),
        ("quorum", proposal.quorum.to_string()),
        ("required", proposal.required.to_string()),
        ("listed", proposal.listed.join(",")),
        ("agreeing", proposal.agreeing.join(",")),
        ("evidence_sha256", hex::encode(Sha256::digest(&evidence))),
        ("run", record.run.clone()),
    ];
    let mut document = pb::Proposal {
        network: network.to_owned(),
        proposal_id: record.run.clone(),
        runbook: DR_TIMESTAMP.to_owned(),
        organisations: organisations
            .iter()
            .map(|(organisation, nodes)| pb::OrganisationNodes {
                organisation: organisation.clone(),
                nodes: nodes.clone(),
            })
            .collect(),
        parameters: parameters
            .into_iter()
            .map(|(key, value)| pb::Parameter {
                key: key.to_owned(),
                value,
            })
            .collect(),
        phases: Vec::new(),
        proposer: proposer.to_owned(),
        created_at_unix_ms: record.recorded_at_unix_ms,
    };
    sidecar_trust::canonicalize_proposal(&mut document);
    document
}

/// A joint run's document: every organisation with its nodes, the parameters the local runs
/// take, one phase. The request id names it, so a repeat finds the proposal already there.
pub fn joint_document(
    network: &str,
    proposer: &str,
    organisations: &BTreeMap<String, Vec<String>>,
    runbook: &str,
    parameters: &BTreeMap<String, String>,
    request_id: &str,
    now_unix_ms: i64,
) -> Result<pb::Proposal, ProposalsError> {
    if runbook != JOINT_DISCONNECT {
        return Err(ProposalsError::Refused(format!(
            "{runbook:?} is not a joint runbook; the joint runbooks are {JOINT_DISCONNECT}"
        )));
    }
    if let Some(key) = parameters
        .keys()
        .find(|key| !["synchronizer_alias", "deadline"].contains(&key.as_str()))
    {
        return Err(ProposalsError::Refused(format!(
            "parameter {key}: {JOINT_DISCONNECT} takes synchronizer_alias and deadline"
        )));
    }
    let deadline = match parameters.get("deadline") {
        None => Duration::from_secs(60),
        Some(text) => humantime::parse_duration(text).map_err(|error| {
            ProposalsError::Refused(format!(
                "parameter deadline: {text:?} is not a duration like 60s ({error})"
            ))
        })?,
    };
    let mut document = pb::Proposal {
        network: network.to_owned(),
        proposal_id: request_id.to_owned(),
        runbook: runbook.to_owned(),
        organisations: organisations
            .iter()
            .map(|(organisation, nodes)| pb::OrganisationNodes {
                organisation: organisation.clone(),
                nodes: nodes.clone(),
            })
            .collect(),
        parameters: parameters
            .iter()
            .map(|(key, value)| pb::Parameter {
                key: key.clone(),
                value: value.clone(),
            })
            .collect(),
        phases: vec![pb::Phase {
            name: DISCONNECT_PHASE.to_owned(),
            duration_ms: u64::try_from(deadline.as_millis()).unwrap_or(u64::MAX),
        }],
        proposer: proposer.to_owned(),
        created_at_unix_ms: now_unix_ms,
    };
    sidecar_trust::canonicalize_proposal(&mut document);
    Ok(document)
}

/// Proposes a joint run unless our organisation already proposed one under `request_id`
/// (then that one is returned, with our acceptance made sure of).
pub async fn propose_joint(
    shared: &Shared,
    document: pb::Proposal,
) -> Result<ProposalBook, ProposalsError> {
    let known = books(shared).await?;
    let existing = known.iter().find(|book| {
        let proposal = book.proposal();
        proposal.proposer == document.proposer
            && proposal.proposal_id == document.proposal_id
            && proposal.runbook == document.runbook
    });
    match existing {
        Some(book) => propose_among(shared, book.proposal().clone(), &known).await,
        None => propose_among(shared, document, &known).await,
    }
}

/// One pass of a leader over the joint runs: for every agreed one whose phase we have not
/// reported, start our local run (once) or, when it finished, report its outcomes.
pub async fn follow(shared: &Shared) -> Result<(), ProposalsError> {
    let ours = shared.organisation.clone();
    for book in books(shared).await? {
        if book.proposal().runbook != JOINT_DISCONNECT
            || !book.all_accepted()
            || book.phase_results(DISCONNECT_PHASE, &ours).is_some()
        {
            continue;
        }
        let hash = hex::encode(book.hash());
        let request_id = format!("proposal/{hash}");
        let run_id = crate::catalogue::run_id(DISCONNECT_PHASE, &ours, &request_id);
        let store = NatsStore::new(&shared.network);
        let stored = store
            .load(&run_key(&run_id))
            .await
            .map_err(|e| ProposalsError::Unavailable(e.to_string()))?;
        match stored {
            None => start_local_run(shared, &book, &run_id, &request_id).await?,
            Some(stored) => {
                let record = RunRecord::decode(&stored.value).map_err(|e| {
                    ProposalsError::Unavailable(format!("run {run_id} does not decode: {e}"))
                })?;
                if record.state.status.is_finished() {
                    report_phase(shared, &book, &record).await?;
                }
            }
        }
    }
    Ok(())
}

/// Our part of an agreed joint disconnect: the catalogue's `disconnect` on our participants
/// the proposal lists, with its parameters.
async fn start_local_run(
    shared: &Shared,
    book: &ProposalBook,
    run_id: &str,
    request_id: &str,
) -> Result<(), ProposalsError> {
    let proposal = book.proposal();
    let listed: Vec<String> = proposal
        .organisations
        .iter()
        .find(|o| o.organisation == shared.organisation)
        .map(|o| o.nodes.clone())
        .unwrap_or_default();
    let inventory = shared
        .inventory()
        .await
        .map_err(|error| ProposalsError::Unavailable(error.to_string()))?;
    let nodes: Vec<String> = listed
        .into_iter()
        .filter(|node| {
            inventory
                .nodes
                .get(node)
                .is_some_and(|n| n.kind == sidecar_core::NodeKind::Participant)
        })
        .collect();
    let parameters: BTreeMap<String, String> = proposal
        .parameters
        .iter()
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect();
    let hash = hex::encode(book.hash());
    if nodes.is_empty() {
        // Nothing of ours to disconnect: the phase is done for us.
        return publish_phase_done(shared, book, Vec::new()).await;
    }
    let built = crate::catalogue::build(
        &crate::catalogue::Request {
            runbook: DISCONNECT_PHASE,
            nodes: &nodes,
            parameters: &parameters,
            run_id,
        },
        &inventory,
    )
    .map_err(|e| ProposalsError::Refused(format!("joint run {hash}: {e}")))?;
    let started = shared
        .driver
        .lock()
        .await
        .start(StartRequest {
            run_id: run_id.to_owned(),
            request_id: request_id.to_owned(),
            runbook: built.runbook,
            parameters: parameters.clone(),
            nodes: built.nodes.clone(),
            claims_nodes: built.claims_nodes,
        })
        .await;
    let outcome = match &started {
        Ok(_) => "started".to_owned(),
        Err(error) => format!("refused: {error}"),
    };
    tracing::info!(proposal = %hash, run = %run_id, %outcome, "joint run: our phase");
    shared
        .audit(
            "proposal_phase_start",
            serde_json::json!({"organisation": shared.organisation, "proposal": hash,
                "run": run_id, "nodes": built.nodes, "outcome": outcome}),
        )
        .await;
    started
        .map(|_| ())
        .map_err(|e| ProposalsError::Unavailable(e.to_string()))
}

/// Reports our finished local run of the phase: one outcome per node of its step.
async fn report_phase(
    shared: &Shared,
    book: &ProposalBook,
    record: &RunRecord,
) -> Result<(), ProposalsError> {
    let results = record
        .state
        .steps
        .iter()
        .filter(|step| step.id == DISCONNECT_PHASE)
        .flat_map(|step| step.nodes.values())
        .map(|node| {
            let (status, result_hash, detail) = match &node.status {
                NodeStatus::Done { result_hash } => {
                    (pb::AckStatus::Done, result_hash.clone(), String::new())
                }
                NodeStatus::Failed { reason } => {
                    (pb::AckStatus::Failed, Vec::new(), reason.clone())
                }
                NodeStatus::Rejected { reason } => {
                    (pb::AckStatus::Rejected, Vec::new(), reason.clone())
                }
                other => (
                    pb::AckStatus::OutcomeUnknown,
                    Vec::new(),
                    format!(
                        "{other:?} when run {} ended {:?}",
                        record.run_id(),
                        record.state.status
                    ),
                ),
            };
            pb::NodeOutcome {
                node: node.node.id.clone(),
                status: status.into(),
                result_hash,
                detail,
            }
        })
        .collect();
    publish_phase_done(shared, book, results).await
}

async fn publish_phase_done(
    shared: &Shared,
    book: &ProposalBook,
    results: Vec<pb::NodeOutcome>,
) -> Result<(), ProposalsError> {
    let hash = hex::encode(book.hash());
    let message = pb::ProposalMessage {
        kind: Some(Kind::PhaseDone(pb::PhaseDone {
            proposal_hash: book.hash().to_vec(),
            phase: DISCONNECT_PHASE.to_owned(),
            organisation: shared.organisation.clone(),
            results,
            at_unix_ms: SystemClock.now_ms(),
        })),
    };
    publish(
        shared,
        &message,
        &format!("phase/{DISCONNECT_PHASE}/{hash}"),
    )
    .await?;
    tracing::info!(proposal = %hash, "joint run: our phase reported done");
    Ok(())
}

/// The API's view of a book.
pub fn view(book: &ProposalBook) -> pb::ProposalView {
    let proposal = book.proposal();
    let missing = book.missing_accepts();
    let accepted = proposal
        .organisations
        .iter()
        .map(|o| o.organisation.clone())
        .filter(|o| !missing.contains(o))
        .collect();
    let (status, aborted_by, abort_reason) = match book.aborted() {
        Some((by, why)) => (pb::ProposalStatus::Aborted, by.to_owned(), why.to_owned()),
        None if missing.is_empty() => (pb::ProposalStatus::Agreed, String::new(), String::new()),
        None => (pb::ProposalStatus::Awaiting, String::new(), String::new()),
    };
    pb::ProposalView {
        proposal_hash: hex::encode(book.hash()),
        proposal_id: proposal.proposal_id.clone(),
        runbook: proposal.runbook.clone(),
        proposer: proposal.proposer.clone(),
        parameters: proposal.parameters.clone(),
        organisations: proposal.organisations.clone(),
        accepted,
        missing,
        status: status.into(),
        aborted_by,
        abort_reason,
        created_at_unix_ms: proposal.created_at_unix_ms,
        phases: proposal
            .phases
            .iter()
            .map(|phase| {
                let (done_by, missing): (Vec<String>, Vec<String>) = proposal
                    .organisations
                    .iter()
                    .map(|o| o.organisation.clone())
                    .partition(|o| book.phase_results(&phase.name, o).is_some());
                let results = done_by
                    .iter()
                    .filter_map(|o| book.phase_results(&phase.name, o))
                    .flatten()
                    .cloned()
                    .collect();
                pb::PhaseProgress {
                    name: phase.name.clone(),
                    done_by,
                    missing,
                    results,
                }
            })
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn book(id: &str) -> ProposalBook {
        ProposalBook::open(pb::Proposal {
            network: "net".to_owned(),
            proposal_id: id.to_owned(),
            runbook: DR_TIMESTAMP.to_owned(),
            proposer: "sv".to_owned(),
            ..Default::default()
        })
        .unwrap()
    }

    #[test]
    fn a_proposal_is_found_by_its_hash_or_a_prefix_of_at_least_eight_digits() {
        let books: Vec<ProposalBook> = (0..40).map(|i| book(&format!("run-{i}"))).collect();
        let wanted = hex::encode(books[7].hash());
        assert_eq!(find(&books, &wanted).unwrap().hash(), books[7].hash());
        assert_eq!(
            find(&books, &wanted[..8].to_ascii_uppercase())
                .unwrap()
                .hash(),
            books[7].hash()
        );
        assert!(matches!(
            find(&books, &wanted[..7]),
            Err(ProposalsError::Refused(_))
        ));
        assert!(matches!(
            find(&books, "not-a-hash"),
            Err(ProposalsError::Refused(_))
        ));
        assert!(matches!(
            find(&books[..7], &wanted),
            Err(ProposalsError::NotFound(_))
        ));
    }

    #[test]
    fn the_view_names_who_is_missing_until_everyone_accepted() {
        let mut document = pb::Proposal {
            network: "net".to_owned(),
            proposal_id: "run".to_owned(),
            runbook: DR_TIMESTAMP.to_owned(),
            proposer: "sv".to_owned(),
            organisations: ["sv", "validator"]
                .map(|organisation| pb::OrganisationNodes {
                    organisation: organisation.to_owned(),
                    nodes: Vec::new(),
                })
                .to_vec(),
            ..Default::default()
        };
        sidecar_trust::canonicalize_proposal(&mut document);
        let mut book = ProposalBook::open(document).unwrap();
        let accept = |organisation: &str, hash: [u8; 32]| sidecar_trust::VerifiedProposalMessage {
            organisation: organisation.to_owned(),
            key_id: format!("{organisation}-key"),
            message: Kind::Accept(pb::Accept {
                proposal_hash: hash.to_vec(),
                organisation: organisation.to_owned(),
                at_unix_ms: 1,
            }),
        };
        book.record(&accept("sv", book.hash())).unwrap();
        let awaiting = view(&book);
        assert_eq!(awaiting.status(), pb::ProposalStatus::Awaiting);
        assert_eq!(awaiting.accepted, ["sv"]);
        assert_eq!(awaiting.missing, ["validator"]);
        book.record(&accept("validator", book.hash())).unwrap();
        let agreed = view(&book);
        assert_eq!(agreed.status(), pb::ProposalStatus::Agreed);
        assert!(agreed.missing.is_empty());
        assert_eq!(agreed.proposal_hash, hex::encode(book.hash()));
    }

    #[test]
    fn a_joint_document_takes_only_the_joint_runbooks_and_their_parameters() {
        let organisations = BTreeMap::from([
            ("validator".to_owned(), vec!["v1".to_owned()]),
            ("sv".to_owned(), vec!["p2".to_owned(), "p1".to_owned()]),
        ]);
        let document = |runbook: &str, params: &[(&str, &str)]| {
            let parameters: BTreeMap<String, String> = params
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect();
            joint_document("net", "sv", &organisations, runbook, &parameters, "jd-1", 5)
        };
        let made = document(JOINT_DISCONNECT, &[("deadline", "90s")]).unwrap();
        assert!(sidecar_trust::is_canonical(&made));
        assert_eq!(made.organisations[0].organisation, "sv");
        assert_eq!(made.organisations[0].nodes, ["p1", "p2"]);
        assert_eq!(made.phases.len(), 1);
        assert_eq!(made.phases[0].duration_ms, 90_000);
        assert_eq!(made.proposal_id, "jd-1");
        for refused in [
            document("backup", &[]),
            document(JOINT_DISCONNECT, &[("compensate", "false")]),
            document(JOINT_DISCONNECT, &[("deadline", "soon")]),
        ] {
            assert!(
                matches!(refused, Err(ProposalsError::Refused(_))),
                "{refused:?}"
            );
        }
    }
}
