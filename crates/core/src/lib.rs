//! Pure runbook engine: step types, run state with its outbox, invariants and schedules.
//!
//! No I/O, no tokio, no NATS, no clock calls: `now` (Unix milliseconds) is always an input
//! (lint-enforced through this crate's `clippy.toml`).
//!
//! The driver (in the coordinator) calls [`on_event`] with each event, persists the returned
//! [`RunState`] by CAS, and only then performs the returned [`Effect`]s. After a crash it loads
//! the last persisted state and performs [`resume`]'s effects: every outstanding command again
//! under the same id and attempt (the agent's journal answers a redelivery), every revoke, every
//! timer, every pending request to the operator.
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]

pub mod backup_set;
pub mod dr_timestamp;
mod engine;
pub mod invariants;
mod model;
mod runbook;
mod schedule;

pub use engine::{on_event, on_events, resume, start_run};
pub use model::*;
pub use runbook::{PlannedStep, Runbook, StepBuilder, plan, runbooks};
pub use schedule::{Schedule, ScheduleError};
