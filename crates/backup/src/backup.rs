//! Taking backups: `pg_dump -F c` or a configured snapshot command, each published with its
//! manifest; `already_done` and `verify` read them back.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::child::{ChildCommand, Observer, Phase, Progress, run_child};
use crate::error::{Error, ErrorKind, Result};
use crate::files::{
    NodeFiles, create_dir, delete_node_files, publish, remove_if_present, sha256_file_async,
    write_published,
};
use crate::liveness::{Activity, StoppedCheck};
use crate::manifest::{MANIFEST_FORMAT, Manifest, Method, unix_ms_now};
use crate::pg::{Database, PgClients};
use crate::point::{NodeKind, SnapshotPointSource, intervals};
use crate::template::CommandTemplate;

/// Placeholders of the upload hook (`[backup] upload`).
pub const UPLOAD_PLACEHOLDERS: &[&str] = &["node", "set", "command_id", "dump", "manifest"];
/// Placeholders of a snapshot command (`[backup] snapshot_command`).
pub const SNAPSHOT_PLACEHOLDERS: &[&str] = &["node", "set", "command_id", "artefact"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupConfig {
    /// `[backup] root`: sets live in `<root>/<set>/`.
    pub root: PathBuf,
    /// `[backup] pg_bin_dir`: searched before `/usr/lib/postgresql/<major>/bin`.
    pub pg_bin_dir: Option<PathBuf>,
    /// `[backup] upload`: run after the manifest is published.
    pub upload: Option<CommandTemplate>,
    /// How often the dump's size is reported while it grows.
    pub progress_interval: Duration,
    /// Database a restore connects to while it drops and recreates the node's database.
    pub maintenance_database: String,
}

impl BackupConfig {
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self {
            root: root.into(),
            pg_bin_dir: None,
            upload: None,
            progress_interval: Duration::from_secs(2),
            maintenance_database: "postgres".to_owned(),
        }
    }
}

/// The node a backup is of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeRef {
    pub id: String,
    pub kind: NodeKind,
    pub organisation: String,
    /// For an app: the participant it reads from (the backup-set rule compares their offsets).
    pub participant: Option<String>,
    /// The HA replica taking the backup (`<node>.<replica>`); files stay named after `id`.
    pub replica: Option<String>,
}

/// One backup command.
pub struct BackupJob<'a> {
    pub set: &'a str,
    pub node: &'a NodeRef,
    pub command_id: &'a str,
    pub database: &'a Database,
    pub point: &'a dyn SnapshotPointSource,
}

/// A snapshot-style backup: a command instead of pg_dump.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SnapshotSpec {
    /// Gets `{artefact}` (also `SIDECAR_BACKUP_ARTEFACT`): a path it may write a file to that
    /// describes or holds the snapshot; that file is checksummed and published as
    /// `<node>.snapshot`. It may instead print `sha256=<hex>` (and `size=`, `id=`) lines for
    /// something it keeps elsewhere.
    pub command: CommandTemplate,
    /// The components the snapshot covers; with more than one, every writer must be stopped.
    pub components: Vec<String>,
}

/// Backups of one agent's nodes under one root.
#[derive(Clone, Debug)]
pub struct Backups {
    config: BackupConfig,
}

/// Removes a work file on drop unless it was published (an error, a cancel, a dropped future).
struct WorkFile {
    path: PathBuf,
    published: bool,
}

impl Drop for WorkFile {
    fn drop(&mut self) {
        if !self.published {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

impl Backups {
    pub fn new(config: BackupConfig) -> Result<Self> {
        if !config.root.is_absolute() {
            return Err(Error::config(format!(
                "[backup] root {} must be an absolute path",
                config.root.display()
            )));
        }
        if config.progress_interval.is_zero() {
            return Err(Error::config(
                "the progress interval must be longer than zero",
            ));
        }
        Ok(Self { config })
    }

    pub fn config(&self) -> &BackupConfig {
        &self.config
    }

    pub fn files(&self, set: &str, node: &str) -> Result<NodeFiles> {
        NodeFiles::new(&self.config.root, set, node)
    }

    /// The published manifest of `node` in `set` if it is there and its artefact's checksum
    /// matches; `None` when the backup must (still) be taken.
    pub async fn already_done(&self, set: &str, node: &str) -> Result<Option<Manifest>> {
        let files = self.files(set, node)?;
        match self.verified(&files).await {
            Ok(manifest) => Ok(Some(manifest)),
            Err(e) if matches!(e.kind(), ErrorKind::NotFound | ErrorKind::Corrupt) => {
                tracing::info!(node, set, reason = %e, "backup not done yet");
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    /// Deletes `node`'s backup in `set` (retention; the coordinator decides which sets go).
    /// Idempotent: a backup already gone is done. Returns the files removed.
    pub async fn delete(&self, set: &str, node: &str) -> Result<Vec<PathBuf>> {
        let files = self.files(set, node)?;
        tokio::task::spawn_blocking(move || delete_node_files(&files))
            .await
            .map_err(|e| Error::new(ErrorKind::Io, format!("deleting backup files: {e}")))?
    }

    /// Checks the manifests of `nodes` in `set` (every manifest in the set when `nodes` is
    /// empty) against their artefacts.
    pub async fn verify(&self, set: &str, nodes: &[String]) -> Result<Vec<Manifest>> {
        let nodes = if nodes.is_empty() {
            self.nodes_in_set(set)?
        } else {
            nodes.to_vec()
        };
        let mut manifests = Vec::with_capacity(nodes.len());
        for node in &nodes {
            manifests.push(self.verified(&self.files(set, node)?).await?);
        }
        Ok(manifests)
    }

    fn nodes_in_set(&self, set: &str) -> Result<Vec<String>> {
        let dir = self.config.root.join(set);
        let entries = std::fs::read_dir(&dir).map_err(|e| {
            Error::with_source(
                ErrorKind::NotFound,
                format!("backup set {set} has no directory {}", dir.display()),
                e,
            )
        })?;
        let mut nodes: Vec<String> = entries
            .flatten()
            .filter_map(|entry| {
                let name = entry.file_name().into_string().ok()?;
                let node = name.strip_suffix(".manifest.json")?;
                (!node.starts_with('.')).then(|| node.to_owned())
            })
            .collect();
        nodes.sort();
        if nodes.is_empty() {
            return Err(Error::new(
                ErrorKind::NotFound,
                format!("backup set {set} in {} holds no manifest", dir.display()),
            ));
        }
        Ok(nodes)
    }

    /// The manifest of `files`, checked against its artefact.
    pub(crate) async fn verified(&self, files: &NodeFiles) -> Result<Manifest> {
        let manifest = read_manifest(&files.manifest())?;
        if manifest.node != files.node {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "manifest {} is of node {}, not {}",
                    files.manifest().display(),
                    manifest.node,
                    files.node
                ),
            ));
        }
        let Some(artefact) = &manifest.artefact else {
            return Ok(manifest);
        };
        let path = files.dir.join(artefact);
        let (size, sha256) = sha256_file_async(path.clone()).await?;
        if sha256 != manifest.sha256 || size != manifest.size_bytes {
            return Err(Error::new(
                ErrorKind::Corrupt,
                format!(
                    "{} of node {} has sha256 {sha256} ({size} bytes) but its manifest says {} ({} bytes); the file is damaged: take the backup again or restore another set",
                    path.display(),
                    files.node,
                    manifest.sha256,
                    manifest.size_bytes
                ),
            ));
        }
        Ok(manifest)
    }

    /// `pg_dump -F c` of the node's database into `<root>/<set>/<node>.dump`, then the manifest,
    /// then the upload hook. Idempotent: a set already backed up (manifest and checksum) is not
    /// dumped again.
    pub async fn backup(
        &self,
        job: &BackupJob<'_>,
        observer: &dyn Observer,
        cancel: &CancellationToken,
    ) -> Result<Manifest> {
        let files = self.files(job.set, &job.node.id)?;
        if let Some(manifest) = self.already_done(job.set, &job.node.id).await? {
            self.ensure_uploaded(&files, &manifest, observer, cancel)
                .await?;
            return Ok(manifest);
        }
        create_dir(&files.dir)?;
        let server = job.database.server_version().await?;
        let clients = PgClients::for_server(&server, self.config.pg_bin_dir.as_deref())?;
        let tmp = files.tmp(job.command_id, "dump");
        // An earlier attempt's orphan may still write to its file: unlinking it leaves the
        // orphan writing to an inode nobody will publish.
        remove_if_present(&tmp)?;
        let mut work = WorkFile {
            path: tmp.clone(),
            published: false,
        };
        let before = job.point.read().await?;
        let started_at = unix_ms_now();
        let command = ChildCommand::new(
            format!(
                "pg_dump of node {} into {}",
                job.node.id,
                files.dump().display()
            ),
            clients.pg_dump(),
        )
        .arg("--format=custom")
        .arg("--no-password")
        .arg(format!("--file={}", tmp.display()))
        .arg(format!("--dbname={}", job.database.libpq_conninfo()));
        let command = job
            .database
            .libpq_env(job.command_id)
            .into_iter()
            .fold(command, |command, (key, value)| command.env(key, value));
        self.run_reporting_size(&command, &tmp, observer, cancel)
            .await?
            .success(&command)?;
        let after = job.point.read().await?;
        let (sequencer_time_micros, ledger_offset) = intervals(&job.node.id, before, after)?;
        let (size_bytes, sha256) = sha256_file_async(tmp.clone()).await?;
        observer.progress(Progress {
            phase: Phase::Dumping,
            bytes: size_bytes,
        });
        publish(&tmp, &files.dump())?;
        work.published = true;
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            node: job.node.id.clone(),
            kind: job.node.kind,
            organisation: job.node.organisation.clone(),
            participant: job.node.participant.clone(),
            replica: job.node.replica.clone(),
            backup_set: job.set.to_owned(),
            command_id: job.command_id.to_owned(),
            method: Method::PgDump,
            artefact: Some(file_name(&files.dump())),
            snapshot_id: None,
            components: vec![job.node.id.clone()],
            sequencer_time_micros,
            ledger_offset,
            postgres_version: server.version.clone(),
            postgres_version_num: server.number,
            size_bytes,
            sha256,
            started_at_unix_ms: started_at,
            finished_at_unix_ms: unix_ms_now(),
        };
        write_published(
            &files.tmp(job.command_id, "manifest"),
            &files.manifest(),
            &manifest.to_json(),
        )?;
        tracing::info!(node = %job.node.id, set = job.set, size = manifest.size_bytes, "backup published");
        self.ensure_uploaded(&files, &manifest, observer, cancel)
            .await?;
        Ok(manifest)
    }

    /// Runs `command` while reporting the size of `file` every progress interval.
    async fn run_reporting_size(
        &self,
        command: &ChildCommand,
        file: &Path,
        observer: &dyn Observer,
        cancel: &CancellationToken,
    ) -> Result<crate::child::ChildOutput> {
        let run = run_child(command, observer, cancel);
        tokio::pin!(run);
        let mut ticks = tokio::time::interval(self.config.progress_interval);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                output = &mut run => return output,
                _ = ticks.tick() => {
                    if let Ok(metadata) = tokio::fs::metadata(file).await {
                        observer.progress(Progress { phase: Phase::Dumping, bytes: metadata.len() });
                    }
                }
            }
        }
    }

    /// Runs the upload hook unless the marker says this checksum was uploaded.
    async fn ensure_uploaded(
        &self,
        files: &NodeFiles,
        manifest: &Manifest,
        observer: &dyn Observer,
        cancel: &CancellationToken,
    ) -> Result<()> {
        let Some(upload) = &self.config.upload else {
            return Ok(());
        };
        let Some(artefact) = &manifest.artefact else {
            return Ok(());
        };
        let marker = files.uploaded();
        if std::fs::read_to_string(&marker).is_ok_and(|text| text.trim() == manifest.sha256) {
            return Ok(());
        }
        let dump = files.dir.join(artefact);
        let manifest_path = files.manifest();
        let dump_text = dump.display().to_string();
        let manifest_text = manifest_path.display().to_string();
        let command = upload
            .render(
                format!("upload hook of node {} ({})", files.node, upload.key()),
                &[
                    ("node", &files.node),
                    ("set", &manifest.backup_set),
                    ("command_id", &manifest.command_id),
                    ("dump", &dump_text),
                    ("manifest", &manifest_text),
                ],
            )
            .env("SIDECAR_BACKUP_DUMP", &dump)
            .env("SIDECAR_BACKUP_MANIFEST", &manifest_path)
            .env("SIDECAR_BACKUP_SET", &manifest.backup_set)
            .env("SIDECAR_BACKUP_NODE", &files.node)
            .env("SIDECAR_COMMAND_ID", &manifest.command_id);
        run_child(&command, observer, cancel)
            .await?
            .success(&command)?;
        write_published(
            &files.tmp(&manifest.command_id, "uploaded"),
            &marker,
            format!("{}\n", manifest.sha256).as_bytes(),
        )
    }

    /// A snapshot-style backup: runs the snapshot command instead of pg_dump and publishes the
    /// same manifest. One snapshot of several components is refused unless `writers` reports
    /// every writer stopped (a crash-consistent snapshot of one running database is fine; of
    /// several, their states would not agree).
    pub async fn snapshot(
        &self,
        job: &BackupJob<'_>,
        spec: &SnapshotSpec,
        writers: &dyn StoppedCheck,
        observer: &dyn Observer,
        cancel: &CancellationToken,
    ) -> Result<Manifest> {
        let files = self.files(job.set, &job.node.id)?;
        if let Some(manifest) = self.already_done(job.set, &job.node.id).await? {
            return Ok(manifest);
        }
        if spec.components.len() > 1
            && let Activity::Running(what) = writers.check().await?
        {
            return Err(Error::new(
                ErrorKind::NotStopped,
                format!(
                    "snapshot of node {} refused: it covers {} and {what} ({}); stop every writer first",
                    job.node.id,
                    spec.components.join(", "),
                    writers.describe()
                ),
            ));
        }
        create_dir(&files.dir)?;
        let server = job.database.server_version().await?;
        let tmp = files.tmp(job.command_id, "snapshot");
        remove_if_present(&tmp)?;
        let mut work = WorkFile {
            path: tmp.clone(),
            published: false,
        };
        let before = job.point.read().await?;
        let started_at = unix_ms_now();
        let tmp_text = tmp.display().to_string();
        let command = spec
            .command
            .render(
                format!(
                    "snapshot command of node {} ({})",
                    job.node.id,
                    spec.command.key()
                ),
                &[
                    ("node", &job.node.id),
                    ("set", job.set),
                    ("command_id", job.command_id),
                    ("artefact", &tmp_text),
                ],
            )
            .env("SIDECAR_BACKUP_ARTEFACT", &tmp)
            .env("SIDECAR_BACKUP_SET", job.set)
            .env("SIDECAR_BACKUP_NODE", &job.node.id)
            .env("SIDECAR_COMMAND_ID", job.command_id);
        let output = run_child(&command, observer, cancel)
            .await?
            .success(&command)?;
        let after = job.point.read().await?;
        let (sequencer_time_micros, ledger_offset) = intervals(&job.node.id, before, after)?;
        let reported = SnapshotReport::parse(&output.stdout);
        let (artefact, size_bytes, sha256) = if tmp.is_file() {
            let (size, sha256) = sha256_file_async(tmp.clone()).await?;
            if let Some(claimed) = &reported.sha256
                && *claimed != sha256
            {
                return Err(Error::new(
                    ErrorKind::Corrupt,
                    format!(
                        "{}: the command printed sha256={claimed} but {} has sha256 {sha256}",
                        command.what, tmp_text
                    ),
                ));
            }
            publish(&tmp, &files.snapshot_artefact())?;
            work.published = true;
            (Some(file_name(&files.snapshot_artefact())), size, sha256)
        } else if let Some(sha256) = reported.sha256 {
            (None, reported.size.unwrap_or(0), sha256)
        } else {
            return Err(Error::new(
                ErrorKind::Command,
                format!(
                    "{} (`{}`) wrote nothing to {tmp_text} and printed no sha256=<hex> line; one of them states what was snapshotted",
                    command.what,
                    command.display()
                ),
            ));
        };
        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            node: job.node.id.clone(),
            kind: job.node.kind,
            organisation: job.node.organisation.clone(),
            participant: job.node.participant.clone(),
            replica: job.node.replica.clone(),
            backup_set: job.set.to_owned(),
            command_id: job.command_id.to_owned(),
            method: Method::Snapshot,
            artefact,
            snapshot_id: reported.id,
            components: if spec.components.is_empty() {
                vec![job.node.id.clone()]
            } else {
                spec.components.clone()
            },
            sequencer_time_micros,
            ledger_offset,
            postgres_version: server.version,
            postgres_version_num: server.number,
            size_bytes,
            sha256,
            started_at_unix_ms: started_at,
            finished_at_unix_ms: unix_ms_now(),
        };
        write_published(
            &files.tmp(job.command_id, "manifest"),
            &files.manifest(),
            &manifest.to_json(),
        )?;
        Ok(manifest)
    }
}

/// `key=value` lines a snapshot command printed.
#[derive(Debug, Default)]
pub(crate) struct SnapshotReport {
    pub(crate) sha256: Option<String>,
    pub(crate) size: Option<u64>,
    pub(crate) id: Option<String>,
}

impl SnapshotReport {
    pub(crate) fn parse(stdout: &str) -> Self {
        let mut report = Self::default();
        for line in stdout.lines() {
            let Some((key, value)) = line.trim().split_once('=') else {
                continue;
            };
            let value = value.trim();
            match key.trim() {
                "sha256" if value.len() == 64 && value.chars().all(|c| c.is_ascii_hexdigit()) => {
                    report.sha256 = Some(value.to_ascii_lowercase());
                }
                "size" => report.size = value.parse().ok(),
                "id" => report.id = Some(value.to_owned()),
                _ => {}
            }
        }
        report
    }
}

pub(crate) fn read_manifest(path: &Path) -> Result<Manifest> {
    let bytes = std::fs::read(path).map_err(|e| {
        let kind = if e.kind() == std::io::ErrorKind::NotFound {
            ErrorKind::NotFound
        } else {
            ErrorKind::Io
        };
        Error::with_source(kind, format!("reading manifest {}", path.display()), e)
    })?;
    Manifest::from_json(&bytes, &path.display().to_string())
}

fn file_name(path: &Path) -> String {
    path.file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default()
}
