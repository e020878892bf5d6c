//! The sim's control endpoint (HTTP/JSON, not part of Canton): fault injection, the "stop
//! processing" switch, node info and the action log. Tests and the demo use it through
//! [`ControlClient`].

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::db::{Action, Db};
use crate::error::{Error, ErrorKind, Result};
use crate::faults::{ActiveFault, FaultRule, Faults};
use crate::health::{Health, Readiness};

/// What `GET /control/info` reports.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeInfo {
    pub node_id: String,
    pub kind: String,
    pub uid: String,
    pub member: String,
    pub pid: u32,
    pub ready: bool,
    pub processing_stopped: bool,
    /// HA replicas: the replica name.
    #[serde(default)]
    pub replica: Option<String>,
    /// `active`, `passive`, or `standalone` (no replicas).
    #[serde(default)]
    pub role: String,
}

#[derive(Clone)]
pub struct ControlState {
    pub info: NodeInfo,
    pub active: Arc<std::sync::atomic::AtomicBool>,
    pub faults: Arc<Faults>,
    pub db: Arc<Db>,
    pub health: Arc<Health>,
    pub workload: Option<Arc<crate::member::WorkloadRate>>,
    pub sequencer: Option<Arc<crate::sequencer::Sequencer>>,
    /// Participants: the database reset of a redeploy.
    pub redeploy: Option<Arc<crate::redeploy::Redeploy>>,
    /// Apps: the migration import.
    pub app: Option<crate::app::AppApi>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct WorkloadSetting {
    pub rate_per_second: f64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct SequencerPrune {
    /// Events sequenced before this time (µs since epoch) are deleted.
    pub before_micros: i64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Pruned {
    pub events: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct AddedFault {
    pub id: u64,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Processing {
    pub stopped: bool,
}

#[derive(Debug, Deserialize)]
struct ActionQuery {
    #[serde(default)]
    after: i64,
}

pub fn router(state: ControlState) -> axum::Router {
    axum::Router::new()
        .route("/control/info", get(info))
        .route(
            "/control/faults",
            get(list_faults).post(add_fault).delete(clear_faults),
        )
        .route("/control/faults/{id}", delete(remove_fault))
        .route("/control/processing", post(set_processing))
        .route("/control/actions", get(actions))
        .route("/control/workload", post(set_workload))
        .route("/control/sequencer/prune", post(prune_sequencer))
        .route("/control/app", get(app_state))
        .route(
            "/control/reset-database",
            get(redeploy_state).post(reset_database),
        )
        .route(
            "/control/migrate",
            post(migrate).layer(axum::extract::DefaultBodyLimit::max(MAX_DUMP_BYTES)),
        )
        .with_state(state)
}

/// The largest migration dump `POST /control/migrate` takes inline.
pub const MAX_DUMP_BYTES: usize = 512 * 1024 * 1024;

type JsonRefusal = (StatusCode, Json<serde_json::Value>);

fn json_refusal(status: StatusCode, cause: impl Into<String>) -> JsonRefusal {
    (status, Json(serde_json::json!({ "error": cause.into() })))
}

/// What the last reset recorded.
#[derive(Debug, Serialize, Deserialize)]
pub struct RedeployState {
    pub migration_id: Option<i64>,
}

async fn redeploy_state(
    State(state): State<ControlState>,
) -> std::result::Result<Json<RedeployState>, JsonRefusal> {
    if state.redeploy.is_none() {
        return Err(json_refusal(StatusCode::NOT_FOUND, "not a participant"));
    }
    crate::redeploy::recorded_migration_id(&state.db)
        .await
        .map(|migration_id| Json(RedeployState { migration_id }))
        .map_err(|e| json_refusal(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// `POST /control/reset-database` (body optional): the participant as redeployed on a new,
/// empty database. 409 while it is connected to a synchronizer.
async fn reset_database(
    State(state): State<ControlState>,
    body: axum::body::Bytes,
) -> std::result::Result<Json<crate::redeploy::ResetDone>, JsonRefusal> {
    use crate::redeploy::ResetRefused;
    let Some(redeploy) = &state.redeploy else {
        return Err(json_refusal(
            StatusCode::NOT_FOUND,
            format!(
                "{} is a {}; only participants reset their database",
                state.info.node_id, state.info.kind
            ),
        ));
    };
    let request: crate::redeploy::ResetRequest = if body.iter().all(u8::is_ascii_whitespace) {
        crate::redeploy::ResetRequest::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            json_refusal(
                StatusCode::BAD_REQUEST,
                format!("the body is not {{\"migration_id\": N}}: {e}"),
            )
        })?
    };
    let node = &state.info.node_id;
    match redeploy.reset(request.migration_id).await {
        Ok(done) => Ok(Json(done)),
        Err(ResetRefused::Connected(aliases)) => Err(json_refusal(
            StatusCode::CONFLICT,
            format!(
                "participant {node} is connected to synchronizer {aliases:?}; a redeploy needs it off every synchronizer: disconnect it (DisconnectAllSynchronizers) or take its sequencer down, then retry"
            ),
        )),
        Err(ResetRefused::Replica(replica)) => Err(json_refusal(
            StatusCode::CONFLICT,
            format!(
                "participant {node} runs as HA replica {replica:?}, whose database its peer replicas share; stop the replicas and recreate the database instead"
            ),
        )),
        Err(ResetRefused::Failed(cause)) => Err(json_refusal(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!(
                "resetting the database of participant {node} failed (retry the reset): {cause}"
            ),
        )),
    }
}

/// `POST /control/migrate`: an app started with migration enabled imports the dump.
async fn migrate(
    State(state): State<ControlState>,
    Json(request): Json<crate::app::MigrateRequest>,
) -> std::result::Result<Json<crate::app::Migrated>, JsonRefusal> {
    let Some(app) = &state.app else {
        return Err(json_refusal(
            StatusCode::NOT_FOUND,
            format!(
                "{} is a {}; only apps import migration dumps",
                state.info.node_id, state.info.kind
            ),
        ));
    };
    app.migrate(request).await.map(Json)
}

async fn info(State(state): State<ControlState>) -> Json<NodeInfo> {
    let mut info = state.info.clone();
    info.ready = state.health.readiness() == Readiness::Serving;
    info.processing_stopped = state.faults.processing_stopped();
    info.role = match (
        &info.replica,
        state.active.load(std::sync::atomic::Ordering::SeqCst),
    ) {
        (None, _) => "standalone",
        (Some(_), true) => "active",
        (Some(_), false) => "passive",
    }
    .to_owned();
    Json(info)
}

async fn list_faults(State(state): State<ControlState>) -> Json<Vec<ActiveFault>> {
    Json(state.faults.list())
}

async fn add_fault(
    State(state): State<ControlState>,
    Json(rule): Json<FaultRule>,
) -> Json<AddedFault> {
    Json(AddedFault {
        id: state.faults.add(rule),
    })
}

async fn clear_faults(State(state): State<ControlState>) -> StatusCode {
    state.faults.clear();
    StatusCode::NO_CONTENT
}

async fn remove_fault(State(state): State<ControlState>, Path(id): Path<u64>) -> StatusCode {
    if state.faults.remove(id) {
        StatusCode::NO_CONTENT
    } else {
        StatusCode::NOT_FOUND
    }
}

async fn set_processing(
    State(state): State<ControlState>,
    Json(body): Json<Processing>,
) -> StatusCode {
    state.faults.set_processing_stopped(body.stopped);
    StatusCode::NO_CONTENT
}

async fn set_workload(
    State(state): State<ControlState>,
    Json(body): Json<WorkloadSetting>,
) -> (StatusCode, String) {
    match &state.workload {
        Some(rate) if body.rate_per_second.is_finite() && body.rate_per_second >= 0.0 => {
            rate.set(body.rate_per_second);
            (StatusCode::NO_CONTENT, String::new())
        }
        Some(_) => (
            StatusCode::BAD_REQUEST,
            "rate_per_second must be a finite number >= 0".to_owned(),
        ),
        None => (
            StatusCode::NOT_FOUND,
            "only participants run a workload".to_owned(),
        ),
    }
}

/// Sequencer pruning (Canton's `SequencerPruningAdministrationService.Prune` is not in
/// `proto-canton` yet).
async fn prune_sequencer(
    State(state): State<ControlState>,
    Json(body): Json<SequencerPrune>,
) -> std::result::Result<Json<Pruned>, (StatusCode, String)> {
    let Some(sequencer) = &state.sequencer else {
        return Err((StatusCode::NOT_FOUND, "not a sequencer".to_owned()));
    };
    sequencer
        .prune(body.before_micros)
        .await
        .map(|events| Json(Pruned { events }))
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn app_state(
    State(state): State<ControlState>,
) -> std::result::Result<Json<crate::app::AppState>, (StatusCode, String)> {
    if state.info.kind != "app" {
        return Err((StatusCode::NOT_FOUND, "not an app".to_owned()));
    }
    crate::app::state(&state.db)
        .await
        .map(Json)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

async fn actions(
    State(state): State<ControlState>,
    Query(query): Query<ActionQuery>,
) -> std::result::Result<Json<Vec<Action>>, (StatusCode, String)> {
    state
        .db
        .actions(query.after)
        .await
        .map(Json)
        .map_err(|e| (StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
}

/// A small client of the control endpoint (plain HTTP/1.1, one connection per request).
#[derive(Clone, Debug)]
pub struct ControlClient {
    addr: SocketAddr,
}

impl ControlClient {
    pub fn new(addr: SocketAddr) -> Self {
        Self { addr }
    }

    pub async fn info(&self) -> Result<NodeInfo> {
        self.json("GET", "/control/info", None).await
    }

    /// Adds a fault rule and returns its id.
    pub async fn add_fault(&self, rule: &FaultRule) -> Result<u64> {
        let body = serde_json::to_string(rule)
            .map_err(|e| Error::with_source(ErrorKind::Control, "encoding a fault rule", e))?;
        let added: AddedFault = self.json("POST", "/control/faults", Some(body)).await?;
        Ok(added.id)
    }

    pub async fn faults(&self) -> Result<Vec<ActiveFault>> {
        self.json("GET", "/control/faults", None).await
    }

    pub async fn remove_fault(&self, id: u64) -> Result<()> {
        self.expect_ok("DELETE", &format!("/control/faults/{id}"), None)
            .await
    }

    pub async fn clear_faults(&self) -> Result<()> {
        self.expect_ok("DELETE", "/control/faults", None).await
    }

    /// Halts (or resumes) the node's background processing; its readiness follows.
    pub async fn set_processing_stopped(&self, stopped: bool) -> Result<()> {
        self.expect_ok(
            "POST",
            "/control/processing",
            Some(format!("{{\"stopped\":{stopped}}}")),
        )
        .await
    }

    /// Changes a participant's workload rate (transactions per second; 0 stops it).
    pub async fn set_workload(&self, rate_per_second: f64) -> Result<()> {
        self.expect_ok(
            "POST",
            "/control/workload",
            Some(format!("{{\"rate_per_second\":{rate_per_second}}}")),
        )
        .await
    }

    /// Prunes a sequencer's events sequenced before `before_micros`; returns how many went.
    pub async fn prune_sequencer(&self, before_micros: i64) -> Result<u64> {
        let pruned: Pruned = self
            .json(
                "POST",
                "/control/sequencer/prune",
                Some(format!("{{\"before_micros\":{before_micros}}}")),
            )
            .await?;
        Ok(pruned.events)
    }

    /// An app's processed offset and its participant's ledger end at the last poll.
    pub async fn app_state(&self) -> Result<crate::app::AppState> {
        self.json("GET", "/control/app", None).await
    }

    /// Resets a participant's database, as a redeploy on a new, empty one.
    pub async fn reset_database(
        &self,
        migration_id: Option<i64>,
    ) -> Result<crate::redeploy::ResetDone> {
        let body = serde_json::to_string(&crate::redeploy::ResetRequest { migration_id })
            .map_err(|e| Error::with_source(ErrorKind::Control, "encoding a reset", e))?;
        self.json("POST", "/control/reset-database", Some(body))
            .await
    }

    /// The migration id the participant's last database reset recorded.
    pub async fn redeploy_state(&self) -> Result<RedeployState> {
        self.json("GET", "/control/reset-database", None).await
    }

    /// Has an app import a migration dump.
    pub async fn migrate(
        &self,
        request: &crate::app::MigrateRequest,
    ) -> Result<crate::app::Migrated> {
        let body = serde_json::to_string(request)
            .map_err(|e| Error::with_source(ErrorKind::Control, "encoding a migration", e))?;
        self.json("POST", "/control/migrate", Some(body)).await
    }

    /// The action log after sequence number `after` (0 = all).
    pub async fn actions(&self, after: i64) -> Result<Vec<Action>> {
        self.json("GET", &format!("/control/actions?after={after}"), None)
            .await
    }

    async fn expect_ok(&self, method: &str, path: &str, body: Option<String>) -> Result<()> {
        let (status, text) = http_request(self.addr, method, path, body).await?;
        if !(200..300).contains(&status) {
            return Err(Error::new(
                ErrorKind::Control,
                format!("{method} {path} on {} answered {status}: {text}", self.addr),
            ));
        }
        Ok(())
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
    ) -> Result<T> {
        let (status, text) = http_request(self.addr, method, path, body).await?;
        if !(200..300).contains(&status) {
            return Err(Error::new(
                ErrorKind::Control,
                format!("{method} {path} on {} answered {status}: {text}", self.addr),
            ));
        }
        serde_json::from_str(&text).map_err(|e| {
            Error::with_source(
                ErrorKind::Control,
                format!("decoding the answer of {method} {path}"),
                e,
            )
        })
    }
}

/// One HTTP/1.1 request with `Connection: close`; returns the status code and body. Enough for
/// the control endpoint and `/health`, which answer small bodies without chunking.
pub async fn http_request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<String>,
) -> Result<(u16, String)> {
    let io = |what: &str, e: std::io::Error| {
        Error::with_source(
            ErrorKind::Control,
            format!("{what} {method} {path} on {addr}"),
            e,
        )
    };
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| io("connecting for", e))?;
    let body = body.unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| io("sending", e))?;
    let mut raw = Vec::new();
    stream
        .read_to_end(&mut raw)
        .await
        .map_err(|e| io("reading the answer of", e))?;
    let text = String::from_utf8_lossy(&raw);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| {
            Error::new(
                ErrorKind::Control,
                format!("{method} {path} on {addr}: not an HTTP answer: {head:?}"),
            )
        })?;
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    let body = if chunked {
        dechunk(body)
    } else {
        body.to_owned()
    };
    Ok((status, body))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let Ok(size) = usize::from_str_radix(size.trim(), 16) else {
            break;
        };
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest[size..].trim_start_matches("\r\n");
    }
    out
}
