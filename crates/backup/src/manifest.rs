//! The manifest written next to every backup: what was backed up, by which command, where it
//! stood in sequencer time, and the checksum that makes `already_done()` a real check.

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::point::{Interval, NodeKind};

pub const MANIFEST_FORMAT: u32 = 1;

/// How the backup was taken.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Method {
    /// `pg_dump -F c` into `<node>.dump`.
    PgDump,
    /// A configured snapshot command (volume snapshot, pgBackRest, …).
    Snapshot,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub format: u32,
    pub node: String,
    pub kind: NodeKind,
    pub organisation: String,
    /// For an app: the participant it reads from.
    #[serde(default)]
    pub participant: Option<String>,
    /// The HA replica that took the backup (`<node>.<replica>`), for a node with replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub replica: Option<String>,
    pub backup_set: String,
    pub command_id: String,
    pub method: Method,
    /// The file in the set directory the checksum covers (`<node>.dump`, `<node>.snapshot`);
    /// absent when a snapshot command only reported a checksum of something it keeps elsewhere.
    pub artefact: Option<String>,
    /// What a snapshot command reported as its snapshot's id.
    pub snapshot_id: Option<String>,
    /// Components one snapshot covers (a volume shared by several writers).
    pub components: Vec<String>,
    /// The node's position in sequencer time, read before and after the backup (µs).
    pub sequencer_time_micros: Option<Interval>,
    /// The node's ledger offset, read before and after the backup.
    pub ledger_offset: Option<Interval>,
    pub postgres_version: String,
    pub postgres_version_num: u32,
    pub size_bytes: u64,
    pub sha256: String,
    pub started_at_unix_ms: i64,
    pub finished_at_unix_ms: i64,
}

impl Manifest {
    pub fn to_json(&self) -> Vec<u8> {
        let mut bytes = serde_json::to_vec_pretty(self).unwrap_or_default();
        bytes.push(b'\n');
        bytes
    }

    pub fn from_json(bytes: &[u8], file: &str) -> Result<Self> {
        let manifest: Self = serde_json::from_slice(bytes).map_err(|e| {
            Error::with_source(
                ErrorKind::Corrupt,
                format!("manifest {file} does not parse; take the backup again"),
                e,
            )
        })?;
        if manifest.format != MANIFEST_FORMAT {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "manifest {file} has format {}, this agent reads format {MANIFEST_FORMAT}",
                    manifest.format
                ),
            ));
        }
        if let Some(artefact) = &manifest.artefact
            && !is_plain_file_name(artefact)
        {
            // Verify hashes and the upload hook ships `<set dir>/<artefact>`: a manifest naming
            // `../..` or an absolute path would point them at any file on the host.
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "manifest {file} names artefact {artefact:?}, which is not a file name in its set directory; take the backup again"
                ),
            ));
        }
        Ok(manifest)
    }
}

/// One path component naming a file: not empty, not `.` or `..`, no separator or NUL.
fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

pub(crate) fn unix_ms_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
