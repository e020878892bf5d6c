//! NATS naming, stream and KV setup, and CAS helpers for one Canton network.
//!
//! Only this crate knows subject, stream, bucket and consumer names: every one of them is
//! derived from a validated [`NetworkId`], so one NATS server can host several networks (and
//! several tests) without interference. KV writes that time out are treated as unknown outcomes
//! and resolved by reading back, never by blind retry (a timed-out write may still apply).

mod auth;
mod error;
mod kv;
mod names;
mod permissions;
mod setup;

pub use auth::{AuthFileError, AuthSetting, NatsAuth, NatsCredentials};
pub use error::{Error, KvErrorKind, NameErrorKind, SetupErrorKind};
pub use kv::{CasOptions, Kv, Versioned};
pub use names::{Bucket, Names, NetworkId, NodeId, valid_token};
pub use permissions::Permissions;
pub use setup::{BusSettings, Network, connect, connect_with_events, server_addrs};
