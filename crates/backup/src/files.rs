//! Backup files: names, publishing through `.<command_id>.*.tmp` + fsync + rename + directory
//! fsync (a visible file is always complete), and checksums.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::error::{Error, ErrorKind, Result};

/// The files of one node in one backup set.
#[derive(Clone, Debug)]
pub struct NodeFiles {
    pub dir: PathBuf,
    pub node: String,
}

impl NodeFiles {
    /// `<root>/<set>/<node>.*`, refusing names that could leave the set directory.
    pub fn new(root: &Path, set: &str, node: &str) -> Result<Self> {
        check_name("backup set", set)?;
        check_name("node", node)?;
        Ok(Self {
            dir: root.join(set),
            node: node.to_owned(),
        })
    }

    pub fn dump(&self) -> PathBuf {
        self.dir.join(format!("{}.dump", self.node))
    }

    pub fn manifest(&self) -> PathBuf {
        self.dir.join(format!("{}.manifest.json", self.node))
    }

    pub fn snapshot_artefact(&self) -> PathBuf {
        self.dir.join(format!("{}.snapshot", self.node))
    }

    /// Upload marker: the sha256 of the uploaded dump, written after the upload hook succeeded.
    pub fn uploaded(&self) -> PathBuf {
        self.dir.join(format!("{}.uploaded", self.node))
    }

    /// Hidden work file of `command_id` for the file ending in `suffix`.
    pub fn tmp(&self, command_id: &str, suffix: &str) -> PathBuf {
        self.dir
            .join(format!(".{}.{suffix}.tmp", encode_command_id(command_id)))
    }
}

/// Set and node names become path components: letters, digits, `.`, `_`, `-`, not starting with
/// a dot.
fn check_name(what: &str, name: &str) -> Result<()> {
    let valid = !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if valid {
        Ok(())
    } else {
        Err(Error::config(format!(
            "{what} name {name:?} must be letters, digits, '.', '_' or '-' and not start with '.'"
        )))
    }
}

/// Command ids are `run/step/node`: every byte outside `[A-Za-z0-9._-]` becomes `%XX`, so the id
/// stays readable and distinct ids give distinct names.
pub fn encode_command_id(command_id: &str) -> String {
    let mut out = String::with_capacity(command_id.len());
    for byte in command_id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

pub(crate) fn create_dir(dir: &Path) -> Result<()> {
    std::fs::create_dir_all(dir).map_err(|e| {
        Error::io(
            format!(
                "creating backup directory {}; check the [backup] root and its permissions",
                dir.display()
            ),
            e,
        )
    })
}

/// Removes `path` if present (an earlier attempt's work file).
pub(crate) fn remove_if_present(path: &Path) -> Result<()> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(Error::io(format!("removing {}", path.display()), e)),
    }
}

/// fsyncs the work file `tmp`, renames it to `target` and fsyncs the directory.
pub(crate) fn publish(tmp: &Path, target: &Path) -> Result<()> {
    let file = std::fs::File::open(tmp)
        .map_err(|e| Error::io(format!("opening {} to fsync it", tmp.display()), e))?;
    file.sync_all()
        .map_err(|e| Error::io(format!("fsync of {}", tmp.display()), e))?;
    drop(file);
    std::fs::rename(tmp, target).map_err(|e| {
        Error::io(
            format!("renaming {} to {}", tmp.display(), target.display()),
            e,
        )
    })?;
    sync_dir(target)
}

/// Deletes `node`'s published files of its set: the manifest first (a dump without manifest
/// reads as "not done", never as a complete backup), then the artefacts and the upload marker,
/// each removal made durable; the set directory goes once it is empty. What is already gone
/// is skipped, so a repeat does nothing. Returns the files removed.
pub(crate) fn delete_node_files(files: &NodeFiles) -> Result<Vec<PathBuf>> {
    let mut removed = Vec::new();
    for path in [
        files.manifest(),
        files.dump(),
        files.snapshot_artefact(),
        files.uploaded(),
    ] {
        match std::fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&path)?;
                removed.push(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(Error::io(format!("removing {}", path.display()), e)),
        }
    }
    match std::fs::remove_dir(&files.dir) {
        Ok(()) => sync_dir(&files.dir)?,
        // Other nodes' files (a shared root) or nothing at all: both fine.
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::NotFound | std::io::ErrorKind::DirectoryNotEmpty
            ) => {}
        Err(e) => return Err(Error::io(format!("removing {}", files.dir.display()), e)),
    }
    Ok(removed)
}

fn sync_dir(file_in_dir: &Path) -> Result<()> {
    let dir = file_in_dir.parent().unwrap_or(Path::new("."));
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(format!("fsync of directory {}", dir.display()), e))
}

/// Writes `bytes` to `target` through the work file `tmp`.
pub(crate) fn write_published(tmp: &Path, target: &Path, bytes: &[u8]) -> Result<()> {
    let mut file = std::fs::File::create(tmp)
        .map_err(|e| Error::io(format!("creating {}", tmp.display()), e))?;
    file.write_all(bytes)
        .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    drop(file);
    publish(tmp, target)
}

/// Size and lowercase hex SHA-256 of a file.
pub(crate) fn sha256_file(path: &Path) -> Result<(u64, String)> {
    let mut file = std::fs::File::open(path).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::NotFound
        } else {
            ErrorKind::Io
        };
        Error::with_source(kind, format!("reading {}", path.display()), e)
    })?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 256 * 1024];
    let mut size = 0u64;
    loop {
        let read = file
            .read(&mut buffer)
            .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
        if read == 0 {
            break;
        }
        size += read as u64;
        hasher.update(&buffer[..read]);
    }
    Ok((size, hex::encode(hasher.finalize())))
}

/// [`sha256_file`] off the async runtime.
pub(crate) async fn sha256_file_async(path: PathBuf) -> Result<(u64, String)> {
    tokio::task::spawn_blocking(move || sha256_file(&path))
        .await
        .map_err(|e| Error::new(ErrorKind::Io, format!("checksum task failed: {e}")))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_ids_become_distinct_file_names() {
        assert_eq!(encode_command_id("run-1/backup/p1"), "run-1%2Fbackup%2Fp1");
        assert_ne!(encode_command_id("a/b"), encode_command_id("a%2Fb"));
    }

    #[test]
    fn names_that_leave_the_set_directory_are_refused() {
        let root = Path::new("/backups");
        for bad in ["..", "../x", "a/b", ".hidden", ""] {
            let error = NodeFiles::new(root, bad, "p1").unwrap_err();
            assert_eq!(error.kind(), ErrorKind::Config, "{bad}");
            assert!(error.to_string().contains("backup set"), "{error}");
        }
        let files = NodeFiles::new(root, "set-1", "p1").unwrap();
        assert_eq!(files.dump(), Path::new("/backups/set-1/p1.dump"));
        assert_eq!(
            files.tmp("r/s/p1", "dump"),
            Path::new("/backups/set-1/.r%2Fs%2Fp1.dump.tmp")
        );
    }
}
