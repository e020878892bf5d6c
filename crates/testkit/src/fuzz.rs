//! The fuzz corpus under `fuzz/corpus/<target>`, for the tests of the crates the targets
//! exercise: replaying it on stable, keeping the generated seeds current, and (extras tier)
//! running a target with `cargo fuzz` for a bounded time.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

/// `fuzz/corpus/<target>` in the workspace.
pub fn corpus_dir(target: &str) -> PathBuf {
    crate::workspace_root().join("fuzz/corpus").join(target)
}

/// Runs `check` on every file of the target's corpus; returns how many there were.
pub fn replay_corpus(target: &str, check: impl Fn(&[u8])) -> usize {
    let dir = corpus_dir(target);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("reading the corpus {}: {e}", dir.display()))
        .map(|entry| entry.map(|entry| entry.path()))
        .collect::<std::io::Result<_>>()
        .unwrap_or_else(|e| panic!("listing the corpus {}: {e}", dir.display()));
    files.sort();
    for path in &files {
        let bytes =
            std::fs::read(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        eprintln!("replaying {}", path.display());
        check(&bytes);
    }
    files.len()
}

/// Checks that `seed-<name>` in the target's corpus holds each seed's bytes; with
/// `WRITE_FUZZ_SEEDS=1` writes them first (after a format change).
pub fn check_seeds(target: &str, seeds: &[(String, Vec<u8>)]) {
    let dir = corpus_dir(target);
    let write = std::env::var_os("WRITE_FUZZ_SEEDS").is_some();
    if write {
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    }
    for (name, bytes) in seeds {
        let path = dir.join(format!("seed-{name}"));
        if write {
            std::fs::write(&path, bytes)
                .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
        }
        let saved = std::fs::read(&path).unwrap_or_else(|_| {
            panic!(
                "seed {} missing; rerun with WRITE_FUZZ_SEEDS=1",
                path.display()
            )
        });
        assert!(
            &saved == bytes,
            "seed {} is stale; rerun with WRITE_FUZZ_SEEDS=1",
            path.display()
        );
    }
}

/// Runs `cargo fuzz run <target>` over its saved corpus for at most `seconds` (the extras
/// tier). New inputs go to a temporary directory, never into the saved corpus. Panics naming
/// the crash artefact when the fuzzer finds one; skips (see [`crate::skip`]) when cargo-fuzz is
/// not installed.
pub fn run_fuzzer(test: &str, target: &str, seconds: u32) {
    let root = crate::workspace_root().join("fuzz");
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|output| output.status.success());
    if !installed {
        crate::skip(
            test,
            "cargo-fuzz is not installed (scripts/install-deps.sh extras)",
        );
        return;
    }
    // Its own target dir: sanitizer flags would otherwise rebuild the workspace's artefacts.
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .filter(|dir| !dir.is_empty())
        .map_or_else(|| root.join("target"), |dir| Path::new(&dir).join("fuzz"));
    let fresh = tempfile::Builder::new()
        .prefix(&format!("fuzz-{target}-"))
        .tempdir()
        .unwrap_or_else(|e| panic!("creating a directory for new {target} inputs: {e}"));
    let started = Instant::now();
    let output = Command::new("cargo")
        .current_dir(&root)
        // Only this command may use nightly flags on the stable toolchain.
        .env("RUSTC_BOOTSTRAP", "1")
        .args(["fuzz", "run", target])
        .arg(fresh.path())
        .arg(corpus_dir(target))
        .args(["-s", "none", "--target-dir"])
        .arg(&target_dir)
        .arg("--")
        .arg(format!("-max_total_time={seconds}"))
        .args(["-timeout=10", "-rss_limit_mb=2048", "-print_final_stats=1"])
        .output()
        .unwrap_or_else(|e| panic!("running cargo fuzz run {target}: {e}"));
    let log = String::from_utf8_lossy(&output.stderr);
    let stats: Vec<&str> = log
        .lines()
        .filter(|line| line.contains("DONE") || line.starts_with("stat::"))
        .collect();
    eprintln!(
        "{target}: cargo fuzz ran {:?} (build included)\n{}",
        started.elapsed(),
        stats.join("\n")
    );
    if !output.status.success() {
        let artefact = log
            .lines()
            .find_map(|line| line.split_once("Test unit written to "))
            .map_or("(none written)", |(_, path)| path.trim());
        let tail: Vec<&str> = log.lines().rev().take(60).collect();
        panic!(
            "fuzz target {target} failed ({}); crash input: {artefact}; add it to {} once fixed\n{}",
            output.status,
            corpus_dir(target).display(),
            tail.into_iter().rev().collect::<Vec<_>>().join("\n")
        );
    }
    assert!(
        started.elapsed() >= Duration::from_secs(u64::from(seconds)),
        "{target}: the fuzzer stopped before its {seconds} s"
    );
}
