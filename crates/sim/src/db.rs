//! The node's own database: connection, schema migrations at start, the node's identity row
//! and the action log. Everything a node knows lives here, so a pg_dump of this database is a
//! backup of the node and pg_restore brings it back.

use std::time::Duration;

use tokio::sync::{Mutex, MutexGuard};
use tokio_postgres::{Client, NoTls};

use crate::config::NodeConfig;
use crate::error::{Error, ErrorKind, Result};

/// Schema versions in order; each is applied once, in its own transaction, at start.
const MIGRATIONS: &[(i32, &str)] = &[
    (
        1,
        r#"
        CREATE TABLE sim_node (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            node_id text NOT NULL,
            kind text NOT NULL,
            uid text NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE sim_action_log (
            seq bigserial PRIMARY KEY,
            at timestamptz NOT NULL DEFAULT clock_timestamp(),
            method text NOT NULL,
            detail text NOT NULL,
            outcome text NOT NULL
        );
        CREATE TABLE participant_synchronizer (
            alias text PRIMARY KEY,
            config bytea NOT NULL,
            manual_connect boolean NOT NULL,
            priority integer NOT NULL,
            sequencer_urls text[] NOT NULL,
            pinned_physical_id text,
            synchronizer_id text,
            physical_synchronizer_id text,
            registered_at timestamptz NOT NULL DEFAULT now(),
            modified_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE pruning_schedule (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            cron text NOT NULL,
            max_duration_ms bigint NOT NULL,
            retention_ms bigint NOT NULL,
            prune_internally_only boolean NOT NULL DEFAULT false
        );
        CREATE TABLE participant_pruning (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            pruned_up_to_inclusive bigint NOT NULL DEFAULT 0,
            internally_pruned_up_to_inclusive bigint NOT NULL DEFAULT 0,
            pruned_before_micros bigint NOT NULL DEFAULT 0
        );
        CREATE TABLE participant_ledger (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            ledger_end bigint NOT NULL DEFAULT 0
        );
        INSERT INTO participant_ledger DEFAULT VALUES;
        INSERT INTO participant_pruning DEFAULT VALUES;
        CREATE TABLE sequencer_member (
            member text PRIMARY KEY,
            registered_at_micros bigint NOT NULL,
            enabled boolean NOT NULL DEFAULT true,
            last_acknowledged_micros bigint
        );
        "#,
    ),
    (
        2,
        r#"
        CREATE TABLE sequencer_event (
            ts_micros bigint PRIMARY KEY,
            sender text NOT NULL,
            payload bytea NOT NULL,
            message_id text NOT NULL
        );
        CREATE TABLE sequencer_delivery (
            member text NOT NULL,
            counter bigint NOT NULL,
            ts_micros bigint NOT NULL,
            PRIMARY KEY (member, counter)
        );
        ALTER TABLE sequencer_member ADD COLUMN pruned_up_to_counter bigint NOT NULL DEFAULT -1;
        CREATE TABLE member_cursor (
            physical_synchronizer_id text PRIMARY KEY,
            last_counter bigint NOT NULL,
            last_ts_micros bigint NOT NULL
        );
        CREATE TABLE participant_contract (
            contract_id text PRIMARY KEY,
            stakeholders text[] NOT NULL,
            created_by text NOT NULL,
            created_ts_micros bigint NOT NULL,
            created_offset bigint NOT NULL
        );
        CREATE TABLE participant_offset (
            ledger_offset bigint PRIMARY KEY,
            record_time_micros bigint NOT NULL
        );
        CREATE TABLE acs_commitment (
            counter_participant text NOT NULL,
            period_start_micros bigint NOT NULL,
            period_end_micros bigint NOT NULL,
            own bytea,
            received bytea,
            PRIMARY KEY (counter_participant, period_end_micros)
        );
        "#,
    ),
    (
        3,
        r#"
        CREATE TABLE topology_transaction (
            id bigserial PRIMARY KEY,
            store text NOT NULL,
            mapping_code text NOT NULL,
            mapping_key text NOT NULL,
            serial integer NOT NULL,
            operation integer NOT NULL,
            mapping bytea NOT NULL,
            proposal boolean NOT NULL,
            sequenced_micros bigint NOT NULL,
            valid_from_micros bigint NOT NULL,
            valid_until_micros bigint,
            transaction_hash bytea NOT NULL,
            signed_by text[] NOT NULL,
            UNIQUE (store, transaction_hash, proposal)
        );
        CREATE INDEX topology_transaction_mapping ON topology_transaction (store, mapping_code, mapping_key);
        "#,
    ),
    (
        4,
        r#"
        CREATE TABLE participant_archived_contract (
            contract_id text PRIMARY KEY,
            stakeholders text[] NOT NULL,
            created_by text NOT NULL,
            created_ts_micros bigint NOT NULL,
            created_offset bigint NOT NULL,
            archived_offset bigint NOT NULL
        );
        CREATE TABLE participant_ignored_event (
            physical_synchronizer_id text NOT NULL,
            counter bigint NOT NULL,
            PRIMARY KEY (physical_synchronizer_id, counter)
        );
        CREATE TABLE app_state (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            processed_offset bigint NOT NULL DEFAULT 0,
            participant_ledger_end bigint NOT NULL DEFAULT 0,
            polled_at_micros bigint,
            migration_id bigint NOT NULL DEFAULT 0
        );
        INSERT INTO app_state DEFAULT VALUES;
        CREATE TABLE vault_key (
            fingerprint text PRIMARY KEY,
            name text NOT NULL,
            purpose integer NOT NULL,
            public_key bytea NOT NULL,
            private_key bytea NOT NULL,
            key_spec integer NOT NULL,
            usage integer[] NOT NULL,
            created_at timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        CREATE TABLE ha_replica (
            replica text PRIMARY KEY,
            role text NOT NULL,
            heartbeat_micros bigint NOT NULL
        );
        CREATE TABLE app_migration_dump (
            migration_id bigint PRIMARY KEY,
            created_at_micros bigint NOT NULL,
            dump text NOT NULL
        );
        "#,
    ),
    (
        5,
        r#"
        CREATE TABLE sim_redeploy (
            singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
            migration_id bigint,
            reset_at timestamptz NOT NULL DEFAULT clock_timestamp()
        );
        "#,
    ),
];

/// Advisory lock key serialising schema migrations of replicas sharing a database.
const MIGRATION_LOCK: i64 = 0x0073_696d_5f6d_6967;

/// One connection to the node's database, reopened when it breaks (a Postgres restart must not
/// need a node restart). Calls are serialised, which also serialises the node's state changes.
pub struct Db {
    conninfo: String,
    client: Mutex<Option<Client>>,
}

/// One entry of the action log: a mutating admin call the node executed (or refused).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Action {
    pub seq: i64,
    /// Microseconds since the Unix epoch.
    pub at_micros: i64,
    /// Full gRPC method path, e.g. `/com.digitalasset.canton.admin.participant.v30.SynchronizerConnectivityService/DisconnectSynchronizer`.
    pub method: String,
    pub detail: String,
    /// `OK`, or the refusal's Canton error id.
    pub outcome: String,
}

pub struct DbGuard<'a> {
    guard: MutexGuard<'a, Option<Client>>,
}

impl DbGuard<'_> {
    pub fn client(&mut self) -> Result<&mut Client> {
        self.guard
            .as_mut()
            .ok_or_else(|| Error::new(ErrorKind::Database, "database connection lost"))
    }
}

impl Db {
    /// Connects, retrying for up to `patience` (the database may still be starting).
    pub async fn connect(conninfo: &str, patience: Duration) -> Result<Self> {
        let deadline = tokio::time::Instant::now() + patience;
        loop {
            match open(conninfo).await {
                Ok(client) => {
                    return Ok(Self {
                        conninfo: conninfo.to_owned(),
                        client: Mutex::new(Some(client)),
                    });
                }
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(e) => {
                    tracing::warn!(error = %e, "database not reachable yet, retrying");
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
        }
    }

    /// The connection, reopened if the previous one broke.
    pub async fn lock(&self) -> Result<DbGuard<'_>> {
        let mut guard = self.client.lock().await;
        if guard.as_ref().is_none_or(Client::is_closed) {
            *guard = None;
            *guard = Some(open(&self.conninfo).await?);
        }
        Ok(DbGuard { guard })
    }

    /// Whether the database answers a trivial query.
    pub async fn ping(&self) -> bool {
        let Ok(mut guard) = self.lock().await else {
            return false;
        };
        let Ok(client) = guard.client() else {
            return false;
        };
        tokio::time::timeout(Duration::from_secs(2), client.simple_query("SELECT 1"))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Applies missing migrations and records (or checks) which node owns this database.
    pub async fn prepare(&self, config: &NodeConfig) -> Result<()> {
        let mut guard = self.lock().await?;
        let client = guard.client()?;
        // HA replicas share a database and start together: one migrates at a time.
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| Error::db("waiting for the migration lock", e))?;
        let prepared = self.prepare_locked(client, config).await;
        let unlocked = client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| Error::db("releasing the migration lock", e));
        prepared.and(unlocked.map(|_| ()))
    }

    /// Drops every table of the node (in the connection's current schema) and prepares the
    /// schema again, as for a node started on a new, empty database; returns how many tables
    /// went. No other call of the node runs meanwhile.
    pub async fn reset(&self, config: &NodeConfig) -> Result<usize> {
        let mut guard = self.lock().await?;
        let client = guard.client()?;
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| Error::db("waiting for the migration lock", e))?;
        let reset = self.reset_locked(client, config).await;
        let unlocked = client
            .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(|e| Error::db("releasing the migration lock", e));
        reset.and_then(|dropped| unlocked.map(|_| dropped))
    }

    async fn reset_locked(&self, client: &mut Client, config: &NodeConfig) -> Result<usize> {
        let tx = client
            .transaction()
            .await
            .map_err(|e| Error::db("starting the database reset", e))?;
        let tables: Vec<String> = tx
            .query(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() ORDER BY tablename",
                &[],
            )
            .await
            .map_err(|e| Error::db("listing the node's tables", e))?
            .iter()
            .map(|row| row.get(0))
            .collect();
        for table in &tables {
            tx.batch_execute(&format!(
                "DROP TABLE IF EXISTS \"{}\" CASCADE",
                table.replace('"', "\"\"")
            ))
            .await
            .map_err(|e| Error::db(format!("dropping table {table}"), e))?;
        }
        tx.commit()
            .await
            .map_err(|e| Error::db("committing the database reset", e))?;
        tracing::info!(tables = tables.len(), "dropped the node's tables");
        self.prepare_locked(client, config).await?;
        Ok(tables.len())
    }

    async fn prepare_locked(&self, client: &mut Client, config: &NodeConfig) -> Result<()> {
        client
            .batch_execute(
                "CREATE TABLE IF NOT EXISTS sim_schema_version (
                    version integer PRIMARY KEY,
                    applied_at timestamptz NOT NULL DEFAULT now())",
            )
            .await
            .map_err(|e| Error::db("creating the schema version table", e))?;
        for (version, sql) in MIGRATIONS {
            let tx = client
                .transaction()
                .await
                .map_err(|e| Error::db("starting a migration", e))?;
            let applied = tx
                .query_opt(
                    "SELECT 1 FROM sim_schema_version WHERE version = $1 FOR UPDATE",
                    &[version],
                )
                .await
                .map_err(|e| Error::db("reading the schema version", e))?
                .is_some();
            if applied {
                continue;
            }
            tx.batch_execute(sql)
                .await
                .map_err(|e| Error::db(format!("applying schema migration {version}"), e))?;
            tx.execute(
                "INSERT INTO sim_schema_version (version) VALUES ($1)",
                &[version],
            )
            .await
            .map_err(|e| Error::db("recording the schema version", e))?;
            tx.commit()
                .await
                .map_err(|e| Error::db(format!("committing schema migration {version}"), e))?;
            tracing::info!(version, "applied schema migration");
        }
        let kind = config.kind().as_str();
        let owner = client
            .query_opt("SELECT node_id, kind FROM sim_node", &[])
            .await
            .map_err(|e| Error::db("reading the node identity", e))?;
        match owner {
            None => {
                client
                    .execute(
                        "INSERT INTO sim_node (node_id, kind, uid) VALUES ($1, $2, $3)",
                        &[&config.id, &kind, &config.uid()],
                    )
                    .await
                    .map_err(|e| Error::db("recording the node identity", e))?;
            }
            Some(row) => {
                let (node_id, owner_kind): (String, String) = (row.get(0), row.get(1));
                if node_id != config.id || owner_kind != kind {
                    return Err(Error::new(
                        ErrorKind::WrongDatabase,
                        format!(
                            "database holds {owner_kind} {node_id}, not {kind} {}; point `database` at this node's own database",
                            config.id
                        ),
                    ));
                }
            }
        }
        if config.kind() != crate::config::NodeKind::App {
            // The namespace key the node's identity rests on (the sim derives the fingerprint
            // from organisation and id instead of from the key).
            let public_key = config.fingerprint().into_bytes();
            client
                .execute(
                    "INSERT INTO vault_key (fingerprint, name, purpose, public_key, private_key, key_spec, usage)
                     VALUES ($1, $2, 1, $3, $3, 1, '{1}') ON CONFLICT (fingerprint) DO NOTHING",
                    &[&config.fingerprint(), &format!("{}-namespace", config.id), &public_key],
                )
                .await
                .map_err(|e| Error::db("recording the namespace key", e))?;
        }
        Ok(())
    }

    /// Appends to the action log on its own (calls that change no stored state, refusals).
    pub async fn log_plain(&self, method: &str, detail: &str, outcome: &str) -> Result<()> {
        let mut guard = self.lock().await?;
        guard
            .client()?
            .execute(
                "INSERT INTO sim_action_log (method, detail, outcome) VALUES ($1, $2, $3)",
                &[&method, &detail, &outcome],
            )
            .await
            .map_err(|e| Error::db("appending to the action log", e))?;
        Ok(())
    }

    /// The action log from `after_seq` on (exclusive), oldest first.
    pub async fn actions(&self, after_seq: i64) -> Result<Vec<Action>> {
        let mut guard = self.lock().await?;
        let rows = guard
            .client()?
            .query(
                "SELECT seq, (extract(epoch FROM at) * 1000000)::bigint, method, detail, outcome
                 FROM sim_action_log WHERE seq > $1 ORDER BY seq",
                &[&after_seq],
            )
            .await
            .map_err(|e| Error::db("reading the action log", e))?;
        Ok(rows
            .iter()
            .map(|row| Action {
                seq: row.get(0),
                at_micros: row.get(1),
                method: row.get(2),
                detail: row.get(3),
                outcome: row.get(4),
            })
            .collect())
    }
}

async fn open(conninfo: &str) -> Result<Client> {
    let (client, connection) = tokio_postgres::connect(conninfo, NoTls)
        .await
        .map_err(|e| Error::db("connecting to the node database", e))?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::warn!(error = %e, "database connection ended");
        }
    });
    Ok(client)
}

/// Appends to the action log inside the caller's transaction, so the log row commits exactly
/// when the state change does.
pub async fn log_action(
    tx: &tokio_postgres::Transaction<'_>,
    method: &str,
    detail: &str,
    outcome: &str,
) -> Result<()> {
    tx.execute(
        "INSERT INTO sim_action_log (method, detail, outcome) VALUES ($1, $2, $3)",
        &[&method, &detail, &outcome],
    )
    .await
    .map_err(|e| Error::db("appending to the action log", e))?;
    Ok(())
}
