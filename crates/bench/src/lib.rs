//! Benchmark programs that print numbers and ratios to baselines measured in the same run.
//! Each program is `bench <name>` (see `main.rs` and BENCHMARKS.md); each has `Options::full()`
//! for the published numbers and `Options::smoke()` for the extras-tier test that keeps it
//! working. Everything runs on 127.0.0.1, bounded in count and time.

pub mod backup_wall;
pub mod barrier;
pub mod consumers;
pub mod engine;
pub mod failure;
pub mod fixture;
pub mod footprint;
pub mod heartbeat;
pub mod light;
pub mod measure;
pub mod network_dr;
pub mod recovery;
pub mod servers;
pub mod sim_stack;
