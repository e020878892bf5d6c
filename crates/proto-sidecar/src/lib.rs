//! Our bus messages (envelopes, commands, acks, heartbeats, node state, fences, proposals) and
//! the coordinator gRPC API, generated from `proto/canton_sidecar/v1/*.proto`.
//!
//! Field-evolution rules are in this crate's `README.md`.

/// Package `canton_sidecar.v1`.
pub mod v1 {
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    tonic::include_proto!("canton_sidecar.v1");
}

pub use v1::*;

/// The full gRPC service name, for health checks and reflection.
pub const COORDINATOR_SERVICE: &str = "canton_sidecar.v1.CoordinatorService";

/// The encoded `FileDescriptorSet` of our protos (used by the field-number golden test and
/// available for gRPC reflection).
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/canton_sidecar_descriptors.bin"));
