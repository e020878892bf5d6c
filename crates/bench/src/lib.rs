//! Benchmark programs that print numbers and ratios to baselines measured in the same run.
