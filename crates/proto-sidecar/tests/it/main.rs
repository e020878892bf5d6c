//! Wire tests for our own messages.
#![allow(clippy::unwrap_used)]

mod evolution;
mod field_numbers;
mod service;
