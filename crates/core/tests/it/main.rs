//! Engine scenarios, properties over random interleavings with crashes, schedules, plans and
//! a transitions-per-second measurement.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod backup_set;
mod bench;
mod dr_timestamp;
mod harness;
mod plan;
mod properties;
mod scenarios;
mod schedule;
