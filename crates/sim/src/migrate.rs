//! `canton-sim migrate` and `canton-sim reset-database` (the binary's, not the library's): the
//! redeploy hook of a network disaster recovery for one participant and its app, and the
//! rehydrate hook of one participant, over their control endpoints.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;

use anyhow::{Context, bail};
use canton_sim::app::{AppState, MigrateRequest, Migrated, dump_participant_id};
use canton_sim::control::{NodeInfo, http_request};
use canton_sim::redeploy::{ResetDone, ResetRequest};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

pub struct Options {
    pub participant_control: String,
    pub app_control: String,
    pub dump: PathBuf,
    pub migration_id: Option<i64>,
}

/// `host:port`, `http://host:port` or `http://host:port/` as a socket address.
fn control_addr(text: &str, flag: &str) -> anyhow::Result<SocketAddr> {
    let rest = text
        .strip_prefix("http://")
        .unwrap_or(text)
        .split('/')
        .next()
        .unwrap_or_default();
    rest.to_socket_addrs()
        .ok()
        .and_then(|mut addrs| addrs.next())
        .with_context(|| {
            format!("{flag} {text:?} is not a control endpoint address; give host:port or http://host:port")
        })
}

/// A node's control endpoint, named for messages.
struct Node {
    addr: SocketAddr,
    label: String,
}

impl Node {
    /// The call's JSON answer, or the status and the `error` text of a refusal.
    async fn call<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> anyhow::Result<Result<T, (u16, String)>> {
        let (status, text) = http_request(self.addr, method, path, body)
            .await
            .with_context(|| {
                format!(
                    "cannot reach the control endpoint of {} at {}; is the node running?",
                    self.label, self.addr
                )
            })?;
        if !(200..300).contains(&status) {
            let error = serde_json::from_str::<Value>(&text)
                .ok()
                .and_then(|v| v["error"].as_str().map(str::to_owned))
                .unwrap_or(text);
            return Ok(Err((status, error)));
        }
        serde_json::from_str(&text).map(Ok).with_context(|| {
            format!(
                "{method} {path} on {}: unexpected answer {text}",
                self.label
            )
        })
    }

    async fn info(&self, kind: &str, flag: &str) -> anyhow::Result<NodeInfo> {
        let info: NodeInfo = match self.call("GET", "/control/info", None).await? {
            Ok(info) => info,
            Err((status, error)) => bail!(
                "{flag} {}: GET /control/info answered {status}: {error}",
                self.addr
            ),
        };
        if info.kind != kind {
            bail!(
                "{flag} {} is the control endpoint of {} {}, not of a {kind}",
                self.addr,
                info.kind,
                info.node_id
            );
        }
        Ok(info)
    }
}

pub async fn run(options: Options) -> anyhow::Result<()> {
    let mut app = Node {
        addr: control_addr(&options.app_control, "--app-control")?,
        label: "the app".to_owned(),
    };
    let mut participant = Node {
        addr: control_addr(&options.participant_control, "--participant-control")?,
        label: "the participant".to_owned(),
    };
    let app_info = app.info("app", "--app-control").await?;
    app.label = format!("app {}", app_info.node_id);

    // The dump is read only when needed: a rerun after success needs nothing of it.
    let mut dump: Option<Value> = None;
    let read_dump = || -> anyhow::Result<Value> {
        let text = std::fs::read_to_string(&options.dump).with_context(|| {
            format!(
                "reading the migration dump {} (--dump or CS_MIGRATION_DUMP)",
                options.dump.display()
            )
        })?;
        serde_json::from_str(&text)
            .with_context(|| format!("the migration dump {} is not JSON", options.dump.display()))
    };
    let migration_id = match options.migration_id {
        Some(id) => id,
        None => {
            let value = read_dump()?;
            let id = canton_sim::app::migration_dump_of(&value)["migration_id"]
                .as_i64()
                .with_context(|| {
                    format!(
                        "no migration id: give --migration-id (or CS_MIGRATION_ID), the dump {} has none",
                        options.dump.display()
                    )
                })?;
            dump = Some(value);
            id
        }
    };

    let state: AppState = match app.call("GET", "/control/app", None).await? {
        Ok(state) => state,
        Err((status, error)) => bail!("{}: GET /control/app answered {status}: {error}", app.label),
    };
    if state.migration_id == migration_id {
        tracing::info!(
            migration_id,
            "{} is at migration {migration_id} already; nothing to do",
            app.label
        );
        println!(
            "{}",
            json!({ "migration_id": migration_id, "contracts_imported": 0, "already": true })
        );
        return Ok(());
    }
    if state.migration_id > migration_id {
        bail!(
            "{} is at migration {}, after {migration_id}; the dump or --migration-id is outdated",
            app.label,
            state.migration_id
        );
    }
    let dump = match dump {
        Some(dump) => dump,
        None => read_dump()?,
    };
    let participant_info = participant
        .info("participant", "--participant-control")
        .await?;
    participant.label = format!("participant {}", participant_info.node_id);
    let Some(owner) = dump_participant_id(&dump) else {
        bail!(
            "the migration dump {} has no identities.participant.id; it is not a migration dump",
            options.dump.display()
        );
    };
    if owner != participant_info.uid {
        bail!(
            "the migration dump {} is of participant {owner}, but {} is {}; give the dump taken from its own app. Nothing was changed",
            options.dump.display(),
            participant.label,
            participant_info.uid
        );
    }
    let body = |check_only: bool| -> anyhow::Result<String> {
        Ok(serde_json::to_string(&MigrateRequest {
            dump: Some(dump.clone()),
            dump_path: None,
            migration_id: Some(migration_id),
            check_only,
        })?)
    };

    // The app checks the dump against its own participant before anything changes.
    if let Err((status, error)) = app
        .call::<Migrated>("POST", "/control/migrate", Some(body(true)?))
        .await?
    {
        bail!(
            "{} refused the dump {} ({status}): {error}. Nothing was changed",
            app.label,
            options.dump.display()
        );
    }
    let reset = serde_json::to_string(&ResetRequest {
        migration_id: Some(migration_id),
    })?;
    let done: ResetDone = match participant
        .call("POST", "/control/reset-database", Some(reset))
        .await?
    {
        Ok(done) => done,
        Err((status, error)) => bail!(
            "{} refused the database reset ({status}): {error}. Nothing was changed",
            participant.label
        ),
    };
    tracing::info!(
        tables_dropped = done.tables_dropped,
        "{} is on a new, empty database",
        participant.label
    );
    let migrated: Migrated = match app
        .call("POST", "/control/migrate", Some(body(false)?))
        .await?
    {
        Ok(migrated) => migrated,
        Err((status, error)) => bail!(
            "{} did not import the dump ({status}): {error}. {}'s database was reset; fix the cause and run `canton-sim migrate` again",
            app.label,
            participant.label
        ),
    };
    println!(
        "{}",
        json!({
            "migration_id": migrated.migration_id,
            "contracts_imported": migrated.contracts_imported,
            "already": migrated.already,
            "participant": participant_info.uid,
            "acs_timestamp": migrated.acs_timestamp,
        })
    );
    Ok(())
}

/// `canton-sim reset-database`: the rehydrate hook of a participant (its database replaced by
/// a new, empty one with the same identity; the synchronizers registered again, not connected).
pub async fn reset(participant_control: &str, expected_uid: Option<&str>) -> anyhow::Result<()> {
    let mut participant = Node {
        addr: control_addr(participant_control, "--participant-control")?,
        label: "the participant".to_owned(),
    };
    let info = participant
        .info("participant", "--participant-control")
        .await?;
    participant.label = format!("participant {}", info.node_id);
    if let Some(expected) = expected_uid.filter(|uid| !uid.is_empty())
        && expected != info.uid
    {
        bail!(
            "{} is {}, not {expected}; is --participant-control the right node? Nothing was changed",
            participant.label,
            info.uid
        );
    }
    let done: ResetDone = match participant
        .call(
            "POST",
            "/control/reset-database",
            Some(serde_json::to_string(&ResetRequest { migration_id: None })?),
        )
        .await?
    {
        Ok(done) => done,
        Err((status, error)) => bail!(
            "{} refused the database reset ({status}): {error}. Nothing was changed",
            participant.label
        ),
    };
    println!(
        "{}",
        json!({
            "node": done.node,
            "uid": done.uid,
            "tables_dropped": done.tables_dropped,
            "registered": done.registered,
        })
    );
    Ok(())
}
