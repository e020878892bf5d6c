//! Tests that cannot run on this machine (a tool that could not be installed) say so rather
//! than pass silently: a `SKIP` line on stderr, and a line in the file `scripts/test.sh` names in
//! `CS_TEST_SKIP_FILE`, which it counts and prints after the run.

use std::io::Write as _;
use std::path::PathBuf;

/// The variable naming the file skip lines are appended to.
pub const SKIP_FILE_VAR: &str = "CS_TEST_SKIP_FILE";

/// Records that `test` did not run and why. Panics if the skip file is named but cannot be
/// written: a skip that is not counted would be a silent pass.
pub fn skip(test: &str, reason: &str) {
    let line = format!("SKIP {test}: {reason}");
    eprintln!("{line}");
    let Some(path) = std::env::var_os(SKIP_FILE_VAR).filter(|value| !value.is_empty()) else {
        return;
    };
    let path = PathBuf::from(path);
    let appended = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .and_then(|mut file| writeln!(file, "{line}"));
    if let Err(error) = appended {
        panic!(
            "{line}; and recording the skip in {} failed: {error}",
            path.display()
        );
    }
}

/// `name` in a directory of `PATH`, if it is there.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}
