//! Trust model tests: every rejection reason, acks, configuration and rotation, proposals,
//! policy, properties, and the replayed fuzz corpus.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod ack;
mod check;
mod config;
mod corpus;
mod fixtures;
mod policy;
mod properties;
mod proposal;
