//! The command journal: what the agent has started, finished, and promised, kept on disk so a
//! restart never runs a command twice that it already ran.
//!
//! File format (`<journal_dir>/journal.log`), chosen to be readable with a hex dump and a JSON
//! parser in five years:
//!
//! ```text
//! header  : "CSAGJRNL" (8 bytes) | format version u32 LE (= 1) | reserved u32 LE (= 0)
//! record* : payload length u32 LE | SHA-256 of the payload (32 bytes) | payload (JSON, one Record)
//! ```
//! Every append is followed by `fsync`. A last record cut short or failing its checksum is a
//! torn write (the process died mid-append): it is truncated away and logged. A bad record
//! followed by more data is corruption and refuses to open. The log is rewritten from the live
//! state (compacted) when it opens and when it grows past a bound; a rewrite goes to a temp file,
//! is fsynced, renamed over the log, and the directory is fsynced.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// File name of the log inside the journal directory.
pub const JOURNAL_FILE: &str = "journal.log";
const MAGIC: &[u8; 8] = b"CSAGJRNL";
/// The format this build writes; it reads this one only.
pub const FORMAT_VERSION: u32 = 1;
const HEADER_LEN: u64 = 16;
const RECORD_HEAD_LEN: u64 = 4 + 32;
/// Bound on one record (a command's result included), so a damaged length cannot make the
/// agent allocate gigabytes.
const MAX_RECORD_LEN: u32 = 16 * 1024 * 1024;

/// One journal record. Records only ever add facts; the state is their fold
/// ([`super::state::JournalState::apply`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "record", rename_all = "snake_case")]
pub enum Record {
    /// A process start; `started_at_unix_ms` bounds what a lost journal can vouch for.
    Boot {
        boot_id: String,
        started_at_unix_ms: i64,
    },
    /// Written before the action does anything.
    Started {
        command_id: String,
        attempt: u32,
        #[serde(with = "hex_bytes")]
        body_hash: [u8; 32],
        boot_id: String,
        action: String,
        expires_at_unix_ms: i64,
        at_unix_ms: i64,
    },
    /// A child process group the action started, written before the child does work.
    Child {
        command_id: String,
        attempt: u32,
        pgid: i32,
        /// Start time of the group leader (clock ticks since kernel boot), to tell a reused
        /// process id from ours.
        leader_start: Option<u64>,
        /// The kernel's boot id; children never outlive a reboot.
        kernel_boot: Option<String>,
    },
    Done {
        command_id: String,
        attempt: u32,
        #[serde(with = "base64_bytes")]
        result: Vec<u8>,
        detail: String,
        at_unix_ms: i64,
    },
    Failed {
        command_id: String,
        attempt: u32,
        detail: String,
        at_unix_ms: i64,
    },
    /// Started before a crash and not safe to run again; an operator decides.
    OutcomeUnknown {
        command_id: String,
        attempt: u32,
        detail: String,
        at_unix_ms: i64,
    },
    /// The highest leadership epoch confirmed (by a `Fence` or read at start-up).
    Epoch { epoch: u64 },
    /// Attempts `1..=up_to_attempt` of `command_id` are closed.
    Revoked {
        command_id: String,
        up_to_attempt: u32,
        at_unix_ms: i64,
    },
    /// The journal was found lost while the consumer had delivered before: commands issued
    /// before this instant are refused for good.
    JournalLost { before_unix_ms: i64 },
    /// Serial of the network configuration last accepted (no rollback below it).
    ConfigSerial { serial: u64 },
}

/// Why the journal cannot be used. Every message names the file and what to do.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal {}: {action} failed: {source}; check the volume and its permissions", path.display())]
    Io {
        path: PathBuf,
        action: &'static str,
        source: std::io::Error,
    },
    #[error(
        "journal {} is damaged at byte {offset}: {detail}; move the file aside to start in journal-loss mode (commands issued before the restart are then refused)",
        path.display()
    )]
    Corrupt {
        path: PathBuf,
        offset: u64,
        detail: String,
    },
    #[error(
        "journal {} has format version {found}, this agent reads version {FORMAT_VERSION}; run the agent version that wrote it or newer",
        path.display()
    )]
    UnsupportedVersion { path: PathBuf, found: u32 },
    #[error("journal record cannot be encoded: {0}")]
    Encode(String),
}

/// Where the log keeps its records. The agent talks to it only through this trait (file on a
/// persistent volume in production, memory in pure tests); calls block and are made off the
/// async runtime.
pub trait Journal: Send {
    /// Appends one record durably (returns after fsync).
    fn append(&mut self, record: &Record) -> Result<(), JournalError>;
    /// Replaces the whole log with `records` atomically (compaction).
    fn rewrite(&mut self, records: &[Record]) -> Result<(), JournalError>;
    /// Current size in bytes, for the compaction decision.
    fn len_bytes(&self) -> u64;
}

/// What opening found.
#[derive(Debug)]
pub struct Opened<J> {
    pub journal: J,
    pub records: Vec<Record>,
    /// No log existed (or it held no record): a first start, or a lost journal.
    pub created: bool,
    /// Bytes of a torn last record that were cut off.
    pub truncated_bytes: u64,
}

/// The journal file of one agent.
#[derive(Debug)]
pub struct FileJournal {
    dir: PathBuf,
    path: PathBuf,
    file: File,
    len: u64,
}

fn io<'p>(
    path: &'p Path,
    action: &'static str,
) -> impl FnOnce(std::io::Error) -> JournalError + 'p {
    move |source| JournalError::Io {
        path: path.to_owned(),
        action,
        source,
    }
}

fn header() -> [u8; HEADER_LEN as usize] {
    let mut header = [0u8; HEADER_LEN as usize];
    header[..8].copy_from_slice(MAGIC);
    header[8..12].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    header
}

fn encode(record: &Record) -> Result<Vec<u8>, JournalError> {
    let payload = serde_json::to_vec(record).map_err(|e| JournalError::Encode(e.to_string()))?;
    let length = u32::try_from(payload.len())
        .ok()
        .filter(|len| *len <= MAX_RECORD_LEN)
        .ok_or_else(|| {
            JournalError::Encode(format!(
                "record of {} bytes exceeds the {MAX_RECORD_LEN}-byte bound",
                payload.len()
            ))
        })?;
    let mut bytes = Vec::with_capacity(RECORD_HEAD_LEN as usize + payload.len());
    bytes.extend_from_slice(&length.to_le_bytes());
    bytes.extend_from_slice(&Sha256::digest(&payload));
    bytes.extend_from_slice(&payload);
    Ok(bytes)
}

fn sync_dir(dir: &Path) -> Result<(), JournalError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(io(dir, "syncing the directory"))
}

impl FileJournal {
    /// Opens (or creates) the journal in `dir` and replays it.
    pub fn open(dir: &Path) -> Result<Opened<FileJournal>, JournalError> {
        std::fs::create_dir_all(dir).map_err(io(dir, "creating the directory"))?;
        let path = dir.join(JOURNAL_FILE);
        let existing = match std::fs::metadata(&path) {
            Ok(meta) => meta.len(),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io(&path, "reading metadata")(e)),
        };
        if existing < HEADER_LEN {
            // Absent, or a header torn at creation: nothing was ever recorded in it.
            write_atomically(dir, &path, &[])?;
            let journal = Self::reopen(dir, &path)?;
            return Ok(Opened {
                journal,
                records: Vec::new(),
                created: true,
                truncated_bytes: 0,
            });
        }
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(&path)
            .map_err(io(&path, "opening"))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes).map_err(io(&path, "reading"))?;
        let (records, good_len) = replay(&path, &bytes)?;
        let truncated_bytes = bytes.len() as u64 - good_len;
        if truncated_bytes > 0 {
            tracing::warn!(
                journal = %path.display(),
                offset = good_len,
                bytes = truncated_bytes,
                "journal ends in a torn record (the agent died mid-append); truncating it"
            );
            file.set_len(good_len)
                .and_then(|()| file.sync_all())
                .map_err(io(&path, "truncating a torn record"))?;
        }
        file.seek(SeekFrom::End(0)).map_err(io(&path, "seeking"))?;
        let created = records.is_empty();
        Ok(Opened {
            journal: FileJournal {
                dir: dir.to_owned(),
                path,
                file,
                len: good_len,
            },
            records,
            created,
            truncated_bytes,
        })
    }

    fn reopen(dir: &Path, path: &Path) -> Result<FileJournal, JournalError> {
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(io(path, "opening"))?;
        let len = file.seek(SeekFrom::End(0)).map_err(io(path, "seeking"))?;
        Ok(FileJournal {
            dir: dir.to_owned(),
            path: path.to_owned(),
            file,
            len,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Writes header + `records` to a temp file, fsyncs it, renames it over `path`, fsyncs `dir`.
fn write_atomically(dir: &Path, path: &Path, records: &[Record]) -> Result<(), JournalError> {
    let temp = dir.join(format!(".{JOURNAL_FILE}.tmp"));
    let mut bytes = header().to_vec();
    for record in records {
        bytes.extend_from_slice(&encode(record)?);
    }
    let mut file = File::create(&temp).map_err(io(&temp, "creating"))?;
    file.write_all(&bytes)
        .and_then(|()| file.sync_all())
        .map_err(io(&temp, "writing"))?;
    std::fs::rename(&temp, path).map_err(io(path, "renaming the rewritten log into place"))?;
    sync_dir(dir)
}

/// Decodes every record; returns them with the length of the good prefix (shorter than
/// `bytes` only when the last record is torn).
fn replay(path: &Path, bytes: &[u8]) -> Result<(Vec<Record>, u64), JournalError> {
    let corrupt = |offset: u64, detail: String| JournalError::Corrupt {
        path: path.to_owned(),
        offset,
        detail,
    };
    if &bytes[..8] != MAGIC {
        return Err(corrupt(
            0,
            "not a canton-agent journal (bad magic)".to_owned(),
        ));
    }
    let mut version = [0u8; 4];
    version.copy_from_slice(&bytes[8..12]);
    let version = u32::from_le_bytes(version);
    if version != FORMAT_VERSION {
        return Err(JournalError::UnsupportedVersion {
            path: path.to_owned(),
            found: version,
        });
    }
    let total = bytes.len() as u64;
    let mut offset = HEADER_LEN;
    let mut records = Vec::new();
    while offset < total {
        let at = offset as usize;
        if total - offset < RECORD_HEAD_LEN {
            return Ok((records, offset));
        }
        let mut length = [0u8; 4];
        length.copy_from_slice(&bytes[at..at + 4]);
        let length = u64::from(u32::from_le_bytes(length));
        let end = offset + RECORD_HEAD_LEN + length;
        if end > total {
            return Ok((records, offset));
        }
        let payload = &bytes[at + RECORD_HEAD_LEN as usize..end as usize];
        let checksum = &bytes[at + 4..at + RECORD_HEAD_LEN as usize];
        if Sha256::digest(payload).as_slice() != checksum {
            if end == total {
                return Ok((records, offset));
            }
            return Err(corrupt(
                offset,
                "record checksum does not match and more records follow".to_owned(),
            ));
        }
        let record: Record = serde_json::from_slice(payload).map_err(|e| {
            corrupt(
                offset,
                format!("record does not decode ({e}); a newer agent may have written it"),
            )
        })?;
        records.push(record);
        offset = end;
    }
    Ok((records, offset))
}

impl Journal for FileJournal {
    fn append(&mut self, record: &Record) -> Result<(), JournalError> {
        let bytes = encode(record)?;
        self.file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data())
            .map_err(io(&self.path, "appending"))?;
        self.len += bytes.len() as u64;
        Ok(())
    }

    fn rewrite(&mut self, records: &[Record]) -> Result<(), JournalError> {
        write_atomically(&self.dir, &self.path, records)?;
        *self = Self::reopen(&self.dir, &self.path)?;
        Ok(())
    }

    fn len_bytes(&self) -> u64 {
        self.len
    }
}

/// A journal in memory, for pure tests of the command logic.
#[derive(Debug, Default)]
pub struct MemoryJournal {
    pub records: Vec<Record>,
}

impl Journal for MemoryJournal {
    fn append(&mut self, record: &Record) -> Result<(), JournalError> {
        self.records.push(record.clone());
        Ok(())
    }

    fn rewrite(&mut self, records: &[Record]) -> Result<(), JournalError> {
        self.records = records.to_vec();
        Ok(())
    }

    fn len_bytes(&self) -> u64 {
        self.records.len() as u64 * 128
    }
}

mod hex_bytes {
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8; 32], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 32], D::Error> {
        let text = String::deserialize(d)?;
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(&text, &mut bytes).map_err(D::Error::custom)?;
        Ok(bytes)
    }
}

mod base64_bytes {
    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(bytes))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(d)?;
        STANDARD.decode(text).map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn done(n: u32) -> Record {
        Record::Done {
            command_id: format!("r1/s/p{n}"),
            attempt: 1,
            result: vec![1, 2, 3],
            detail: "ok".into(),
            at_unix_ms: 5,
        }
    }

    #[test]
    fn records_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let opened = FileJournal::open(dir.path()).unwrap();
        assert!(opened.created);
        let mut journal = opened.journal;
        journal.append(&Record::Epoch { epoch: 3 }).unwrap();
        journal.append(&done(1)).unwrap();
        drop(journal);
        let reopened = FileJournal::open(dir.path()).unwrap();
        assert!(!reopened.created);
        assert_eq!(reopened.records, vec![Record::Epoch { epoch: 3 }, done(1)]);
        let bytes = std::fs::read(dir.path().join(JOURNAL_FILE)).unwrap();
        assert_eq!(&bytes[..8], MAGIC);
        assert_eq!(bytes[8], 1);
        // Human-readable payloads.
        assert!(String::from_utf8_lossy(&bytes).contains(r#""record":"done""#));
    }

    #[test]
    fn a_torn_last_record_is_truncated_and_later_appends_follow_the_good_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = FileJournal::open(dir.path()).unwrap().journal;
        journal.append(&done(1)).unwrap();
        journal.append(&done(2)).unwrap();
        let path = journal.path().to_owned();
        drop(journal);
        let full = std::fs::metadata(&path).unwrap().len();
        for cut in [1u64, 10, 40] {
            let file = OpenOptions::new().write(true).open(&path).unwrap();
            file.set_len(full - cut).unwrap();
            drop(file);
            let opened = FileJournal::open(dir.path()).unwrap();
            assert_eq!(opened.records, vec![done(1)], "cut {cut}");
            assert!(opened.truncated_bytes > 0);
            let mut journal = opened.journal;
            journal.append(&done(2)).unwrap();
        }
        assert_eq!(
            FileJournal::open(dir.path()).unwrap().records,
            vec![done(1), done(2)]
        );
    }

    #[test]
    fn a_damaged_record_in_the_middle_refuses_to_open_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = FileJournal::open(dir.path()).unwrap().journal;
        journal.append(&done(1)).unwrap();
        journal.append(&done(2)).unwrap();
        let path = journal.path().to_owned();
        drop(journal);
        let mut bytes = std::fs::read(&path).unwrap();
        let inside_first_payload = HEADER_LEN as usize + RECORD_HEAD_LEN as usize + 3;
        bytes[inside_first_payload] ^= 0x20;
        std::fs::write(&path, &bytes).unwrap();
        let error = FileJournal::open(dir.path()).unwrap_err();
        assert!(
            matches!(error, JournalError::Corrupt { offset: 16, .. }),
            "{error}"
        );
        assert!(error.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn another_format_version_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        drop(FileJournal::open(dir.path()).unwrap());
        let path = dir.path().join(JOURNAL_FILE);
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[8] = 2;
        std::fs::write(&path, &bytes).unwrap();
        let error = FileJournal::open(dir.path()).unwrap_err();
        assert!(matches!(
            error,
            JournalError::UnsupportedVersion { found: 2, .. }
        ));
    }

    #[test]
    fn a_rewrite_replaces_the_log_and_appends_continue() {
        let dir = tempfile::tempdir().unwrap();
        let mut journal = FileJournal::open(dir.path()).unwrap().journal;
        for n in 0..20 {
            journal.append(&done(n)).unwrap();
        }
        let before = journal.len_bytes();
        journal.rewrite(&[done(7)]).unwrap();
        assert!(journal.len_bytes() < before);
        journal.append(&done(8)).unwrap();
        assert_eq!(
            FileJournal::open(dir.path()).unwrap().records,
            vec![done(7), done(8)]
        );
    }
}
