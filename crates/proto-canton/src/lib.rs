//! Our protobuf definitions of the Canton admin and ledger API subset, with Canton's packages,
//! gRPC paths and field numbers (release line 3.4, plus the 3.5 deltas), compiled into prost
//! messages, tonic clients and tonic servers.
//!
//! The module map (also in the README):
//!
//! | Rust path | protobuf package |
//! |---|---|
//! | [`admin::participant::v30`] | `com.digitalasset.canton.admin.participant.v30` |
//! | [`admin::health::v30`] | `com.digitalasset.canton.admin.health.v30` |
//! | [`admin::sequencer::v30`] | `com.digitalasset.canton.admin.sequencer.v30` (connections, status) |
//! | [`admin::mediator::v30`] | `com.digitalasset.canton.admin.mediator.v30` (status) |
//! | [`admin::pruning::v30`] | `com.digitalasset.canton.admin.pruning.v30` |
//! | [`admin::time::v30`] | `com.digitalasset.canton.admin.time.v30` |
//! | [`sequencer::admin::v30`] | `com.digitalasset.canton.sequencer.admin.v30` (administration) |
//! | [`mediator::admin::v30`] | `com.digitalasset.canton.mediator.admin.v30` (administration, connections) |
//! | [`topology::admin::v30`] | `com.digitalasset.canton.topology.admin.v30` |
//! | [`protocol::v30`] | `com.digitalasset.canton.protocol.v30` |
//! | [`crypto::v30`], [`crypto::admin::v30`] | `com.digitalasset.canton.crypto.v30`, `…crypto.admin.v30` |
//! | [`connection::v30`] | `com.digitalasset.canton.connection.v30` |
//! | [`ledger::v2`], [`ledger::v2::admin`] | `com.daml.ledger.api.v2`, `com.daml.ledger.api.v2.admin` |
//! | [`grpc_health::v1`] | `grpc.health.v1` |
//! | [`line_3_5`] | the same package paths, holding only what release line 3.5 changed |

#![allow(clippy::all, rust_2018_idioms, missing_docs)]

/// Generated code for the 3.4 baseline, one module per protobuf package. Prost's cross-package
/// references need this nesting; use the shorter re-exports below.
pub mod wire {
    include!(concat!(env!("OUT_DIR"), "/line_3_4/mod.rs"));
}

pub use wire::com::digitalasset::canton::{
    admin, connection, crypto, mediator, protocol, sequencer, topology,
};

/// The Ledger API (`com.daml.ledger.api.v2`), served on the participant's ledger API port.
pub mod ledger {
    pub use crate::wire::com::daml::ledger::api::v2;
}

/// The standard gRPC health protocol (`grpc.health.v1`).
pub mod grpc_health {
    pub use crate::wire::grpc::health::v1;
}

/// What release line 3.5 changed: the renamed replication service (`SetPassive` moves to
/// `ParticipantReplicationService`), the renumbered `ImportPartyAcsRequest`, and the status
/// messages whose `NotInitialized` carries `version = 3`. Everything else is the 3.4 definition.
pub mod line_3_5 {
    mod generated {
        include!(concat!(env!("OUT_DIR"), "/line_3_5/mod.rs"));
    }
    pub use generated::com::digitalasset::canton::admin;
}

/// The encoded `FileDescriptorSet` of the 3.4 baseline (with imports), for tests and reflection.
pub const LINE_3_4_DESCRIPTORS: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/line_3_4/descriptors.bin"));

/// The encoded `FileDescriptorSet` of the 3.5 deltas (with imports).
pub const LINE_3_5_DESCRIPTORS: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/line_3_5/descriptors.bin"));
