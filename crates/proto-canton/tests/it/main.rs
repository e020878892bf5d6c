//! Wire tests: hand-written bytes, gRPC paths and field tables against the shared facts.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod bytes;
mod descriptors;
mod facts;
mod fields;
mod paths;
