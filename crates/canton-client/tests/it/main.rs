//! The client against an in-process tonic server over real gRPC on 127.0.0.1.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod errors;
mod fake_node;
mod profiles;
mod topology;
