//! canton-sim: a Canton stand-in node on Postgres that serves the same admin API for tests and
//! the demo. One process per node (`canton-sim --kind … --config …`); [`network`] starts a
//! whole topology of them and hands out [`network::SimNode`] handles.

pub mod acs;
pub mod app;
pub mod config;
pub mod connectivity;
pub mod control;
pub mod db;
pub mod error;
pub mod faults;
pub mod fuzzing;
pub mod ha;
pub mod health;
pub mod member;
pub mod network;
pub mod node;
pub mod pruning;
pub mod redeploy;
pub mod sequencer;
pub mod sequencer_client;
pub mod services;
pub mod topology;

pub use config::{NodeConfig, NodeKind};
pub use control::ControlClient;
pub use error::{CantonError, Error, ErrorKind, Result};
pub use faults::{Fault, FaultRule};
pub use network::{NetworkSpec, PostgresTarget, SimNetwork, SimNode};

/// Code generated from the sim's own protocol files.
pub mod wire {
    #![allow(clippy::all, missing_docs, rust_2018_idioms)]
    pub mod sequencer {
        tonic::include_proto!("canton_sim.sequencer.v1");
    }
}
