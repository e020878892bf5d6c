//! The `CoordinatorService` gRPC API: bearer tokens with read-only and operator roles (TLS
//! optional), reads straight from the KV records, state changes through the driver, every
//! state-changing call appended to the audit stream.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use proto_sidecar as pb;
use proto_sidecar::coordinator_service_server::{CoordinatorService, CoordinatorServiceServer};
use sidecar_bus::Bucket;
use sidecar_core::{Decision, Event, NodeRun, NodeStatus, RunStatus, StepKind, StepStatus};
use tonic::{Request, Response, Status};

use crate::backup_sets;
use crate::catalogue::{self, Built};
use crate::dr;
use crate::driver::ports::RunStore;
use crate::driver::record::{RunRecord, result_key, run_key};
use crate::driver::{DriverError, DriverErrorKind, Input, StartRequest};
use crate::nats::NatsStore;
use crate::proposals;
use crate::registry::Health;
use crate::service::Shared;

/// What a bearer token allows.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// Plan, GetRun, ListRuns, WatchRun, ListNodes, GetDrTimestamp, ListProposals.
    ReadOnly,
    /// Everything, including StartRun, Approve, Cancel, Resume, ProposeDrTimestamp,
    /// ProposeJointRun and AnswerProposal.
    Operator,
}

/// Serves the API on `listener` until the coordinator stops.
pub async fn serve(shared: Arc<Shared>, listener: tokio::net::TcpListener) {
    let tokens = shared.config.tokens.clone();
    let api = Api {
        store: NatsStore::new(&shared.network),
        shared: shared.clone(),
    };
    let service =
        CoordinatorServiceServer::with_interceptor(api, move |mut request: Request<()>| {
            let role = request
                .metadata()
                .get("authorization")
                .and_then(|value| value.to_str().ok())
                .and_then(|value| value.strip_prefix("Bearer "))
                .and_then(|token| tokens.get(token.trim()).copied())
                .ok_or_else(|| {
                    Status::unauthenticated(
                        "missing or unknown bearer token (set CANTON_OPS_TOKEN)",
                    )
                })?;
            request.extensions_mut().insert(role);
            Ok(request)
        });
    let mut builder = tonic::transport::Server::builder();
    if let Some((cert, key)) = &shared.config.tls {
        let tls = tonic::transport::ServerTlsConfig::new()
            .identity(tonic::transport::Identity::from_pem(cert, key));
        builder = match builder.tls_config(tls) {
            Ok(builder) => builder,
            Err(error) => {
                tracing::error!(%error, "api TLS configuration refused");
                return;
            }
        };
    }
    let crashed = shared.crashed.clone();
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    if let Err(error) = builder
        .add_service(service)
        .serve_with_incoming_shutdown(incoming, crashed.cancelled_owned())
        .await
    {
        tracing::error!(%error, "api server stopped");
    }
}

struct Api {
    shared: Arc<Shared>,
    store: NatsStore,
}

fn require<T>(request: &Request<T>, needed: Role) -> Result<Role, Status> {
    let role = request
        .extensions()
        .get::<Role>()
        .copied()
        .ok_or_else(|| Status::unauthenticated("no role"))?;
    if role < needed {
        return Err(Status::permission_denied(
            "this call changes state and needs the operator token",
        ));
    }
    Ok(role)
}

fn status_of(error: DriverError) -> Status {
    let message = error.to_string();
    match error.kind {
        DriverErrorKind::NotLeader | DriverErrorKind::Deposed => Status::unavailable(format!(
            "{message}; this coordinator does not lead its organisation now: retry, or call the leader"
        )),
        DriverErrorKind::Claimed => Status::failed_precondition(message),
        DriverErrorKind::UnknownRun => Status::not_found(message),
        DriverErrorKind::Invalid => Status::invalid_argument(message),
        DriverErrorKind::Conflict => Status::aborted(message),
        DriverErrorKind::Store | DriverErrorKind::Publish => Status::unavailable(message),
        DriverErrorKind::Crashed => Status::internal(message),
    }
}

/// How often a run watch reads the record itself as well: the KV watch is an ordered consumer
/// that can go quiet while a NATS cluster moves the bucket's leader, and a watcher must still
/// see the run finish.
const WATCH_REREAD: Duration = Duration::from_secs(2);

fn parameters(list: &[pb::Parameter]) -> BTreeMap<String, String> {
    list.iter()
        .map(|p| (p.key.clone(), p.value.clone()))
        .collect()
}

impl Api {
    async fn record(&self, run: &str) -> Result<RunRecord, Status> {
        let stored = self
            .store
            .load(&run_key(run))
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .ok_or_else(|| {
                Status::not_found(format!("no run {run:?}; `canton-ops runs` lists them"))
            })?;
        RunRecord::decode(&stored.value)
            .map_err(|e| Status::internal(format!("run {run} does not decode: {e}")))
    }

    async fn build(
        &self,
        runbook: &str,
        nodes: &[String],
        params: &BTreeMap<String, String>,
        run_id: &str,
    ) -> Result<Built, Status> {
        if runbook == "restore" {
            return self.build_restore(params).await;
        }
        let inventory = self.shared.inventory().await.map_err(unavailable)?;
        catalogue::build(
            &catalogue::Request {
                runbook,
                nodes,
                parameters: params,
                run_id,
            },
            &inventory,
        )
        .map_err(|e| Status::invalid_argument(e.to_string()))
    }

    /// Network DR runs at a recovery timestamp every organisation accepted: `proposal=<hash>`
    /// of an agreed dr-timestamp proposal gives it (as `timestamp`). A timestamp given
    /// directly is taken only on a network of one organisation. Other runbooks pass through.
    async fn agreed_parameters(
        &self,
        runbook: &str,
        mut params: BTreeMap<String, String>,
    ) -> Result<BTreeMap<String, String>, Status> {
        if runbook != "network-dr" {
            return Ok(params);
        }
        let Some(wanted) = params.get("proposal").cloned() else {
            let others: Vec<&String> = self
                .shared
                .organisations
                .keys()
                .filter(|organisation| **organisation != self.shared.organisation)
                .collect();
            if params.contains_key("timestamp") && !others.is_empty() {
                return Err(Status::failed_precondition(format!(
                    "network DR needs a recovery timestamp every organisation accepted, and                      the network has {}: propose it with `canton-ops dr propose` and pass                      --param proposal=<hash> once all accepted",
                    others
                        .iter()
                        .map(|o| o.as_str())
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
            return Ok(params);
        };
        let books = proposals::books(&self.shared)
            .await
            .map_err(proposal_status)?;
        let book = proposals::find(&books, &wanted).map_err(proposal_status)?;
        let proposal = book.proposal();
        let hash = hex::encode(book.hash());
        if proposal.runbook != proposals::DR_TIMESTAMP {
            return Err(Status::failed_precondition(format!(
                "proposal {} is a {} proposal, not a recovery timestamp (dr-timestamp)",
                &hash[..12],
                proposal.runbook
            )));
        }
        if let Some((organisation, reason)) = book.aborted() {
            return Err(Status::failed_precondition(format!(
                "proposal {} was aborted by {organisation} ({reason}); nothing was started:                  agree a new timestamp",
                &hash[..12]
            )));
        }
        let missing = book.missing_accepts();
        if !missing.is_empty() {
            return Err(Status::failed_precondition(format!(
                "proposal {} is not accepted by {} yet; nothing was started: each of them                  accepts with `canton-ops proposals accept {}`",
                &hash[..12],
                missing.join(", "),
                &hash[..12]
            )));
        }
        let micros = proposal
            .parameters
            .iter()
            .find(|p| p.key == "timestamp_micros")
            .and_then(|p| p.value.parse::<u64>().ok())
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "proposal {} carries no timestamp_micros",
                    &hash[..12]
                ))
            })?;
        let agreed = humantime::format_rfc3339_micros(
            std::time::UNIX_EPOCH + std::time::Duration::from_micros(micros),
        )
        .to_string();
        if let Some(given) = params.get("timestamp")
            && humantime::parse_rfc3339_weak(given).ok()
                != humantime::parse_rfc3339_weak(&agreed).ok()
        {
            return Err(Status::invalid_argument(format!(
                "parameter timestamp {given} differs from the agreed {agreed} of proposal {};                  leave it out",
                &hash[..12]
            )));
        }
        params.insert("timestamp".to_owned(), agreed);
        params.insert("proposal".to_owned(), hash);
        Ok(params)
    }

    /// A restore runs only from a recorded set that satisfies the ordering rule, and a set
    /// with a sequencer only when every member of the synchronizer is ours (otherwise the
    /// other organisations' members would be forced back: that is network DR).
    async fn build_restore(&self, params: &BTreeMap<String, String>) -> Result<Built, Status> {
        let backup_set = params.get("backup_set").ok_or_else(|| {
            Status::invalid_argument(
                "restore needs --param backup_set=<set> (the backup run id unless the backup named one)",
            )
        })?;
        let record = self.backup_set(backup_set).await?;
        if record.verdict.is_none() {
            return Err(Status::failed_precondition(record.summary()));
        }
        if record
            .points
            .iter()
            .any(|p| p.kind == sidecar_core::NodeKind::Sequencer)
        {
            let foreign: Vec<String> = self
                .shared
                .node_states()
                .await
                .map_err(unavailable)?
                .into_iter()
                .filter(|state| {
                    !state.organisation.is_empty()
                        && state.organisation != self.shared.organisation
                        && matches!(
                            state.kind(),
                            pb::NodeKind::Participant | pb::NodeKind::Mediator
                        )
                })
                .map(|state| format!("{} ({})", state.node, state.organisation))
                .collect();
            if !foreign.is_empty() {
                return Err(Status::failed_precondition(format!(
                    "restoring the sequencer of set {backup_set} would force back members of other \
                     organisations: {}; use network disaster recovery instead",
                    foreign.join(", ")
                )));
            }
        }
        let nodes: Vec<sidecar_core::NodeRef> = record
            .points
            .iter()
            .map(|p| sidecar_core::NodeRef::new(&p.node, p.kind))
            .collect();
        let mut built_nodes: Vec<String> = nodes.iter().map(|n| n.id.clone()).collect();
        built_nodes.sort();
        let mut warnings = vec![record.summary()];
        // An app outside the set keeps state its participant is about to forget.
        let inventory = self.shared.inventory().await.map_err(unavailable)?;
        for app in inventory.nodes.values() {
            if let Some(participant) = &app.participant
                && app.kind == sidecar_core::NodeKind::App
                && built_nodes.contains(participant)
                && !built_nodes.contains(&app.id)
            {
                warnings.push(format!(
                    "app {} is not in set {backup_set} but reads from {participant}, which goes \
                     back to it: reset the app's state before it starts again",
                    app.id
                ));
            }
        }
        let replicas: BTreeMap<String, Vec<String>> = inventory
            .nodes
            .values()
            .filter(|node| built_nodes.contains(&node.id) && !node.replicas.is_empty())
            .map(|node| (node.id.clone(), node.replicas.clone()))
            .collect();
        Ok(Built {
            runbook: sidecar_core::runbooks::restore_replicated(backup_set, &nodes, &replicas),
            nodes: built_nodes,
            claims_nodes: true,
            warnings,
        })
    }

    /// The set's record, made from the manifests of every backup run that wrote into it: a set
    /// completed by a later run (say, for a node that failed the first time) is checked as the
    /// whole it is on disk, with each node's latest dump. Recorded under `set.<set>` each time
    /// it changes, so the verdict an operator saw stays readable.
    async fn backup_set(&self, backup_set: &str) -> Result<backup_sets::SetRecord, Status> {
        let kv = self.shared.network.kv(Bucket::Runs);
        let key = backup_sets::set_key(backup_set);
        let unavailable = |e: sidecar_bus::Error<sidecar_bus::KvErrorKind>| {
            Status::unavailable(format!("reading the runs bucket: {e}"))
        };
        let prune = crate::retention::prune_run_id(&self.shared.organisation, backup_set);
        if let Ok(Some(_)) = self.store.load(&run_key(&prune)).await {
            return Err(Status::failed_precondition(format!(
                "backup set {backup_set} was deleted by retention (run {prune})"
            )));
        }
        let runs = self.backup_runs_of(backup_set).await?;
        let points = backup_sets::latest_points(kv, backup_set, &runs)
            .await
            .map_err(|e| match e {
                backup_sets::SetReadError::Unavailable(_) => Status::unavailable(e.to_string()),
                _ => Status::failed_precondition(e.to_string()),
            })?;
        let run_ids: Vec<&str> = runs.iter().map(RunRecord::run_id).collect();
        let record = backup_sets::assess(
            backup_set,
            &run_ids.join(","),
            &self.shared.organisation,
            points,
            crate::driver::ports::Clock::now_ms(&crate::driver::ports::SystemClock),
        );
        let unchanged = kv
            .get(&key)
            .await
            .map_err(unavailable)?
            .and_then(|stored| serde_json::from_slice::<backup_sets::SetRecord>(&stored.value).ok())
            .is_some_and(|stored| stored.run == record.run && stored.points == record.points);
        if !unchanged {
            let bytes = serde_json::to_vec(&record)
                .map_err(|e| Status::internal(format!("encoding the set record: {e}")))?;
            kv.store()
                .put(&key, bytes.into())
                .await
                .map_err(|e| Status::unavailable(format!("recording {key}: {e}")))?;
        }
        Ok(record)
    }

    /// The backup runs that wrote `backup_set`, oldest first; every one must have succeeded.
    async fn backup_runs_of(&self, backup_set: &str) -> Result<Vec<RunRecord>, Status> {
        let mut runs = Vec::new();
        for key in self.store.run_keys().await.unwrap_or_default() {
            let Ok(Some(stored)) = self.store.load(&run_key(&key)).await else {
                continue;
            };
            let Ok(record) = RunRecord::decode(&stored.value) else {
                continue;
            };
            if !backup_sets::is_backup_of(&record, &self.shared.organisation)
                || backup_sets::set_of(&record) != backup_set
            {
                continue;
            }
            runs.push(record);
        }
        if runs.is_empty() {
            return Err(Status::not_found(format!(
                "no backup run of organisation {} wrote set {backup_set}; `canton-ops runs` lists them",
                self.shared.organisation
            )));
        }
        runs.sort_by_key(|run| (run.created_at, run.run_id().to_owned()));
        Ok(runs)
    }

    /// A finished dr-timestamp run's recorded outcome, judged from its evidence the first
    /// time it is asked for.
    async fn dr_record(&self, run: &str) -> Result<dr::DrRecord, Status> {
        let kv = self.shared.network.kv(Bucket::Runs);
        let key = dr::record_key(run);
        let unavailable = |e: sidecar_bus::Error<sidecar_bus::KvErrorKind>| {
            Status::unavailable(format!("reading the runs bucket: {e}"))
        };
        if let Some(stored) = kv.get(&key).await.map_err(unavailable)? {
            return serde_json::from_slice(&stored.value)
                .map_err(|e| Status::internal(format!("record {key} does not parse: {e}")));
        }
        let record = self.record(run).await?;
        if record.state.runbook.name != "dr-timestamp" {
            return Err(Status::invalid_argument(format!(
                "run {run} is a {} run; start `canton-ops dr timestamp` for a recovery timestamp",
                record.state.runbook.name
            )));
        }
        if !record.state.status.is_finished() {
            return Err(Status::failed_precondition(format!(
                "run {run} is still collecting evidence; `canton-ops watch {run}` follows it"
            )));
        }
        let mut results = BTreeMap::new();
        if let Some(step) = record
            .state
            .steps
            .iter()
            .find(|s| s.id == dr::EVIDENCE_STEP)
        {
            for (node, node_run) in &step.nodes {
                if matches!(node_run.status, NodeStatus::Done { .. })
                    && let Some(stored) = kv
                        .get(&result_key(run, dr::EVIDENCE_STEP, node))
                        .await
                        .map_err(unavailable)?
                {
                    results.insert(node.clone(), stored.value.to_vec());
                }
            }
        }
        let assessed = dr::assess(
            &record.state,
            &record.parameters,
            &results,
            &self.shared.organisation,
            crate::driver::ports::Clock::now_ms(&crate::driver::ports::SystemClock),
        );
        let bytes = serde_json::to_vec(&assessed)
            .map_err(|e| Status::internal(format!("encoding the record: {e}")))?;
        // Created once: a concurrent request judged the same evidence; the first one stands.
        if let Err(error) = kv.create(&key, bytes.into()).await {
            tracing::debug!(%error, key, "recovery timestamp already recorded");
            if let Ok(Some(stored)) = kv.get(&key).await
                && let Ok(first) = serde_json::from_slice(&stored.value)
            {
                return Ok(first);
            }
        }
        Ok(assessed)
    }

    /// Checks an operator's signed approval of `step` of `run` the way agents will, so a bad
    /// one is refused here instead of failing the step on every node.
    fn verified_approval(
        &self,
        signed: &pb::SignedEnvelope,
        run: &str,
        step: &str,
        state: &sidecar_core::RunState,
    ) -> Result<pb::OperatorApproval, Status> {
        let refused =
            |detail: String| Status::permission_denied(format!("approval refused: {detail}"));
        let key = sidecar_trust::verify_envelope(
            signed,
            sidecar_trust::Domain::Approval,
            &self.shared.keys,
            sidecar_trust::KeyPurpose::Operator,
            crate::driver::ports::Clock::now_ms(&crate::driver::ports::SystemClock),
        )
        .map_err(|rejection| refused(rejection.to_string()))?;
        let approval = <pb::OperatorApproval as prost::Message>::decode(signed.body.as_slice())
            .map_err(|e| refused(format!("the approval body does not decode: {e}")))?;
        if key.organisation != self.shared.organisation
            || approval.organisation != self.shared.organisation
            || approval.network != self.shared.names().network().as_str()
            || approval.run != run
            || approval.step != step
        {
            return Err(refused(format!(
                "it approves {}/{} run {} step {}, signed by {} of {}; expected run {run} step {step}",
                approval.network,
                approval.organisation,
                approval.run,
                approval.step,
                key.key_id,
                key.organisation
            )));
        }
        let missing: Vec<String> = state
            .runbook
            .steps
            .iter()
            .filter(|def| def.id == step)
            .flat_map(|def| def.nodes().iter().map(|n| n.id.clone()))
            .filter(|node| !approval.nodes.contains(node))
            .collect();
        if !missing.is_empty() {
            return Err(refused(format!(
                "it does not name {} of step {step}",
                missing.join(", ")
            )));
        }
        Ok(approval)
    }

    async fn change(&self, run: &str, event: Event) -> Result<RunRecord, Status> {
        let mut driver = self.shared.driver.lock().await;
        driver
            .apply(run, vec![Input::Event(event)])
            .await
            .map_err(|error| self.failed(error))
    }

    /// The status for a driver error; a failpoint stops the whole coordinator.
    fn failed(&self, error: DriverError) -> Status {
        if error.kind == DriverErrorKind::Crashed {
            self.shared.crash(&error.detail);
        }
        status_of(error)
    }

    async fn summary_with_results(&self, record: &RunRecord) -> pb::RunSummary {
        let mut summary = summary(record);
        let results = self.shared.network.kv(Bucket::Runs);
        for step in &mut summary.steps {
            for node in &mut step.nodes {
                if node.status == i32::from(pb::AckStatus::Done)
                    && let Ok(Some(value)) = results
                        .get(&result_key(record.run_id(), &step.step, &node.node))
                        .await
                {
                    node.result = value.value.to_vec();
                }
            }
        }
        summary
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::RunEvent, Status>> + Send>>;

#[tonic::async_trait]
impl CoordinatorService for Api {
    async fn start_run(
        &self,
        request: Request<pb::StartRunRequest>,
    ) -> Result<Response<pb::StartRunResponse>, Status> {
        require(&request, Role::Operator)?;
        let request = request.into_inner();
        let request_id = if request.request_id.is_empty() {
            uuid::Uuid::now_v7().to_string()
        } else {
            request.request_id.clone()
        };
        let run_id = catalogue::run_id(&request.runbook, &self.shared.organisation, &request_id);
        let params = self
            .agreed_parameters(&request.runbook, parameters(&request.parameters))
            .await?;
        let built = self
            .build(&request.runbook, &request.nodes, &params, &run_id)
            .await?;
        let started = {
            let mut driver = self.shared.driver.lock().await;
            driver
                .start(StartRequest {
                    run_id: run_id.clone(),
                    request_id: request_id.clone(),
                    runbook: built.runbook,
                    parameters: params.clone(),
                    nodes: built.nodes.clone(),
                    claims_nodes: built.claims_nodes,
                })
                .await
        };
        let outcome = match &started {
            Ok((_, true)) => "existing".to_owned(),
            Ok((_, false)) => "started".to_owned(),
            Err(error) => format!("refused: {error}"),
        };
        self.shared
            .audit(
                "start_run",
                serde_json::json!({"run": run_id, "runbook": request.runbook, "request_id": request_id,
                    "nodes": built.nodes, "parameters": params, "outcome": outcome}),
            )
            .await;
        let (record, existing) = started.map_err(|error| self.failed(error))?;
        Ok(Response::new(pb::StartRunResponse {
            run: Some(summary(&record)),
            existing,
        }))
    }

    async fn plan(
        &self,
        request: Request<pb::PlanRequest>,
    ) -> Result<Response<pb::PlanResponse>, Status> {
        require(&request, Role::ReadOnly)?;
        let request = request.into_inner();
        let params = self
            .agreed_parameters(&request.runbook, parameters(&request.parameters))
            .await?;
        let built = self
            .build(&request.runbook, &request.nodes, &params, "planned")
            .await?;
        let steps = sidecar_core::plan(&built.runbook)
            .into_iter()
            .map(|step| pb::PlannedStep {
                description: step.to_string().trim_end().to_owned(),
                step: step.step,
                kind: step.kind.to_owned(),
                action: step.action.unwrap_or_default().to_owned(),
                nodes: step.nodes,
                fix_forward: step.fix_forward,
                needs_approval: step.needs_approval,
                timeout_ms: u64::try_from(step.timeout_ms).unwrap_or(0),
                idempotency: match step.idempotency {
                    Some(sidecar_core::Idempotency::Natural) => "idempotent",
                    Some(sidecar_core::Idempotency::Guarded) => "guarded",
                    Some(sidecar_core::Idempotency::Unguardable) => "unguardable",
                    None => "",
                }
                .to_owned(),
                compensated_by: step.compensated_by.unwrap_or_default().to_owned(),
                max_attempts: step.max_attempts,
            })
            .collect();
        Ok(Response::new(pb::PlanResponse {
            runbook: request.runbook,
            steps,
            warnings: built.warnings,
        }))
    }

    async fn get_run(
        &self,
        request: Request<pb::GetRunRequest>,
    ) -> Result<Response<pb::GetRunResponse>, Status> {
        require(&request, Role::ReadOnly)?;
        let record = self.record(&request.get_ref().run_id).await?;
        Ok(Response::new(pb::GetRunResponse {
            run: Some(self.summary_with_results(&record).await),
        }))
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Result<Response<pb::ListRunsResponse>, Status> {
        require(&request, Role::ReadOnly)?;
        let request = request.into_inner();
        let keys = self
            .store
            .run_keys()
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let mut runs = Vec::new();
        for key in keys {
            let Ok(Some(stored)) = self.store.load(&key).await else {
                continue;
            };
            let Ok(record) = RunRecord::decode(&stored.value) else {
                continue;
            };
            if record.organisation != self.shared.organisation {
                continue;
            }
            let summary = summary(&record);
            if request.statuses.is_empty() || request.statuses.contains(&summary.status) {
                runs.push(summary);
            }
        }
        runs.sort_by_key(|run| std::cmp::Reverse(run.started_at_unix_ms));
        if request.limit > 0 {
            runs.truncate(request.limit as usize);
        }
        Ok(Response::new(pb::ListRunsResponse { runs }))
    }

    type WatchRunStream = EventStream;

    async fn watch_run(
        &self,
        request: Request<pb::WatchRunRequest>,
    ) -> Result<Response<Self::WatchRunStream>, Status> {
        require(&request, Role::ReadOnly)?;
        let request = request.into_inner();
        let run = request.run_id.clone();
        let store = self.shared.network.kv(Bucket::Runs).store().clone();
        let first = store
            .entry(run_key(&run))
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?
            .ok_or_else(|| Status::not_found(format!("no run {run:?}")))?;
        let mut previous = RunRecord::decode(&first.value)
            .map_err(|e| Status::internal(format!("run {run} does not decode: {e}")))?;
        let mut watch = store
            .watch_from_revision(run_key(&run), first.revision + 1)
            .await
            .map_err(|e| Status::unavailable(e.to_string()))?;
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        let after = request.after_seq;
        tokio::spawn(async move {
            let send = |event: pb::RunEvent| {
                let tx = tx.clone();
                async move {
                    if event.seq > after {
                        tx.send(Ok(event)).await.is_ok()
                    } else {
                        true
                    }
                }
            };
            let snapshot = pb::RunEvent {
                run_id: run.clone(),
                seq: first.revision * 1000,
                at_unix_ms: previous.updated_at,
                kind: pb::RunEventKind::Snapshot.into(),
                run_status: run_status(previous.state.status).into(),
                run: Some(summary(&previous)),
                ..Default::default()
            };
            if !send(snapshot).await {
                return;
            }
            if previous.state.status.is_finished() {
                let _ = send(finished_event(&previous, first.revision * 1000 + 1)).await;
                return;
            }
            let mut seen = first.revision;
            let mut reread = tokio::time::interval(WATCH_REREAD);
            reread.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut watching = true;
            loop {
                let entry = tokio::select! {
                    next = watch.next(), if watching => match next {
                        Some(Ok(entry)) => Some(entry),
                        _ => {
                            watching = false;
                            None
                        }
                    },
                    _ = reread.tick() => store.entry(run_key(&run)).await.ok().flatten(),
                    () = tx.closed() => return,
                };
                let Some(entry) = entry.filter(|entry| entry.revision > seen) else {
                    continue;
                };
                let Ok(next) = RunRecord::decode(&entry.value) else {
                    continue;
                };
                seen = entry.revision;
                for event in diff(&previous, &next, entry.revision) {
                    if !send(event).await {
                        return;
                    }
                }
                if next.state.status.is_finished() {
                    return;
                }
                previous = next;
            }
        });
        Ok(Response::new(Box::pin(
            tokio_stream::wrappers::ReceiverStream::new(rx),
        )))
    }

    async fn approve(
        &self,
        request: Request<pb::ApproveRequest>,
    ) -> Result<Response<pb::ApproveResponse>, Status> {
        require(&request, Role::Operator)?;
        let request = request.into_inner();
        let record = self.record(&request.run_id).await?;
        let state = &record.state;
        let current = state.runbook.steps.get(state.current);
        let waiting = state
            .steps
            .get(state.current)
            .is_some_and(|s| s.status == StepStatus::AwaitingApproval);
        let Some(def) = current.filter(|def| waiting && def.id == request.step) else {
            return Err(Status::failed_precondition(format!(
                "run {} is not waiting for an approval of step {:?}",
                request.run_id, request.step
            )));
        };
        let missing: Vec<&str> = def
            .nodes()
            .iter()
            .map(|n| n.id.as_str())
            .filter(|id| !request.nodes.iter().any(|named| named == id))
            .collect();
        if !missing.is_empty() {
            return Err(Status::invalid_argument(format!(
                "the approval of step {} must name every affected node; missing {}",
                request.step,
                missing.join(", ")
            )));
        }
        let mut inputs = Vec::new();
        for gated in destructive_steps_gated_by(state, &request.step) {
            let Some(signed) = &request.signed_approval else {
                return Err(Status::failed_precondition(format!(
                    "step {gated} of run {} is destructive ({}); agents run it only with an \
                     operator's signed approval: approve with --operator-key <seed> --key-id <id>",
                    request.run_id,
                    step_action(state, &gated)
                )));
            };
            let approval = self.verified_approval(signed, &request.run_id, &gated, state)?;
            inputs.push(Input::SignedApproval {
                step: approval.step,
                envelope: prost::Message::encode_to_vec(signed),
            });
        }
        inputs.push(Input::Event(Event::Approval {
            step: request.step.clone(),
            nodes: request.nodes.clone(),
        }));
        let changed = {
            let mut driver = self.shared.driver.lock().await;
            driver
                .apply(&request.run_id, inputs)
                .await
                .map_err(|error| self.failed(error))
        };
        self.shared
            .audit(
                "approve",
                serde_json::json!({"run": request.run_id, "step": request.step, "nodes": request.nodes,
                    "comment": request.comment, "ok": changed.is_ok()}),
            )
            .await;
        Ok(Response::new(pb::ApproveResponse {
            run: Some(summary(&changed?)),
        }))
    }

    async fn cancel(
        &self,
        request: Request<pb::CancelRequest>,
    ) -> Result<Response<pb::CancelResponse>, Status> {
        require(&request, Role::Operator)?;
        let request = request.into_inner();
        let record = self.record(&request.run_id).await?;
        if record.state.status.is_finished() {
            return Err(Status::failed_precondition(format!(
                "run {} already finished ({:?})",
                request.run_id, record.state.status
            )));
        }
        let reason = if request.reason.is_empty() {
            "cancelled by an operator".to_owned()
        } else {
            request.reason.clone()
        };
        let changed = self
            .change(
                &request.run_id,
                Event::Cancel {
                    reason: reason.clone(),
                },
            )
            .await;
        self.shared
            .audit(
                "cancel",
                serde_json::json!({"run": request.run_id, "reason": reason, "ok": changed.is_ok()}),
            )
            .await;
        Ok(Response::new(pb::CancelResponse {
            run: Some(summary(&changed?)),
        }))
    }

    async fn resume(
        &self,
        request: Request<pb::ResumeRequest>,
    ) -> Result<Response<pb::ResumeResponse>, Status> {
        require(&request, Role::Operator)?;
        let request = request.into_inner();
        let decision = match pb::Decision::try_from(request.decision) {
            Ok(pb::Decision::MarkDone) => Decision::MarkDone,
            Ok(pb::Decision::Retry) => Decision::Retry,
            Ok(pb::Decision::Abort) => Decision::Abort,
            _ => {
                return Err(Status::invalid_argument(
                    "decision must be mark-done, retry or abort",
                ));
            }
        };
        let record = self.record(&request.run_id).await?;
        let awaiting = record
            .state
            .steps
            .iter()
            .find(|s| s.id == request.step)
            .and_then(|s| s.nodes.get(&request.node))
            .is_some_and(|n| n.status == NodeStatus::AwaitingDecision);
        if !awaiting {
            return Err(Status::failed_precondition(format!(
                "node {} of step {:?} in run {} is not waiting for a decision",
                request.node, request.step, request.run_id
            )));
        }
        let changed = self
            .change(
                &request.run_id,
                Event::Decision {
                    step: request.step.clone(),
                    node: request.node.clone(),
                    decision,
                },
            )
            .await;
        self.shared
            .audit(
                "resume",
                serde_json::json!({"run": request.run_id, "step": request.step, "node": request.node,
                    "decision": format!("{decision:?}"), "comment": request.comment, "ok": changed.is_ok()}),
            )
            .await;
        Ok(Response::new(pb::ResumeResponse {
            run: Some(summary(&changed?)),
        }))
    }

    async fn list_nodes(
        &self,
        request: Request<pb::ListNodesRequest>,
    ) -> Result<Response<pb::ListNodesResponse>, Status> {
        require(&request, Role::ReadOnly)?;
        let suspended = self.shared.registry.suspended();
        // One view of the registry, indexed: a view per listed node costs O(N²) at 10,000 nodes.
        let mut views: std::collections::HashMap<sidecar_bus::NodeId, _> = self
            .shared
            .registry
            .view()
            .into_iter()
            .flat_map(|logical| logical.replicas)
            .map(|replica| (replica.node.clone(), replica))
            .collect();
        let mut nodes = Vec::new();
        for state in self.shared.node_states().await.map_err(unavailable)? {
            let id = crate::catalogue::state_node_id(&state);
            let view = sidecar_bus::NodeId::new(id)
                .ok()
                .and_then(|id| views.remove(&id));
            let (health, age, seq) = match &view {
                Some(view) => (
                    view.health,
                    view.heartbeat_age
                        .map(|a| u64::try_from(a.as_millis()).unwrap_or(u64::MAX)),
                    view.last.as_ref().map(|hb| hb.seq),
                ),
                None => (Health::Unknown, None, None),
            };
            nodes.push(pb::NodeView {
                state: Some(state),
                health: match health {
                    Health::Unknown => pb::NodeHealth::Unknown,
                    Health::Alive => pb::NodeHealth::Alive,
                    Health::Suspect => pb::NodeHealth::Suspect,
                    Health::Down => pb::NodeHealth::Down,
                }
                .into(),
                heartbeat_age_ms: age.unwrap_or(0),
                last_seq: seq.unwrap_or(0),
                verdict_suspended: suspended,
            });
        }
        nodes.sort_by(|a, b| {
            let key = |v: &pb::NodeView| {
                v.state
                    .as_ref()
                    .map(|s| (s.node.clone(), s.replica.clone()))
            };
            key(a).cmp(&key(b))
        });
        Ok(Response::new(pb::ListNodesResponse { nodes }))
    }

    async fn get_dr_timestamp(
        &self,
        request: Request<pb::GetDrTimestampRequest>,
    ) -> Result<Response<pb::GetDrTimestampResponse>, Status> {
        require(&request, Role::ReadOnly)?;
        let run = request.into_inner().run_id;
        let record = self.dr_record(&run).await?;
        let Some(proposal) = record.proposal else {
            return Err(Status::failed_precondition(
                record
                    .error
                    .unwrap_or_else(|| "no recovery timestamp".to_owned()),
            ));
        };
        Ok(Response::new(dr_response(
            &run,
            &record.organisation,
            record.recorded_at_unix_ms,
            proposal,
        )))
    }

    async fn propose_dr_timestamp(
        &self,
        request: Request<pb::ProposeDrTimestampRequest>,
    ) -> Result<Response<pb::ProposalView>, Status> {
        require(&request, Role::Operator)?;
        let run = request.into_inner().run_id;
        let record = self.dr_record(&run).await?;
        let Some(proposal) = record.proposal.as_ref() else {
            return Err(Status::failed_precondition(format!(
                "run {run} gave no recovery timestamp to propose: {}",
                record.error.as_deref().unwrap_or("no quorum")
            )));
        };
        let document = proposals::dr_timestamp_document(
            self.shared.config.network.as_str(),
            &self.shared.organisation,
            &self.shared.organisations,
            &record,
            proposal,
        );
        let outcome = proposals::propose(&self.shared, document).await;
        self.audit_proposal("propose", &run, &outcome).await;
        Ok(Response::new(proposals::view(
            &outcome.map_err(proposal_status)?,
        )))
    }

    async fn list_proposals(
        &self,
        request: Request<pb::ListProposalsRequest>,
    ) -> Result<Response<pb::ListProposalsResponse>, Status> {
        require(&request, Role::ReadOnly)?;
        let books = proposals::books(&self.shared)
            .await
            .map_err(proposal_status)?;
        Ok(Response::new(pb::ListProposalsResponse {
            proposals: books.iter().map(proposals::view).collect(),
        }))
    }

    async fn answer_proposal(
        &self,
        request: Request<pb::AnswerProposalRequest>,
    ) -> Result<Response<pb::ProposalView>, Status> {
        require(&request, Role::Operator)?;
        let request = request.into_inner();
        let books = proposals::books(&self.shared)
            .await
            .map_err(proposal_status)?;
        let book = proposals::find(&books, &request.proposal_hash).map_err(proposal_status)?;
        let outcome = proposals::answer(&self.shared, book, request.accept, &request.reason).await;
        let call = if request.accept { "accept" } else { "abort" };
        self.audit_proposal(call, &hex::encode(book.hash()), &outcome)
            .await;
        Ok(Response::new(proposals::view(
            &outcome.map_err(proposal_status)?,
        )))
    }

    async fn propose_joint_run(
        &self,
        request: Request<pb::ProposeJointRunRequest>,
    ) -> Result<Response<pb::ProposalView>, Status> {
        require(&request, Role::Operator)?;
        let request = request.into_inner();
        if request.request_id.trim().is_empty() {
            return Err(Status::invalid_argument(
                "a joint run needs a request id (--request-id): it names the proposal for every organisation",
            ));
        }
        let parameters: BTreeMap<String, String> = request.parameters.into_iter().collect();
        let document = proposals::joint_document(
            self.shared.config.network.as_str(),
            &self.shared.organisation,
            &self.shared.organisations,
            &request.runbook,
            &parameters,
            &request.request_id,
            crate::driver::ports::Clock::now_ms(&crate::driver::ports::SystemClock),
        )
        .map_err(proposal_status)?;
        let outcome = proposals::propose_joint(&self.shared, document).await;
        self.audit_proposal("propose_joint", &request.request_id, &outcome)
            .await;
        Ok(Response::new(proposals::view(
            &outcome.map_err(proposal_status)?,
        )))
    }
}

impl Api {
    /// Appends a proposal call and its outcome to the audit stream.
    async fn audit_proposal(
        &self,
        call: &str,
        subject: &str,
        outcome: &Result<sidecar_trust::ProposalBook, proposals::ProposalsError>,
    ) {
        let outcome = match outcome {
            Ok(book) => serde_json::json!({
                "hash": hex::encode(book.hash()),
                "missing": book.missing_accepts(),
                "aborted": book.aborted().map(|(by, _)| by.to_owned()),
            }),
            Err(error) => serde_json::json!({"refused": error.to_string()}),
        };
        self.shared
            .audit(
                &format!("proposal_{call}"),
                serde_json::json!({"organisation": self.shared.organisation, "subject": subject,
                    "outcome": outcome}),
            )
            .await;
    }
}

fn proposal_status(error: proposals::ProposalsError) -> Status {
    match error {
        proposals::ProposalsError::Unavailable(detail) => Status::unavailable(detail),
        proposals::ProposalsError::NotFound(detail) => Status::not_found(detail),
        proposals::ProposalsError::Refused(detail) => Status::failed_precondition(detail),
    }
}

fn dr_response(
    run: &str,
    organisation: &str,
    recorded_at_unix_ms: i64,
    proposal: sidecar_core::dr_timestamp::Proposal,
) -> pb::GetDrTimestampResponse {
    pb::GetDrTimestampResponse {
        run_id: run.to_owned(),
        timestamp_micros: proposal.timestamp_micros,
        agreed_period_end_micros: proposal.agreed_period_end_micros,
        margin_micros: proposal.margin_micros,
        quorum: proposal.quorum.to_string(),
        required: u32::try_from(proposal.required).unwrap_or(u32::MAX),
        listed: proposal.listed,
        agreeing: proposal.agreeing,
        outside: proposal
            .outside
            .into_iter()
            .map(|o| pb::DrOutsider {
                node: o.node,
                last_agreed_with_quorum_micros: o.last_agreed_with_quorum_micros.unwrap_or(0),
            })
            .collect(),
        missing: proposal
            .missing
            .into_iter()
            .map(|m| pb::DrMissing {
                node: m.node,
                reason: m.reason,
            })
            .collect(),
        evidence: proposal
            .evidence
            .into_iter()
            .map(|row| pb::CommitmentAgreement {
                node: row.node,
                counter: row.counter,
                last_agreed_micros: row.last_agreed_micros.unwrap_or(0),
                mismatch_from_micros: row.mismatch_from_micros.unwrap_or(0),
            })
            .collect(),
        recorded_at_unix_ms,
        organisation: organisation.to_owned(),
    }
}

pub fn run_status(status: RunStatus) -> pb::RunStatus {
    match status {
        RunStatus::Pending => pb::RunStatus::Pending,
        RunStatus::Running | RunStatus::Settling | RunStatus::Compensating => {
            pb::RunStatus::Running
        }
        RunStatus::AwaitingApproval => pb::RunStatus::AwaitingApproval,
        RunStatus::AwaitingDecision => pb::RunStatus::AwaitingDecision,
        RunStatus::Succeeded => pb::RunStatus::Succeeded,
        RunStatus::Failed => pb::RunStatus::Failed,
        RunStatus::Cancelled => pb::RunStatus::Cancelled,
        RunStatus::Compensated => pb::RunStatus::Compensated,
    }
}

fn step_status(step: &sidecar_core::StepState) -> pb::StepStatus {
    if step
        .nodes
        .values()
        .any(|n| n.status == NodeStatus::AwaitingDecision)
    {
        return pb::StepStatus::AwaitingDecision;
    }
    match step.status {
        StepStatus::Pending => pb::StepStatus::Pending,
        StepStatus::Running => pb::StepStatus::Running,
        StepStatus::AwaitingApproval => pb::StepStatus::AwaitingApproval,
        StepStatus::Done => pb::StepStatus::Done,
        StepStatus::Failed => pb::StepStatus::Failed,
        StepStatus::Compensated => pb::StepStatus::Compensated,
    }
}

fn node_result(record: &RunRecord, run: &NodeRun) -> pb::NodeResult {
    let (status, detail) = match &run.status {
        NodeStatus::Sent => (pb::AckStatus::Unspecified, "sent, no answer yet".to_owned()),
        NodeStatus::Accepted => (pb::AckStatus::Accepted, String::new()),
        NodeStatus::Done { .. } => (pb::AckStatus::Done, String::new()),
        NodeStatus::Failed { reason } => (pb::AckStatus::Failed, reason.clone()),
        NodeStatus::Rejected { reason } => (pb::AckStatus::Rejected, reason.clone()),
        NodeStatus::OutcomeUnknown => (pb::AckStatus::OutcomeUnknown, String::new()),
        NodeStatus::TimedOut => (
            pb::AckStatus::Unspecified,
            "no final answer before the deadline".to_owned(),
        ),
        NodeStatus::RetryAt { at } => (pb::AckStatus::Failed, format!("retry due at {at}")),
        NodeStatus::AwaitingDecision => (
            pb::AckStatus::OutcomeUnknown,
            "waiting for an operator decision (canton-ops resume)".to_owned(),
        ),
        NodeStatus::Abandoned => (pb::AckStatus::Failed, "abandoned".to_owned()),
    };
    let answer = record
        .answers
        .get(&run.command_id)
        .cloned()
        .unwrap_or_default();
    let detail = match (detail.is_empty(), answer.is_empty()) {
        (_, true) => detail,
        (true, false) => answer,
        (false, false) if detail.contains(&answer) => detail,
        (false, false) => format!("{detail}: {answer}"),
    };
    pb::NodeResult {
        node: run.node.id.clone(),
        command_id: run.command_id.clone(),
        attempt: run.attempt,
        status: status.into(),
        reject_reason: 0,
        detail,
        result: Vec::new(),
        result_hash: match &run.status {
            NodeStatus::Done { result_hash } => result_hash.clone(),
            _ => Vec::new(),
        },
        progress: record.progress.get(&run.command_id).map(|p| pb::Progress {
            done: p.done,
            total: p.total,
            ..Default::default()
        }),
    }
}

/// The API view of a run record.
pub fn summary(record: &RunRecord) -> pb::RunSummary {
    let state = &record.state;
    let steps = state
        .steps
        .iter()
        .zip(&state.runbook.steps)
        .map(|(step, def)| {
            let mut nodes: Vec<pb::NodeResult> = step
                .nodes
                .values()
                .map(|run| node_result(record, run))
                .collect();
            nodes.extend(
                step.compensations
                    .values()
                    .map(|run| node_result(record, run)),
            );
            let detail = match &def.kind {
                StepKind::Approval { prompt, .. }
                    if step.status == StepStatus::AwaitingApproval =>
                {
                    format!(
                        "approve with: canton-ops approve {} {} --nodes {}; {prompt}",
                        record.run_id(),
                        def.id,
                        def.nodes()
                            .iter()
                            .map(|n| n.id.as_str())
                            .collect::<Vec<_>>()
                            .join(",")
                    )
                }
                _ => String::new(),
            };
            pb::StepSummary {
                step: step.id.clone(),
                status: step_status(step).into(),
                nodes,
                started_at_unix_ms: step.started_at.unwrap_or(0),
                finished_at_unix_ms: step.finished_at.unwrap_or(0),
                detail,
            }
        })
        .collect();
    pb::RunSummary {
        run_id: record.run_id().to_owned(),
        runbook: state.runbook.name.clone(),
        status: run_status(state.status).into(),
        organisation: record.organisation.clone(),
        current_step: state
            .runbook
            .steps
            .get(state.current)
            .map(|s| s.id.clone())
            .unwrap_or_default(),
        steps,
        started_at_unix_ms: record.created_at,
        updated_at_unix_ms: record.updated_at,
        finished_at_unix_ms: record.finished_at.unwrap_or(0),
        owner_epoch: state.owner_epoch,
        detail: state.detail.clone(),
        parameters: record
            .parameters
            .iter()
            .map(|(k, v)| pb::Parameter {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        nodes: record.nodes.clone(),
    }
}

fn finished_event(record: &RunRecord, seq: u64) -> pb::RunEvent {
    pb::RunEvent {
        run_id: record.run_id().to_owned(),
        seq,
        at_unix_ms: record.updated_at,
        kind: pb::RunEventKind::RunFinished.into(),
        run_status: run_status(record.state.status).into(),
        run: Some(summary(record)),
        message: record.state.detail.clone(),
        ..Default::default()
    }
}

/// The events between two successive records (seq = revision × 1000 + index).
pub fn diff(previous: &RunRecord, next: &RunRecord, revision: u64) -> Vec<pb::RunEvent> {
    let mut events = Vec::new();
    let base = pb::RunEvent {
        run_id: next.run_id().to_owned(),
        at_unix_ms: next.updated_at,
        run_status: run_status(next.state.status).into(),
        ..Default::default()
    };
    for (index, step) in next.state.steps.iter().enumerate() {
        let before = previous.state.steps.get(index);
        let status = step_status(step);
        let before_status = before.map(step_status);
        if before_status != Some(status) {
            let kind = match status {
                pb::StepStatus::Running => Some(pb::RunEventKind::StepStarted),
                pb::StepStatus::AwaitingApproval => Some(pb::RunEventKind::ApprovalRequired),
                pb::StepStatus::AwaitingDecision => Some(pb::RunEventKind::DecisionRequired),
                pb::StepStatus::Done | pb::StepStatus::Failed | pb::StepStatus::Compensated => {
                    Some(pb::RunEventKind::StepFinished)
                }
                _ => None,
            };
            if let Some(kind) = kind {
                events.push(pb::RunEvent {
                    kind: kind.into(),
                    step: step.id.clone(),
                    step_status: status.into(),
                    ..base.clone()
                });
            }
        }
        for (node, run) in step.nodes.iter().chain(step.compensations.iter()) {
            let earlier = before.and_then(|b| {
                b.nodes
                    .get(node)
                    .filter(|r| r.command_id == run.command_id)
                    .or_else(|| {
                        b.compensations
                            .get(node)
                            .filter(|r| r.command_id == run.command_id)
                    })
            });
            let changed =
                earlier.is_none_or(|e| e.status != run.status || e.attempt != run.attempt);
            let progress_changed =
                previous.progress.get(&run.command_id) != next.progress.get(&run.command_id);
            if changed && run.status.is_settled() {
                events.push(pb::RunEvent {
                    kind: pb::RunEventKind::NodeFinished.into(),
                    step: step.id.clone(),
                    node: node.clone(),
                    node_result: Some(node_result(next, run)),
                    ..base.clone()
                });
            } else if progress_changed || (changed && earlier.is_some()) {
                events.push(pb::RunEvent {
                    kind: pb::RunEventKind::NodeProgress.into(),
                    step: step.id.clone(),
                    node: node.clone(),
                    node_result: Some(node_result(next, run)),
                    ..base.clone()
                });
            }
        }
    }
    if next.state.status.is_finished() {
        events.push(finished_event(next, 0));
    }
    for (index, event) in events.iter_mut().enumerate() {
        event.seq = revision * 1000 + index as u64;
    }
    events
}

/// The destructive action steps an approval step gates: those after it, up to the next
/// approval step.
pub fn destructive_steps_gated_by(
    state: &sidecar_core::RunState,
    approval_step: &str,
) -> Vec<String> {
    state
        .runbook
        .steps
        .iter()
        .skip_while(|def| def.id != approval_step)
        .skip(1)
        .take_while(|def| !matches!(def.kind, StepKind::Approval { .. }))
        .filter(|def| {
            def.sent_action()
                .and_then(|action| sidecar_trust::ActionName::parse(action.kind.name()))
                .is_some_and(sidecar_trust::ActionName::destructive_by_default)
                && !def.nodes().is_empty()
        })
        .map(|def| def.id.clone())
        .collect()
}

fn step_action(state: &sidecar_core::RunState, step: &str) -> &'static str {
    state
        .runbook
        .steps
        .iter()
        .find(|def| def.id == step)
        .and_then(|def| def.sent_action())
        .map_or("", |action| action.kind.name())
}

/// A read the cluster cannot answer now: the caller may try again.
fn unavailable(error: crate::service::NodeStatesUnreadable) -> Status {
    Status::unavailable(error.to_string())
}

#[cfg(test)]
mod tests {
    use sidecar_core::{NodeKind, NodeRef, runbooks, start_run};

    use super::destructive_steps_gated_by;

    #[test]
    fn the_restore_approval_gates_the_restore_step_only() {
        let nodes = [
            NodeRef::new("p1", NodeKind::Participant),
            NodeRef::new("s1", NodeKind::Sequencer),
        ];
        let state = start_run("r1", runbooks::restore("bs1", &nodes), 1, 1_000);
        assert_eq!(destructive_steps_gated_by(&state, "approve"), ["restore"]);
        assert!(destructive_steps_gated_by(&state, "nowhere").is_empty());
        let backup = start_run("r2", runbooks::backup("bs1", &nodes), 1, 1_000);
        assert!(destructive_steps_gated_by(&backup, "apps").is_empty());
    }
}
