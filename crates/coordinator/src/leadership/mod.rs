//! Per-organisation leadership: a lease key with a TTL renewed by CAS, and an epoch key advanced
//! by CAS at the start of every tenure.
//!
//! [`LeaseState`] is the pure decision (which role we may claim at an instant); [`Election`]
//! runs it against NATS. The timing argument is in ARCHITECTURE.md ("Leadership").

mod election;
mod state;

pub use election::{Election, ElectionConfig, ElectionError, ElectionStats, epoch_key, lease_key};
pub use state::{LeaseState, LeaseTiming, Role, Step, TimingError};
