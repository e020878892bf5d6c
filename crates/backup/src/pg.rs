//! The node's database as the crate sees it: connection settings handed to libpq programs
//! (password in the environment, never on the command line), our own short connections, the
//! server version and the client programs of the same major version.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::Duration;

use tokio_postgres::config::{Host, SslMode};
use tokio_postgres::{Client, NoTls};

use crate::child::is_executable;
use crate::error::{Error, ErrorKind, Result};

/// Our own connections name themselves so that they are never counted as a node's or a dump's.
const OWN_APPLICATION_NAME: &str = "sidecar-backup";
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A node's database: a libpq key-value string or `postgres://` URL naming the database.
#[derive(Clone)]
pub struct Database {
    config: tokio_postgres::Config,
    name: String,
}

impl std::fmt::Debug for Database {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Database")
            .field("name", &self.name)
            .field("hosts", &self.host_list())
            .finish_non_exhaustive()
    }
}

impl Database {
    /// Parses `conninfo`. It must name the database and must not set `application_name`: dumps
    /// are named after their command id.
    pub fn new(conninfo: &str) -> Result<Self> {
        let config = tokio_postgres::Config::from_str(conninfo).map_err(|e| {
            Error::with_source(
                ErrorKind::Config,
                "the database connection string does not parse; give libpq key-value pairs or a postgres:// URL",
                e,
            )
        })?;
        let name = config
            .get_dbname()
            .filter(|name| !name.is_empty())
            .ok_or_else(|| {
                Error::config("the database connection string names no database (dbname)")
            })?
            .to_owned();
        if config.get_application_name().is_some() {
            return Err(Error::config(format!(
                "the connection string of database {name} sets application_name; remove it (each dump's connection is named after its command id)"
            )));
        }
        if config.get_hosts().is_empty() {
            return Err(Error::config(format!(
                "the connection string of database {name} names no host; add host=…"
            )));
        }
        Ok(Self { config, name })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The role the node connects as, if the connection string names one.
    pub fn user(&self) -> Option<&str> {
        self.config.get_user()
    }

    /// The same server, another database (the maintenance database for drop and create).
    pub fn with_name(&self, name: &str) -> Self {
        let mut config = self.config.clone();
        config.dbname(name);
        Self {
            config,
            name: name.to_owned(),
        }
    }

    fn host_list(&self) -> String {
        self.config
            .get_hosts()
            .iter()
            .map(|host| match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            })
            .collect::<Vec<_>>()
            .join(",")
    }

    /// A key-value connection string for libpq programs, without the password (see
    /// [`Database::libpq_env`]).
    pub fn libpq_conninfo(&self) -> String {
        let mut pairs = vec![("host", self.host_list())];
        let ports = self.config.get_ports();
        if !ports.is_empty() {
            let ports = ports.iter().map(u16::to_string).collect::<Vec<_>>();
            pairs.push(("port", ports.join(",")));
        }
        if let Some(user) = self.config.get_user() {
            pairs.push(("user", user.to_owned()));
        }
        pairs.push(("dbname", self.name.clone()));
        if let Some(options) = self.config.get_options() {
            pairs.push(("options", options.to_owned()));
        }
        if let Some(timeout) = self.config.get_connect_timeout() {
            pairs.push(("connect_timeout", timeout.as_secs().max(1).to_string()));
        }
        let sslmode = match self.config.get_ssl_mode() {
            SslMode::Disable => Some("disable"),
            SslMode::Require => Some("require"),
            _ => None,
        };
        if let Some(mode) = sslmode {
            pairs.push(("sslmode", mode.to_owned()));
        }
        pairs
            .into_iter()
            .map(|(key, value)| format!("{key}={}", quote_libpq(&value)))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Environment for libpq programs: the password, and the connection's application name.
    pub fn libpq_env(&self, application_name: &str) -> Vec<(String, OsString)> {
        let mut env = vec![("PGAPPNAME".to_owned(), OsString::from(application_name))];
        if let Some(password) = self.config.get_password() {
            env.push((
                "PGPASSWORD".to_owned(),
                OsString::from(String::from_utf8_lossy(password).into_owned()),
            ));
        }
        env
    }

    /// A short-lived connection of ours (application name `sidecar-backup`).
    pub async fn connect(&self) -> Result<Client> {
        let mut config = self.config.clone();
        config.application_name(OWN_APPLICATION_NAME);
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        let (client, connection) = config.connect(NoTls).await.map_err(|e| {
            Error::db(
                format!(
                    "connecting to database {} on {}",
                    self.name,
                    self.host_list()
                ),
                e,
            )
        })?;
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "backup database connection ended");
            }
        });
        Ok(client)
    }

    /// `server_version_num` and `server_version` of the server.
    pub async fn server_version(&self) -> Result<ServerVersion> {
        let client = self.connect().await?;
        let text = |name: &'static str| {
            let client = &client;
            let db = self.name.clone();
            async move {
                let rows = client
                    .simple_query(&format!("SHOW {name}"))
                    .await
                    .map_err(|e| Error::db(format!("reading {name} of database {db}"), e))?;
                rows.iter()
                    .find_map(|message| match message {
                        tokio_postgres::SimpleQueryMessage::Row(row) => {
                            row.get(0).map(str::to_owned)
                        }
                        _ => None,
                    })
                    .ok_or_else(|| {
                        Error::new(
                            ErrorKind::Database,
                            format!("SHOW {name} on database {db} returned no row"),
                        )
                    })
            }
        };
        let number = text("server_version_num").await?;
        let version = text("server_version").await?;
        let number = number.trim().parse::<u32>().map_err(|_| {
            Error::new(
                ErrorKind::Database,
                format!(
                    "server_version_num of database {} is {number:?}, not a number",
                    self.name
                ),
            )
        })?;
        Ok(ServerVersion { number, version })
    }
}

fn quote_libpq(value: &str) -> String {
    let escaped = value.replace('\\', "\\\\").replace('\'', "\\'");
    format!("'{escaped}'")
}

/// The server's version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerVersion {
    /// `server_version_num`, e.g. 150010.
    pub number: u32,
    /// `server_version`, e.g. `15.10 (Debian 15.10-0+deb12u1)`.
    pub version: String,
}

impl ServerVersion {
    /// The major version: 15 for 150010. (Servers before 10 used two-part majors; Canton
    /// needs a newer one.)
    pub fn major(&self) -> u32 {
        self.number / 10_000
    }
}

/// The PostgreSQL client programs matching a server's major version.
#[derive(Clone, Debug)]
pub struct PgClients {
    pub major: u32,
    pub dir: PathBuf,
}

impl PgClients {
    /// Finds `pg_dump` and `pg_restore` of the server's major version in `configured_dir`
    /// (`[backup] pg_bin_dir`) or `/usr/lib/postgresql/<major>/bin`. A dump made by another
    /// major version may not restore, so no other version is taken.
    pub fn for_server(server: &ServerVersion, configured_dir: Option<&Path>) -> Result<Self> {
        let major = server.major();
        let mut looked = Vec::new();
        let candidates = configured_dir
            .map(Path::to_path_buf)
            .into_iter()
            .chain(std::iter::once(PathBuf::from(format!(
                "/usr/lib/postgresql/{major}/bin"
            ))));
        for dir in candidates {
            let dump = dir.join("pg_dump");
            let restore = dir.join("pg_restore");
            if !is_executable(&dump) || !is_executable(&restore) {
                looked.push(format!("{} (no pg_dump/pg_restore)", dir.display()));
                continue;
            }
            match client_major(&dump) {
                Some(found) if found == major => return Ok(Self { major, dir }),
                Some(found) => looked.push(format!("{} (version {found})", dir.display())),
                None => looked.push(format!("{} (pg_dump --version unreadable)", dir.display())),
            }
        }
        Err(Error::new(
            ErrorKind::MissingClient,
            format!(
                "no PostgreSQL {major} client programs for server version {}: looked in {}; install package postgresql-client-{major} or point [backup] pg_bin_dir at its bin directory",
                server.version,
                looked.join(", ")
            ),
        ))
    }

    pub fn pg_dump(&self) -> PathBuf {
        self.dir.join("pg_dump")
    }

    pub fn pg_restore(&self) -> PathBuf {
        self.dir.join("pg_restore")
    }
}

/// Major version printed by `pg_dump --version` (`pg_dump (PostgreSQL) 15.10 (Debian …)`).
fn client_major(program: &Path) -> Option<u32> {
    let output = std::process::Command::new(program)
        .arg("--version")
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&output.stdout);
    let version = text.split(')').nth(1)?.split_whitespace().next()?;
    version.split('.').next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn libpq_programs_get_the_password_in_the_environment_never_on_the_command_line() {
        let database =
            Database::new("postgres://canton:s3cret@db.internal:5433/p1?sslmode=disable").unwrap();
        assert_eq!(database.name(), "p1");
        let conninfo = database.libpq_conninfo();
        assert!(!conninfo.contains("s3cret"), "{conninfo}");
        assert_eq!(
            conninfo,
            "host='db.internal' port='5433' user='canton' dbname='p1' sslmode='disable'"
        );
        let env = database.libpq_env("run-1/backup/p1");
        assert!(env.contains(&("PGAPPNAME".to_owned(), OsString::from("run-1/backup/p1"))));
        assert!(env.contains(&("PGPASSWORD".to_owned(), OsString::from("s3cret"))));
        let maintenance = database.with_name("postgres");
        assert!(maintenance.libpq_conninfo().contains("dbname='postgres'"));
    }

    #[test]
    fn quoting_keeps_odd_values_intact() {
        assert_eq!(quote_libpq(r"it's a\b"), r"'it\'s a\\b'");
        assert_eq!(
            ServerVersion {
                number: 150_010,
                version: "15.10".to_owned()
            }
            .major(),
            15
        );
    }
}
