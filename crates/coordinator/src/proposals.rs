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

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use prost::Message;
use proto_sidecar as pb;
use proto_sidecar::proposal_message::Kind;
use sha2::{Digest, Sha256};
use sidecar_trust::{ProposalBook, sign_proposal_message, verify_proposal_message};

use crate::driver::ports::{Clock, SystemClock};
use crate::nats::publish_durable;
use crate::service::Shared;

/// The runbook name a recovery-timestamp proposal carries.
pub const DR_TIMESTAMP: &str = "dr-timestamp";
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
    let mut book =
        ProposalBook::open(document.clone()).map_err(|e| ProposalsError::Refused(e.to_string()))?;
    let hash = hex::encode(book.hash());
    let known = books(shared).await?;
    if let Some(existing) = known.iter().find(|known| known.hash() == book.hash()) {
        book = existing.clone();
    } else {
        let message = pb::ProposalMessage {
            kind: Some(Kind::Proposal(document)),
        };
        publish(shared, &message, &format!("proposal/{hash}")).await?;
    }
    if book.missing_accepts().contains(&shared.organisation) && book.aborted().is_none() {
        answer(shared, &book, true, "").await?;
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
}
