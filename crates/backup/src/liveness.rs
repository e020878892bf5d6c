//! "Is every replica of the node stopped?" — checked, never assumed. A restore or a snapshot of
//! a shared volume asks a [`StoppedCheck`] right before it touches anything.

use futures::future::BoxFuture;

use crate::error::Result;
use crate::pg::Database;

/// What a check found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Activity {
    Stopped,
    /// Something still runs; the text says what (for the refusal message).
    Running(String),
}

pub trait StoppedCheck: Send + Sync {
    /// What is checked, for messages (`connections to database p1`).
    fn describe(&self) -> String;
    fn check(&self) -> BoxFuture<'_, Result<Activity>>;
}

/// Stopped when no client backend is connected to the node's database, optionally only
/// counting connections of the node's roles or application names. It connects to another
/// database of the same server (the maintenance database), so it never counts itself.
pub struct NoConnections {
    maintenance: Database,
    database: String,
    roles: Vec<String>,
    application_names: Vec<String>,
    ignored_applications: Vec<String>,
}

impl NoConnections {
    /// Any client connection to `database` counts (the safest choice before a restore).
    pub fn to_database(database: &Database, maintenance_database: &str) -> Self {
        Self {
            maintenance: database.with_name(maintenance_database),
            database: database.name().to_owned(),
            roles: Vec::new(),
            application_names: Vec::new(),
            ignored_applications: Vec::new(),
        }
    }

    /// Only connections of these roles count (empty: any role).
    pub fn of_roles(mut self, roles: Vec<String>) -> Self {
        self.roles = roles;
        self
    }

    /// Only connections with these application names count (empty: any).
    pub fn of_applications(mut self, names: Vec<String>) -> Self {
        self.application_names = names;
        self
    }

    /// Connections with these application names are not counted: the agent's own (its database
    /// probe), which a restore terminates itself.
    pub fn ignoring_applications(mut self, names: Vec<String>) -> Self {
        self.ignored_applications = names;
        self
    }

    async fn connections(&self) -> Result<Activity> {
        let client = self.maintenance.connect().await?;
        let rows = client
            .query(
                "SELECT pid, coalesce(usename, ''), coalesce(application_name, ''), coalesce(host(client_addr), 'local')
                 FROM pg_stat_activity
                 WHERE datname = $1 AND backend_type = 'client backend' AND pid <> pg_backend_pid()
                   AND (cardinality($2::text[]) = 0 OR usename = ANY($2::text[]))
                   AND (cardinality($3::text[]) = 0 OR application_name = ANY($3::text[]))
                   AND NOT (coalesce(application_name, '') = ANY($4::text[]))
                 ORDER BY pid",
                &[
                    &self.database,
                    &self.roles,
                    &self.application_names,
                    &self.ignored_applications,
                ],
            )
            .await
            .map_err(|e| {
                crate::error::Error::db(
                    format!("reading pg_stat_activity for database {}", self.database),
                    e,
                )
            })?;
        if rows.is_empty() {
            return Ok(Activity::Stopped);
        }
        let listed = rows
            .iter()
            .take(5)
            .map(|row| {
                let pid: i32 = row.get(0);
                let user: String = row.get(1);
                let application: String = row.get(2);
                let client: String = row.get(3);
                format!("pid {pid} user {user} application {application:?} from {client}")
            })
            .collect::<Vec<_>>()
            .join("; ");
        Ok(Activity::Running(format!(
            "{} connection(s) to database {}: {listed}",
            rows.len(),
            self.database
        )))
    }
}

impl StoppedCheck for NoConnections {
    fn describe(&self) -> String {
        format!("connections to database {}", self.database)
    }

    fn check(&self) -> BoxFuture<'_, Result<Activity>> {
        Box::pin(self.connections())
    }
}

/// Stopped when every check says so (every replica's status hook, plus the connections).
pub struct AllStopped(pub Vec<Box<dyn StoppedCheck>>);

impl StoppedCheck for AllStopped {
    fn describe(&self) -> String {
        self.0
            .iter()
            .map(|check| check.describe())
            .collect::<Vec<_>>()
            .join(" and ")
    }

    fn check(&self) -> BoxFuture<'_, Result<Activity>> {
        Box::pin(async move {
            let mut running = Vec::new();
            for check in &self.0 {
                if let Activity::Running(what) = check.check().await? {
                    running.push(what);
                }
            }
            if running.is_empty() {
                Ok(Activity::Stopped)
            } else {
                Ok(Activity::Running(running.join("; ")))
            }
        })
    }
}
