//! Snapshot points: where a node's state stood, in sequencer time (and as a ledger offset),
//! read just before and just after a backup so the backup lies inside the interval. Never a
//! wall clock: clocks of different hosts do not order backups of different nodes.

use futures::future::BoxFuture;
use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::pg::Database;

/// The kinds of node a backup can be of.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Participant,
    Sequencer,
    Mediator,
    /// A Postgres-backed app in front of a participant (Splice validator or SV app).
    App,
}

impl NodeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Participant => "participant",
            Self::Sequencer => "sequencer",
            Self::Mediator => "mediator",
            Self::App => "app",
        }
    }
}

impl std::fmt::Display for NodeKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl std::str::FromStr for NodeKind {
    type Err = Error;

    fn from_str(text: &str) -> Result<Self> {
        match text {
            "participant" => Ok(Self::Participant),
            "sequencer" => Ok(Self::Sequencer),
            "mediator" => Ok(Self::Mediator),
            "app" => Ok(Self::App),
            other => Err(Error::config(format!(
                "node kind {other:?} is not one of participant, sequencer, mediator, app"
            ))),
        }
    }
}

/// One reading of a node's position.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnapshotPoint {
    /// A member's last processed sequencer timestamp, a sequencer's latest event (µs since the
    /// epoch, in sequencer time).
    pub sequencer_ts_micros: Option<i64>,
    /// A participant's ledger end, or the offset of its participant an app has processed.
    pub ledger_offset: Option<i64>,
}

/// Where snapshot points come from (the node's database, its admin API, …).
pub trait SnapshotPointSource: Send + Sync {
    fn read(&self) -> BoxFuture<'_, Result<SnapshotPoint>>;
}

/// Default snapshot-point queries for canton-sim's schema, per node kind. Each returns one row
/// of two `bigint` columns: (sequencer time in µs, ledger offset), either may be NULL. An app
/// has no sequencer time; its point is the participant offset it processed.
pub fn default_point_query(kind: NodeKind) -> Option<&'static str> {
    match kind {
        NodeKind::Participant => Some(
            "SELECT (SELECT max(last_ts_micros) FROM member_cursor), \
                    (SELECT ledger_end FROM participant_ledger)",
        ),
        NodeKind::Mediator => {
            Some("SELECT (SELECT max(last_ts_micros) FROM member_cursor), NULL::bigint")
        }
        NodeKind::Sequencer => {
            Some("SELECT (SELECT max(ts_micros) FROM sequencer_event), NULL::bigint")
        }
        NodeKind::App => Some("SELECT NULL::bigint, (SELECT processed_offset FROM app_state)"),
    }
}

/// Reads the snapshot point from the node's own database with a query returning one row of
/// (sequencer_ts_micros, ledger_offset), both `bigint`, either NULL.
pub struct SqlPointSource {
    database: Database,
    query: String,
}

impl SqlPointSource {
    pub fn new(database: Database, query: impl Into<String>) -> Result<Self> {
        let query = query.into();
        if query.trim().is_empty() {
            return Err(Error::config(
                "[backup] snapshot_point_query is empty; give a SELECT returning (sequencer_ts_micros, ledger_offset)",
            ));
        }
        Ok(Self { database, query })
    }

    /// The query `configured`, else the default for `kind`.
    pub fn for_kind(database: Database, kind: NodeKind, configured: Option<&str>) -> Result<Self> {
        match configured.or_else(|| default_point_query(kind)) {
            Some(query) => Self::new(database, query),
            None => Err(Error::config(format!(
                "a {kind} has no default snapshot point query; set [backup] snapshot_point_query to a SELECT returning (sequencer_ts_micros, ledger_offset) from the app's database"
            ))),
        }
    }

    pub fn query(&self) -> &str {
        &self.query
    }

    async fn read_point(&self) -> Result<SnapshotPoint> {
        let client = self.database.connect().await?;
        let what = || {
            format!(
                "snapshot point query {:?} on database {}",
                self.query,
                self.database.name()
            )
        };
        let rows = client
            .query(self.query.as_str(), &[])
            .await
            .map_err(|e| Error::db(format!("{}; fix [backup] snapshot_point_query", what()), e))?;
        let [row] = rows.as_slice() else {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "{} returned {} rows, not one; fix [backup] snapshot_point_query",
                    what(),
                    rows.len()
                ),
            ));
        };
        if row.len() != 2 {
            return Err(Error::config(format!(
                "{} returned {} columns, not two (sequencer_ts_micros, ledger_offset); fix [backup] snapshot_point_query",
                what(),
                row.len()
            )));
        }
        let column = |index: usize| {
            row.try_get::<_, Option<i64>>(index).map_err(|e| {
                Error::with_source(
                    ErrorKind::Config,
                    format!(
                        "{}: column {} is not a bigint; cast it with ::bigint",
                        what(),
                        index + 1
                    ),
                    e,
                )
            })
        };
        Ok(SnapshotPoint {
            sequencer_ts_micros: column(0)?,
            ledger_offset: column(1)?,
        })
    }
}

impl SnapshotPointSource for SqlPointSource {
    fn read(&self) -> BoxFuture<'_, Result<SnapshotPoint>> {
        Box::pin(self.read_point())
    }
}

/// A closed interval `[before, after]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Interval {
    pub before: i64,
    pub after: i64,
}

impl Interval {
    pub fn contains(&self, value: i64) -> bool {
        self.before <= value && value <= self.after
    }
}

/// The two readings around a backup as intervals. A value present before and missing after (or
/// going backwards) means the node's state changed under us (a restore, a reset): refused.
pub(crate) fn intervals(
    node: &str,
    before: SnapshotPoint,
    after: SnapshotPoint,
) -> Result<(Option<Interval>, Option<Interval>)> {
    let pair = |what: &str, before: Option<i64>, after: Option<i64>| match (before, after) {
        (None, None) => Ok(None),
        // A node that had processed nothing yet (no cursor row) may have started meanwhile.
        (None, Some(_)) => Ok(None),
        (Some(b), Some(a)) if b <= a => Ok(Some(Interval {
            before: b,
            after: a,
        })),
        (b, a) => Err(Error::new(
            ErrorKind::Database,
            format!(
                "the {what} of node {node} went from {b:?} before the backup to {a:?} after it; its state changed underneath (restore or reset?), so the backup is not trusted; run it again"
            ),
        )),
    };
    Ok((
        pair(
            "sequencer time",
            before.sequencer_ts_micros,
            after.sequencer_ts_micros,
        )?,
        pair("ledger offset", before.ledger_offset, after.ledger_offset)?,
    ))
}
