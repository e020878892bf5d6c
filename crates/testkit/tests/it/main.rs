//! The harness against real servers: the pieces every other test stands on.
#![allow(clippy::unwrap_used)]

mod nats;
mod postgres;
mod proxy;
