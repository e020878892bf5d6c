//! Restoring a dump: every check first (manifest, checksum, archive readable, every replica
//! stopped), then drop + recreate the database, `pg_restore` in one transaction, and a
//! `restored_by` marker in the restored database.
//!
//! Drop + recreate rather than `--clean --if-exists`: `--clean` only drops what the dump
//! contains, so tables, schemas or extensions created after the backup would survive into the
//! "restored" node. The database is recreated with the old one's owner, encoding and locale.
//!
//! The marker lives in the restored database (`sidecar_restore.marker`, one row per restoring
//! command), not in a file: it must vanish when the database is replaced by anything else, and
//! a file next to the dump would survive that.

use tokio_util::sync::CancellationToken;

use crate::backup::{Backups, NodeRef};
use crate::child::{ChildCommand, Observer, run_child};
use crate::error::{Error, ErrorKind, Result};
use crate::liveness::{Activity, StoppedCheck};
use crate::manifest::{Manifest, Method};
use crate::pg::{Database, PgClients};

/// Schema and table of the restore marker.
pub const MARKER_TABLE: &str = "sidecar_restore.marker";

/// SQLSTATE of "database does not exist".
const INVALID_CATALOG_NAME: &str = "3D000";
/// SQLSTATE of "object in use" (a DROP DATABASE with connections).
const OBJECT_IN_USE: &str = "55006";
/// Drop attempts while our own connections keep coming back.
const DROP_ROUNDS: u32 = 5;

/// One restore command.
pub struct RestoreJob<'a> {
    pub set: &'a str,
    pub node: &'a NodeRef,
    pub command_id: &'a str,
    /// The node's database, connected to as the node's role (restored objects belong to it).
    pub database: &'a Database,
    /// Application names of our own connections to the database (the agent's database probe):
    /// terminated before the drop instead of refusing it.
    pub own_applications: &'a [String],
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RestoreOutcome {
    /// The marker says this command restored the database already; nothing was done.
    AlreadyRestored,
    Restored(Box<Manifest>),
}

impl Backups {
    /// Whether `command_id` restored `database` (its marker row is there).
    pub async fn restore_already_done(
        &self,
        database: &Database,
        command_id: &str,
    ) -> Result<bool> {
        let client = match database.connect().await {
            Ok(client) => client,
            Err(e) if is_missing_database(&e) => return Ok(false),
            Err(e) => return Err(e),
        };
        let row = client
            .query_one(
                "SELECT to_regclass('sidecar_restore.marker') IS NOT NULL",
                &[],
            )
            .await
            .map_err(|e| {
                Error::db(
                    format!(
                        "looking for the restore marker in database {}",
                        database.name()
                    ),
                    e,
                )
            })?;
        if !row.get::<_, bool>(0) {
            return Ok(false);
        }
        let found = client
            .query_opt(
                "SELECT 1 FROM sidecar_restore.marker WHERE command_id = $1",
                &[&command_id],
            )
            .await
            .map_err(|e| {
                Error::db(
                    format!("reading the restore marker of database {}", database.name()),
                    e,
                )
            })?;
        Ok(found.is_some())
    }

    /// Restores `job.node`'s dump of `job.set` into its database. Refused, with nothing touched,
    /// when the manifest is missing or of another node, the dump does not match its checksum or
    /// cannot be read by this server's pg_restore, or `stopped` finds anything still running.
    pub async fn restore(
        &self,
        job: &RestoreJob<'_>,
        stopped: &dyn StoppedCheck,
        observer: &dyn Observer,
        cancel: &CancellationToken,
    ) -> Result<RestoreOutcome> {
        if self
            .restore_already_done(job.database, job.command_id)
            .await?
        {
            return Ok(RestoreOutcome::AlreadyRestored);
        }
        let files = self.files(job.set, &job.node.id)?;
        let manifest = self.verified(&files).await.map_err(|e| {
            Error::new(
                e.kind(),
                format!(
                    "restore of node {} from set {} refused before touching anything: {}",
                    job.node.id,
                    job.set,
                    e.context()
                ),
            )
        })?;
        if manifest.method != Method::PgDump || manifest.kind != job.node.kind {
            return Err(Error::config(format!(
                "restore of node {} from set {} refused: the manifest is a {:?} backup of a {}; this restores pg_dump backups of a {} (restore snapshots with the snapshot tool)",
                job.node.id, job.set, manifest.method, manifest.kind, job.node.kind
            )));
        }
        let dump = files.dump();
        let server = self.server_version_for_restore(job).await?;
        let clients = PgClients::for_server(&server, self.config().pg_bin_dir.as_deref())?;
        let list = ChildCommand::new(
            format!(
                "pg_restore --list of {} for node {}",
                dump.display(),
                job.node.id
            ),
            clients.pg_restore(),
        )
        .arg("--list")
        .arg(&dump);
        run_child(&list, observer, cancel)
            .await?
            .success(&list)
            .map_err(|e| {
                Error::new(
                    ErrorKind::Corrupt,
                    format!("restore refused before touching anything: {}", e.context()),
                )
            })?;
        if let Activity::Running(what) = stopped.check().await? {
            return Err(Error::new(
                ErrorKind::NotStopped,
                format!(
                    "restore of node {} refused before touching anything: {what} ({}); stop every replica of the node first",
                    job.node.id,
                    stopped.describe()
                ),
            ));
        }
        if cancel.is_cancelled() {
            return Err(Error::new(
                ErrorKind::Cancelled,
                format!(
                    "restore of node {} cancelled before it started",
                    job.node.id
                ),
            ));
        }
        self.recreate_database(job).await?;
        let command = ChildCommand::new(
            format!(
                "pg_restore of {} into database {} of node {}",
                dump.display(),
                job.database.name(),
                job.node.id
            ),
            clients.pg_restore(),
        )
        .arg("--exit-on-error")
        .arg("--single-transaction")
        .arg("--no-owner")
        .arg("--no-password")
        .arg(format!("--dbname={}", job.database.libpq_conninfo()))
        .arg(&dump);
        let command = job
            .database
            .libpq_env(job.command_id)
            .into_iter()
            .fold(command, |command, (key, value)| command.env(key, value));
        run_child(&command, observer, cancel)
            .await?
            .success(&command)?;
        self.write_marker(job, &manifest).await?;
        tracing::info!(node = %job.node.id, set = job.set, "restore done");
        Ok(RestoreOutcome::Restored(Box::new(manifest)))
    }

    /// The server's version, read through the maintenance database (the node's own may be gone
    /// after a crashed restore).
    async fn server_version_for_restore(
        &self,
        job: &RestoreJob<'_>,
    ) -> Result<crate::pg::ServerVersion> {
        job.database
            .with_name(&self.config().maintenance_database)
            .server_version()
            .await
    }

    async fn recreate_database(&self, job: &RestoreJob<'_>) -> Result<()> {
        let name = job.database.name();
        let maintenance = job.database.with_name(&self.config().maintenance_database);
        let client = maintenance.connect().await?;
        let existing = client
            .query_opt(
                "SELECT pg_get_userbyid(datdba), pg_encoding_to_char(encoding), datcollate, datctype
                 FROM pg_database WHERE datname = $1",
                &[&name],
            )
            .await
            .map_err(|e| Error::db(format!("reading the settings of database {name}"), e))?;
        let create = match existing {
            Some(row) => {
                let owner: String = row.get(0);
                let encoding: String = row.get(1);
                let collate: String = row.get(2);
                let ctype: String = row.get(3);
                format!(
                    "CREATE DATABASE {} OWNER {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
                    quote_ident(name),
                    quote_ident(&owner),
                    quote_literal(&encoding),
                    quote_literal(&collate),
                    quote_literal(&ctype)
                )
            }
            None => format!("CREATE DATABASE {} TEMPLATE template0", quote_ident(name)),
        };
        // No WITH (FORCE): a connection that appeared after the check makes the drop fail,
        // which is the refusal we want. Our own connections are terminated first; one that
        // reconnected in between costs another round.
        let drop = format!("DROP DATABASE IF EXISTS {}", quote_ident(name));
        let mut round = 0;
        loop {
            round += 1;
            if !job.own_applications.is_empty() {
                client
                    .execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
                         WHERE datname = $1 AND application_name = ANY($2::text[]) AND pid <> pg_backend_pid()",
                        &[&name, &job.own_applications],
                    )
                    .await
                    .map_err(|e| Error::db(format!("terminating our own connections to database {name}"), e))?;
            }
            let Err(e) = client.batch_execute(&drop).await else {
                break;
            };
            let in_use = e.code().is_some_and(|c| c.code() == OBJECT_IN_USE);
            if in_use && round < DROP_ROUNDS && !job.own_applications.is_empty() {
                continue;
            }
            let kind = if in_use {
                ErrorKind::NotStopped
            } else {
                ErrorKind::Database
            };
            return Err(Error::with_source(
                kind,
                format!(
                    "dropping database {name} of node {} for the restore; {}",
                    job.node.id,
                    if in_use {
                        "something connected after the stop check: stop it and retry"
                    } else {
                        "check the role's rights (it must own the database)"
                    }
                ),
                e,
            ));
        }
        client
            .batch_execute(&create)
            .await
            .map_err(|e| Error::db(format!("recreating database {name} of node {} (`{create}`); the database is gone: rerun the restore", job.node.id), e))?;
        Ok(())
    }

    async fn write_marker(&self, job: &RestoreJob<'_>, manifest: &Manifest) -> Result<()> {
        let client = job.database.connect().await?;
        client
            .batch_execute(
                "CREATE SCHEMA IF NOT EXISTS sidecar_restore;
                 CREATE TABLE IF NOT EXISTS sidecar_restore.marker (
                     command_id text PRIMARY KEY,
                     backup_set text NOT NULL,
                     node text NOT NULL,
                     dump_sha256 text NOT NULL,
                     restored_at timestamptz NOT NULL DEFAULT now())",
            )
            .await
            .map_err(|e| {
                Error::db(
                    format!(
                        "creating {MARKER_TABLE} in database {}",
                        job.database.name()
                    ),
                    e,
                )
            })?;
        client
            .execute(
                "INSERT INTO sidecar_restore.marker (command_id, backup_set, node, dump_sha256)
                 VALUES ($1, $2, $3, $4) ON CONFLICT (command_id) DO NOTHING",
                &[&job.command_id, &job.set, &job.node.id, &manifest.sha256],
            )
            .await
            .map_err(|e| {
                Error::db(
                    format!(
                        "writing the restored_by marker of database {}",
                        job.database.name()
                    ),
                    e,
                )
            })?;
        Ok(())
    }
}

fn is_missing_database(error: &Error) -> bool {
    use std::error::Error as _;
    error
        .source()
        .and_then(|s| s.downcast_ref::<tokio_postgres::Error>())
        .and_then(tokio_postgres::Error::code)
        .is_some_and(|code| code.code() == INVALID_CATALOG_NAME)
}

fn quote_ident(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}
