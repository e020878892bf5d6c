use std::future::Future;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use futures::future::BoxFuture;
use sidecar_backup::{
    BackupConfig, BackupJob, Backups, ChildInfo, Database, Manifest, NodeKind, NodeRef, Observer,
    Progress, SqlPointSource,
};
use testkit::Postgres;
use tokio_util::sync::CancellationToken;

/// Point query of the test tables: (latest event ts, number of events).
pub const EVENTS_POINT: &str =
    "SELECT (SELECT max(ts) FROM events), (SELECT count(*)::bigint FROM events)";

/// A cluster and one database in it with `rows` events (about 100 bytes each).
pub struct Fixture {
    pub pg: Postgres,
    pub db: String,
    pub dir: tempfile::TempDir,
}

impl Fixture {
    pub fn new(rows: i64) -> Self {
        let pg = Postgres::shared_or_start().unwrap();
        let db = pg.fresh_database("bk").unwrap();
        pg.psql(
            &db,
            &format!(
                "CREATE TABLE events (ts bigint PRIMARY KEY, payload text NOT NULL);
                 CREATE TABLE blocker (x int);
                 INSERT INTO events SELECT g, md5(g::text) || md5((g * 7)::text) || md5((g * 13)::text)
                 FROM generate_series(1, {rows}) g;"
            ),
        )
        .unwrap();
        Self {
            pg,
            db,
            dir: tempfile::tempdir().unwrap(),
        }
    }

    pub fn database(&self) -> Database {
        Database::new(&self.pg.conninfo(&self.db)).unwrap()
    }

    pub fn root(&self) -> PathBuf {
        self.dir.path().join("backups")
    }

    pub fn backups(&self) -> Backups {
        let mut config = BackupConfig::new(self.root());
        config.progress_interval = Duration::from_millis(5);
        Backups::new(config).unwrap()
    }

    pub fn point(&self) -> SqlPointSource {
        SqlPointSource::new(self.database(), EVENTS_POINT).unwrap()
    }

    pub fn sql(&self, sql: &str) -> String {
        self.pg.psql(&self.db, sql).unwrap()
    }

    /// The database's oid: a drop and recreate changes it.
    pub fn oid(&self) -> String {
        self.pg
            .psql(
                "postgres",
                &format!("SELECT oid FROM pg_database WHERE datname = '{}'", self.db),
            )
            .unwrap()
    }

    /// Backs up the database as node `p1` of set `set`.
    pub async fn backup(&self, set: &str, command_id: &str, observer: &dyn Observer) -> Manifest {
        let database = self.database();
        let point = self.point();
        self.backups()
            .backup(
                &BackupJob {
                    set,
                    node: &node("p1"),
                    command_id,
                    database: &database,
                    point: &point,
                },
                observer,
                &CancellationToken::new(),
            )
            .await
            .unwrap()
    }
}

pub fn node(id: &str) -> NodeRef {
    NodeRef {
        id: id.to_owned(),
        kind: NodeKind::Participant,
        organisation: "org1".to_owned(),
        participant: None,
        replica: None,
    }
}

/// Records what an action reported.
#[derive(Default)]
pub struct Recorder {
    pub children: Mutex<Vec<ChildInfo>>,
    pub progress: Mutex<Vec<Progress>>,
}

impl Recorder {
    pub fn children(&self) -> Vec<ChildInfo> {
        self.children.lock().unwrap().clone()
    }

    pub fn progress(&self) -> Vec<Progress> {
        self.progress.lock().unwrap().clone()
    }
}

impl Observer for Recorder {
    fn child_started<'a>(&'a self, child: &'a ChildInfo) -> BoxFuture<'a, Result<(), String>> {
        self.children.lock().unwrap().push(child.clone());
        Box::pin(async { Ok(()) })
    }

    fn progress(&self, progress: Progress) {
        self.progress.lock().unwrap().push(progress);
    }
}

/// Names of the files in `dir`, sorted (hidden ones included).
pub fn files_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// Polls `check` until it returns `Some`, failing after `deadline`; logs the time it took.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(value) = check().await {
            eprintln!("{what}: after {:?}", started.elapsed());
            return value;
        }
        assert!(
            started.elapsed() < deadline,
            "{what}: not reached within {deadline:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Holds an ACCESS EXCLUSIVE lock on table `blocker` in an open transaction until released, so
/// a pg_dump blocks mid-dump (it has created its file and waits for its table locks) while the
/// snapshot point query on `events` still answers.
pub struct TableLock {
    client: tokio_postgres::Client,
}

impl TableLock {
    pub async fn take(fixture: &Fixture) -> Self {
        let (client, connection) =
            tokio_postgres::connect(&fixture.pg.conninfo(&fixture.db), tokio_postgres::NoTls)
                .await
                .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute("BEGIN; LOCK TABLE blocker IN ACCESS EXCLUSIVE MODE")
            .await
            .unwrap();
        Self { client }
    }

    pub async fn release(self) {
        self.client.batch_execute("COMMIT").await.unwrap();
    }
}

/// Waits until a connection named `application_name` waits for a lock.
pub async fn wait_blocked_on_lock(fixture: &Fixture, application_name: &str) {
    let sql = format!(
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{application_name}' AND wait_event_type = 'Lock'"
    );
    eventually(
        &format!("{application_name} waits for the table lock"),
        Duration::from_secs(30),
        || {
            let blocked = fixture.pg.psql("postgres", &sql).unwrap() == "1";
            async move { blocked.then_some(()) }
        },
    )
    .await;
}

/// Number of connections named `application_name`.
pub fn connections_named(fixture: &Fixture, application_name: &str) -> String {
    fixture
        .pg
        .psql(
            "postgres",
            &format!("SELECT count(*) FROM pg_stat_activity WHERE application_name = '{application_name}'"),
        )
        .unwrap()
}
