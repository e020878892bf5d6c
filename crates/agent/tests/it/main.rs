//! The agent against a real nats-server (and canton-sim where Canton behaviour is claimed).
#![allow(clippy::unwrap_used)]

mod backups;
mod binary;
mod bus;
mod children;
mod command_support;
mod commands;
mod corpus;
mod crashes;
mod migration;
mod sim;
mod support;
mod trust_material;
