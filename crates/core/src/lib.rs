//! Pure runbook engine: step types, run state with its outbox, invariants and schedules.
//!
//! No I/O, no tokio, no NATS, no clock calls: `now` is always an input (lint-enforced through
//! this crate's `clippy.toml`).
#![deny(clippy::disallowed_methods, clippy::disallowed_types)]
