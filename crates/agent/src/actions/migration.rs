//! Network disaster recovery on a Splice app (DESIGN §6 `network-dr`): `migration_dump` takes
//! the app's data snapshot at the agreed timestamp and merges it with the node identities
//! into one migration dump; `redeploy` runs the operator's hook that brings the participant
//! back on a new database, initialised from that dump, and then checks the identity survived
//! (as the SV app's identities dump or the validator app's participant identities show it).
//!
//! Both are guarded (DESIGN §3): the dump is written once, atomically, with its SHA-256 beside
//! it, and a later attempt whose file is in place and matches answers from the file without
//! asking the app again; the redeploy leaves a marker after the hook succeeded, so it never
//! wipes a participant twice. Files live under `[splice] dump_dir/migration-<id>/`.
//!
//! The app answers a snapshot for a timestamp it cannot serve with 400 (its participant is
//! pruned past it: nothing can be dumped, a clear failure) or 429 (not caught up yet: the
//! action asks again until the command's deadline, reporting each wait as progress). A 404
//! means this Splice release has no dump endpoints; that is refused with what to do.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use proto_sidecar::action::Kind;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use super::{
    ActionContext, ActionError, ActionHandler, ActionName, ActionOutput, Command, Idempotency,
    Progress,
};
use crate::config::{SpliceConfig, SpliceRole};

/// The largest answer read from the app (a dump holds the whole ACS at the timestamp).
const BODY_LIMIT: usize = 2 << 30;
/// How long one HTTP call may take.
const CALL_TIMEOUT: Duration = Duration::from_secs(300);
/// Pause between two snapshot requests answered 429.
const CATCH_UP_PAUSE: Duration = Duration::from_millis(500);
/// Kept free before the command's deadline when waiting for the app to catch up.
const DEADLINE_MARGIN_MS: i64 = 2_000;

const DUMP_FILE: &str = "migration-dump.json";
const CHECKSUM_FILE: &str = "migration-dump.json.sha256";
const REDEPLOYED_FILE: &str = "redeployed.json";

/// The handlers of an agent with `[splice]`: the dump always, the redeploy when a hook is set.
pub fn migration_handlers(node: &str, splice: &SpliceConfig) -> Vec<Arc<dyn ActionHandler>> {
    let shared = Arc::new(Shared {
        node: node.to_owned(),
        splice: splice.clone(),
    });
    let mut handlers: Vec<Arc<dyn ActionHandler>> = vec![Arc::new(MigrationDumpAction {
        shared: Arc::clone(&shared),
    })];
    if splice.redeploy.is_some() {
        handlers.push(Arc::new(RedeployAction { shared }));
    }
    handlers
}

struct Shared {
    node: String,
    splice: SpliceConfig,
}

impl Shared {
    fn dir(&self, migration_id: i64) -> PathBuf {
        self.splice
            .dump_dir
            .join(format!("migration-{migration_id}"))
    }

    /// The recorded dump of `migration_id` when its file matches its checksum.
    fn recorded_dump(&self, migration_id: i64) -> Result<Option<RecordedDump>, ActionError> {
        let dir = self.dir(migration_id);
        let (dump, checksum) = (dir.join(DUMP_FILE), dir.join(CHECKSUM_FILE));
        let Ok(recorded) = std::fs::read_to_string(&checksum) else {
            return Ok(None);
        };
        let bytes = std::fs::read(&dump).map_err(|e| {
            ActionError::Failed(format!(
                "{}: {} has a checksum but the dump cannot be read ({e}); move the directory \
                 away to take the dump again",
                self.node,
                dump.display()
            ))
        })?;
        let sha256 = hex::encode(Sha256::digest(&bytes));
        let expected = recorded.split_whitespace().next().unwrap_or_default();
        if sha256 != expected {
            return Err(ActionError::Failed(format!(
                "{}: {} does not match its recorded SHA-256 (file {sha256}, recorded {expected}); \
                 it changed after it was written: move the directory away to take the dump again",
                self.node,
                dump.display()
            )));
        }
        Ok(Some(RecordedDump {
            path: dump,
            sha256,
            bytes,
        }))
    }

    async fn get(&self, path_and_query: &str) -> Result<Value, HttpError> {
        let token = match &self.splice.token_file {
            None => None,
            Some(file) => Some(
                std::fs::read_to_string(file)
                    .map_err(|e| HttpError::Transport(format!("reading {}: {e}", file.display())))?
                    .trim()
                    .to_owned(),
            ),
        };
        let url = format!(
            "{}{path_and_query}",
            self.splice.admin_url.trim_end_matches('/')
        );
        tokio::time::timeout(CALL_TIMEOUT, get_json(&url, token.as_deref()))
            .await
            .map_err(|_| {
                HttpError::Transport(format!("GET {url}: no answer in {CALL_TIMEOUT:?}"))
            })?
    }
}

struct RecordedDump {
    path: PathBuf,
    sha256: String,
    bytes: Vec<u8>,
}

impl RecordedDump {
    fn output(&self, node: &str, migration_id: i64, reused: bool) -> ActionOutput {
        let dump: Value = serde_json::from_slice(&self.bytes).unwrap_or(Value::Null);
        let participant = dump["identities"]["participant"]["id"]
            .as_str()
            .unwrap_or_default();
        let acs_timestamp = dump["data_snapshot"]["acs_timestamp"]
            .as_str()
            .unwrap_or_default();
        let result = json!({
            "node": node,
            "migration_id": migration_id,
            "path": self.path.display().to_string(),
            "sha256": self.sha256,
            "bytes": self.bytes.len(),
            "participant_id": participant,
            "acs_timestamp": acs_timestamp,
            "reused": reused,
        });
        ActionOutput {
            result: result.to_string().into_bytes(),
            detail: format!(
                "{node}: migration dump {migration_id} of {participant} at {acs_timestamp}, {} \
                 bytes, sha256 {}{}",
                self.bytes.len(),
                &self.sha256[..12],
                if reused { " (already taken)" } else { "" }
            ),
        }
    }
}

/// An HTTP call that did not return 200.
#[derive(Debug)]
enum HttpError {
    Status { status: u16, error: String },
    Transport(String),
}

async fn get_json(url: &str, token: Option<&str>) -> Result<Value, HttpError> {
    let transport = |e: &dyn std::fmt::Display| HttpError::Transport(format!("GET {url}: {e}"));
    let uri: hyper::Uri = url.parse().map_err(|e| transport(&e))?;
    if uri.scheme_str() != Some("http") {
        return Err(HttpError::Transport(format!(
            "GET {url}: only http:// app URLs are supported; put a TLS proxy in front"
        )));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| transport(&"URL without host"))?
        .clone();
    let stream = tokio::net::TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| transport(&e))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| transport(&e))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut request = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, authority.as_str())
        .header(hyper::header::ACCEPT, "application/json");
    if let Some(token) = token {
        request = request.header(hyper::header::AUTHORIZATION, format!("Bearer {token}"));
    }
    let request = request
        .body(Empty::<Bytes>::new())
        .map_err(|e| transport(&e))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| transport(&e))?;
    let status = response.status().as_u16();
    let body = http_body_util::Limited::new(response.into_body(), BODY_LIMIT)
        .collect()
        .await
        .map_err(|e| transport(&e))?
        .to_bytes();
    driver.abort();
    if status != 200 {
        let text = String::from_utf8_lossy(&body[..body.len().min(2048)]).into_owned();
        let error = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"].as_str().map(str::to_owned))
            .unwrap_or(text);
        return Err(HttpError::Status { status, error });
    }
    serde_json::from_slice(&body).map_err(|e| transport(&format!("the answer is not JSON: {e}")))
}

fn migration_params(command: &Command) -> Option<(String, i64, bool)> {
    match command.action.as_ref()?.kind.as_ref()? {
        Kind::MigrationDump(dump) => Some((dump.timestamp.clone(), dump.migration_id, dump.force)),
        Kind::Redeploy(redeploy) => Some((String::new(), redeploy.migration_id, false)),
        _ => None,
    }
}

fn params_of(command: &Command) -> Result<(String, i64, bool), ActionError> {
    migration_params(command)
        .filter(|(_, id, _)| *id > 0)
        .ok_or_else(|| {
            ActionError::Failed(format!(
                "command {} carries no migration id",
                command.command_id
            ))
        })
}

/// Writes `bytes` to `path` so that a reader sees all of it or nothing: a temp file in the same
/// directory, fsynced, renamed over `path`, and the directory fsynced.
pub(super) fn write_durably(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    std::fs::File::open(dir)?.sync_all()
}

/// `migration_dump`: the data snapshot at the timestamp plus identities, once per migration id.
struct MigrationDumpAction {
    shared: Arc<Shared>,
}

impl MigrationDumpAction {
    /// The snapshot path for the configured role.
    fn snapshot_path(&self, timestamp: &str, migration_id: i64, force: bool) -> String {
        let api = match self.shared.splice.role {
            SpliceRole::Sv => "/api/sv/v0/admin/domain/data-snapshot",
            SpliceRole::Validator => "/api/validator/v0/admin/domain/data-snapshot",
        };
        format!(
            "{api}?timestamp={}&migration_id={migration_id}&force={force}",
            timestamp.replace('+', "%2B").replace(':', "%3A")
        )
    }

    /// Asks for the snapshot until the app has caught up (429) or the deadline nears.
    async fn snapshot(
        &self,
        command: &Command,
        context: &ActionContext,
        timestamp: &str,
        migration_id: i64,
        force: bool,
    ) -> Result<Value, ActionError> {
        let node = &self.shared.node;
        let path = self.snapshot_path(timestamp, migration_id, force);
        let mut waits = 0u64;
        loop {
            match self.shared.get(&path).await {
                Ok(value) => return Ok(value),
                Err(HttpError::Status { status: 429, error }) => {
                    waits += 1;
                    let now = crate::commands::unix_ms_now();
                    if command.expires_at_unix_ms > 0
                        && now + DEADLINE_MARGIN_MS >= command.expires_at_unix_ms
                    {
                        return Err(ActionError::Failed(format!(
                            "{node}: the app has not caught up to {timestamp} after {waits} \
                             tries (429: {error}); nothing was written. Check that the \
                             participant is running and processing, then run the step again"
                        )));
                    }
                    context.progress(Progress {
                        done: waits,
                        total: 0,
                        unit: "tries".to_owned(),
                        message: format!("waiting for the app to catch up to {timestamp}: {error}"),
                    });
                    tokio::select! {
                        () = context.cancellation().cancelled() => return Err(ActionError::Interrupted),
                        () = tokio::time::sleep(CATCH_UP_PAUSE) => {}
                    }
                }
                Err(error) => return Err(self.refused(error, timestamp, &path)),
            }
        }
    }

    fn refused(&self, error: HttpError, timestamp: &str, path: &str) -> ActionError {
        let node = &self.shared.node;
        match error {
            HttpError::Status { status: 400, error } => ActionError::Failed(format!(
                "{node}: the app cannot dump at {timestamp} (400: {error}); a participant pruned \
                 past the timestamp cannot serve it: agree a later timestamp (canton-ops dr \
                 propose) or take the dump from a node that still has the data"
            )),
            HttpError::Status { status: 404, error } => ActionError::Failed(format!(
                "{node}: the app has no {path} endpoint (404: {error}); this Splice release does \
                 not serve data snapshots for network DR, so this runbook cannot run against it: \
                 follow that release's own recovery procedure"
            )),
            HttpError::Status { status, error } if status == 401 || status == 403 => {
                ActionError::Failed(format!(
                    "{node}: the app refused the dump ({status}: {error}); [splice] token_file \
                     must hold a token with participant admin rights"
                ))
            }
            HttpError::Status { status, error } => ActionError::Unavailable(format!(
                "{node}: the app answered {status} to {path}: {error}; nothing was written"
            )),
            HttpError::Transport(detail) => ActionError::Unavailable(format!(
                "{node}: the app's admin API is not reachable ({detail}); nothing was written; \
                 retry when it is up"
            )),
        }
    }

    /// The migration dump document: for an SV, the identities dump merged with the snapshot;
    /// a validator's snapshot already is one.
    async fn dump(
        &self,
        command: &Command,
        context: &ActionContext,
        timestamp: &str,
        migration_id: i64,
        force: bool,
    ) -> Result<Value, ActionError> {
        let snapshot = self
            .snapshot(command, context, timestamp, migration_id, force)
            .await?;
        let mut dump = match self.shared.splice.role {
            SpliceRole::Sv => {
                let path = "/api/sv/v0/admin/domain/identities-dump";
                let identities = self
                    .shared
                    .get(path)
                    .await
                    .map_err(|error| self.refused(error, timestamp, path))?;
                json!({
                    "identities": identities["identities"],
                    "data_snapshot": snapshot["data_snapshot"],
                    "created_at": snapshot["created_at"],
                })
            }
            SpliceRole::Validator => snapshot["data_snapshot"].clone(),
        };
        dump["migration_id"] = json!(migration_id);
        if dump["identities"]["participant"]["id"]
            .as_str()
            .is_none_or(str::is_empty)
            || !dump["data_snapshot"].is_object()
        {
            return Err(ActionError::Failed(format!(
                "{}: the app's answer holds no participant identity or data snapshot; nothing \
                 was written",
                self.shared.node
            )));
        }
        Ok(dump)
    }
}

impl ActionHandler for MigrationDumpAction {
    fn kind(&self) -> ActionName {
        ActionName::MigrationDump
    }

    fn idempotency(&self) -> Idempotency {
        Idempotency::Guarded
    }

    fn already_done(
        &self,
        command: &Command,
    ) -> BoxFuture<'static, Result<Option<ActionOutput>, ActionError>> {
        let shared = Arc::clone(&self.shared);
        let params = params_of(command);
        Box::pin(async move {
            let (_, migration_id, _) = params?;
            Ok(shared
                .recorded_dump(migration_id)?
                .map(|dump| dump.output(&shared.node, migration_id, true)))
        })
    }

    fn run(
        &self,
        command: Command,
        context: ActionContext,
    ) -> BoxFuture<'static, Result<ActionOutput, ActionError>> {
        let this = MigrationDumpAction {
            shared: Arc::clone(&self.shared),
        };
        Box::pin(async move {
            let (timestamp, migration_id, force) = params_of(&command)?;
            let node = this.shared.node.clone();
            if let Some(recorded) = this.shared.recorded_dump(migration_id)? {
                return Ok(recorded.output(&node, migration_id, true));
            }
            if humantime::parse_rfc3339_weak(&timestamp).is_err() {
                return Err(ActionError::Failed(format!(
                    "command {}: timestamp {timestamp:?} is not RFC 3339",
                    command.command_id
                )));
            }
            let dump = this
                .dump(&command, &context, &timestamp, migration_id, force)
                .await?;
            let bytes = serde_json::to_vec_pretty(&dump).unwrap_or_default();
            let sha256 = hex::encode(Sha256::digest(&bytes));
            let dir = this.shared.dir(migration_id);
            let path = dir.join(DUMP_FILE);
            let written = tokio::task::spawn_blocking({
                let (path, dir, bytes, sha256) =
                    (path.clone(), dir.clone(), bytes.clone(), sha256.clone());
                move || {
                    write_durably(&path, &bytes)?;
                    // The checksum is written last: its presence says the dump is complete.
                    write_durably(
                        &dir.join(CHECKSUM_FILE),
                        format!("{sha256}  {DUMP_FILE}\n").as_bytes(),
                    )
                }
            })
            .await
            .map_err(|e| ActionError::Failed(e.to_string()))?;
            written.map_err(|e| {
                ActionError::Failed(format!(
                    "{node}: writing the migration dump to {}: {e}",
                    path.display()
                ))
            })?;
            Ok(RecordedDump {
                path,
                sha256,
                bytes,
            }
            .output(&node, migration_id, false))
        })
    }
}

/// `redeploy`: the configured hook with the dump, then an identity check against the dump.
struct RedeployAction {
    shared: Arc<Shared>,
}

impl RedeployAction {
    fn marker(&self, migration_id: i64) -> PathBuf {
        self.shared.dir(migration_id).join(REDEPLOYED_FILE)
    }

    /// After the hook: the participant's identity, as the app reports it, is the dump's.
    async fn check_identity(&self, dump: &Value) -> Result<Value, ActionError> {
        let node = &self.shared.node;
        // An SV app reports its participant in the identities dump, a validator app directly.
        let (path, pointer) = match self.shared.splice.role {
            SpliceRole::Sv => (
                "/api/sv/v0/admin/domain/identities-dump",
                "/identities/participant",
            ),
            SpliceRole::Validator => ("/api/validator/v0/admin/participant/identities", ""),
        };
        let answer = self.shared.get(path).await.map_err(|error| {
            ActionError::Failed(format!(
                "{node}: the redeploy hook succeeded but the app does not report its \
                 participant's identity ({error:?}); check the app and run the step again"
            ))
        })?;
        let now = answer.pointer(pointer).cloned().unwrap_or(Value::Null);
        let expected = &dump["identities"]["participant"];
        let key_names = |identity: &Value| -> Vec<String> {
            let mut names: Vec<String> = identity["keys"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|key| key["name"].as_str().unwrap_or_default().to_owned())
                .collect();
            names.sort();
            names
        };
        if now["id"] != expected["id"] || key_names(&now) != key_names(expected) {
            return Err(ActionError::Failed(format!(
                "{node}: after the redeploy the participant is {} with keys {:?}, but the dump \
                 holds {} with keys {:?}; party ids would change: stop and restore the identity \
                 from the dump before reconnecting",
                now["id"],
                key_names(&now),
                expected["id"],
                key_names(expected)
            )));
        }
        Ok(json!({"participant_id": now["id"], "keys": key_names(&now).len()}))
    }
}

impl ActionHandler for RedeployAction {
    fn kind(&self) -> ActionName {
        ActionName::Redeploy
    }

    fn idempotency(&self) -> Idempotency {
        Idempotency::Guarded
    }

    fn already_done(
        &self,
        command: &Command,
    ) -> BoxFuture<'static, Result<Option<ActionOutput>, ActionError>> {
        let marker = params_of(command).map(|(_, id, _)| self.marker(id));
        Box::pin(async move {
            Ok(std::fs::read(marker?).ok().map(|result| ActionOutput {
                detail: "redeployed already".to_owned(),
                result,
            }))
        })
    }

    fn run(
        &self,
        command: Command,
        context: ActionContext,
    ) -> BoxFuture<'static, Result<ActionOutput, ActionError>> {
        let this = RedeployAction {
            shared: Arc::clone(&self.shared),
        };
        Box::pin(async move {
            let (_, migration_id, _) = params_of(&command)?;
            let node = this.shared.node.clone();
            let marker = this.marker(migration_id);
            if let Ok(result) = std::fs::read(&marker) {
                return Ok(ActionOutput {
                    detail: format!("{node}: redeployed for migration {migration_id} already"),
                    result,
                });
            }
            let dump = this.shared.recorded_dump(migration_id)?.ok_or_else(|| {
                ActionError::Failed(format!(
                    "{node}: there is no migration dump for migration {migration_id} in {}; run \
                     the dump step first",
                    this.shared.dir(migration_id).display()
                ))
            })?;
            let document: Value = serde_json::from_slice(&dump.bytes).map_err(|e| {
                ActionError::Failed(format!("{node}: the migration dump is not JSON: {e}"))
            })?;
            let Some(template) = &this.shared.splice.redeploy else {
                return Err(ActionError::Failed(format!(
                    "{node}: [splice] redeploy is not configured"
                )));
            };
            let id = migration_id.to_string();
            let path = dump.path.display().to_string();
            let hook = template
                .render(
                    format!("the redeploy hook of {node}"),
                    &[
                        ("node", node.as_str()),
                        ("migration_id", id.as_str()),
                        ("dump", path.as_str()),
                        ("command_id", command.command_id.as_str()),
                    ],
                )
                .env("CS_NODE", node.as_str())
                .env("CS_MIGRATION_ID", id.as_str())
                .env("CS_MIGRATION_DUMP", path.as_str())
                .env("CS_MIGRATION_DUMP_SHA256", dump.sha256.as_str());
            context.progress(Progress {
                done: 0,
                total: 1,
                unit: "hooks".to_owned(),
                message: format!("running {}", hook.display()),
            });
            let observer = super::backup::Journalled { context: &context };
            let ran = tokio::time::timeout(
                this.shared.splice.redeploy_timeout,
                sidecar_backup::run_child(&hook, &observer, context.cancellation()),
            )
            .await
            .map_err(|_| {
                ActionError::OutcomeUnknown(format!(
                    "{node}: the redeploy hook did not finish within {:?} and was killed; the \
                     participant may be half redeployed: check it before deciding",
                    this.shared.splice.redeploy_timeout
                ))
            })?
            .map_err(super::backup::classify)?
            .success(&hook)
            .map_err(|e| {
                ActionError::Failed(format!(
                    "{node}: {e}; the participant may need attention before a retry"
                ))
            })?;
            let identity = this.check_identity(&document).await?;
            let result = json!({
                "node": node,
                "migration_id": migration_id,
                "dump_sha256": dump.sha256,
                "hook_output": ran.stdout.lines().last().unwrap_or_default(),
                "identity": identity,
            })
            .to_string()
            .into_bytes();
            let written = tokio::task::spawn_blocking({
                let (marker, result) = (marker.clone(), result.clone());
                move || write_durably(&marker, &result)
            })
            .await
            .map_err(|e| ActionError::Failed(e.to_string()))?;
            written.map_err(|e| {
                ActionError::Failed(format!(
                    "{node}: the participant is redeployed but {} could not be written ({e}); \
                     create it by hand before running the step again",
                    marker.display()
                ))
            })?;
            Ok(ActionOutput {
                detail: format!(
                    "{node}: redeployed for migration {migration_id}; participant {} kept its identity",
                    identity["participant_id"]
                ),
                result,
            })
        })
    }
}
