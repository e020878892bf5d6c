#![allow(clippy::unwrap_used)]
mod bytes;
