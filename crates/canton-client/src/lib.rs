//! Typed Canton client over `proto-canton`: node status, participant synchronizer connectivity,
//! HA, pruning schedule, party replication and repair, sequencer administration, gRPC health
//! and the ledger end, with per-call timeouts, TLS and bearer tokens.
//!
//! Before any call whose bytes could differ between Canton release lines, the client reads the
//! node's version from its status service and picks a [`Profile`] (3.4 or 3.5); a release line
//! without a profile is refused with [`ErrorKind::UnsupportedVersion`] and nothing is sent.
//! Canton's wire types stay inside this crate: callers see the plain types in [`types`].

mod client;
mod config;
mod error;
mod participant;
mod profile;
mod sequencer;
mod status;
mod topology;
pub mod types;

pub use client::CantonClient;
pub use config::{ClientConfig, EndpointConfig, NodeKind, TlsConfig};
pub use error::{Error, ErrorKind, Result};
pub use profile::Profile;
