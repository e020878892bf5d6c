use std::path::{Path, PathBuf};

use crate::{Error, ErrorKind, Result};

/// The workspace root: `CS_WORKSPACE_ROOT` (set by `.cargo/config.toml` for everything cargo
/// runs), else the nearest ancestor of the current directory holding `Cargo.lock`.
pub fn workspace_root() -> PathBuf {
    if let Some(root) = std::env::var_os("CS_WORKSPACE_ROOT").filter(|r| !r.is_empty()) {
        return PathBuf::from(root);
    }
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    cwd.ancestors()
        .find(|dir| dir.join("Cargo.lock").is_file())
        .map(Path::to_path_buf)
        .unwrap_or(cwd)
}

/// Path of a product binary (`canton-agent`, `canton-sim`, …) built into the same target
/// profile directory as the running test or program.
pub fn binary_path(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| {
        Error::io(
            ErrorKind::MissingBinary,
            "locating the running executable",
            e,
        )
    })?;
    // Test binaries live in `<target>/<profile>/deps/`, programs in `<target>/<profile>/`.
    let candidates = exe
        .ancestors()
        .skip(1)
        .take(2)
        .map(|dir| dir.join(name))
        .collect::<Vec<_>>();
    candidates.iter().find(|p| p.is_file()).cloned().ok_or_else(|| {
        Error::new(
            ErrorKind::MissingBinary,
            format!(
                "binary `{name}` not found next to {}; build it first with `cargo build --workspace --bins`",
                exe.display()
            ),
        )
    })
}
