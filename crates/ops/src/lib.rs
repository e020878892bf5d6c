//! canton-ops: the operator CLI over the coordinator API.

pub mod generate;
pub mod keys;
mod render;

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};
use futures::StreamExt;
use proto_sidecar as pb;
use proto_sidecar::coordinator_service_client::CoordinatorServiceClient;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, ClientTlsConfig, Endpoint};

/// Stable exit codes (also listed in `--help`).
pub mod exit {
    /// The command worked; for `run --wait` and `watch`: the run succeeded.
    pub const OK: u8 = 0;
    /// Anything unexpected (a bug, an I/O error).
    pub const INTERNAL: u8 = 1;
    /// Bad command-line usage (from clap).
    pub const USAGE: u8 = 2;
    /// The coordinator cannot be reached, or is not the leader right now.
    pub const UNAVAILABLE: u8 = 3;
    /// The coordinator refused the request (unknown run or node, bad parameter, conflict).
    pub const REFUSED: u8 = 4;
    /// The token is missing, unknown, or lacks the operator role.
    pub const AUTH: u8 = 5;
    /// The run failed.
    pub const RUN_FAILED: u8 = 10;
    /// The run was cancelled.
    pub const RUN_CANCELLED: u8 = 11;
    /// The run failed and its completed steps were compensated.
    pub const RUN_COMPENSATED: u8 = 12;
}

const EXIT_CODES: &str = "Exit codes: 0 ok (run succeeded); 1 internal error; 2 usage; \
3 coordinator unavailable or not leader; 4 request refused (unknown run/node, bad parameter, \
claimed node); 5 authentication/role; 10 run failed; 11 run cancelled; 12 run compensated.";

#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("{0}")]
    Unavailable(String),
    #[error("{0}")]
    Refused(String),
    #[error("{0}")]
    Auth(String),
    #[error("{0}")]
    Usage(String),
    #[error("{0}")]
    Internal(String),
}

impl OpsError {
    pub fn exit_code(&self) -> u8 {
        match self {
            Self::Unavailable(_) => exit::UNAVAILABLE,
            Self::Refused(_) => exit::REFUSED,
            Self::Auth(_) => exit::AUTH,
            Self::Usage(_) => exit::USAGE,
            Self::Internal(_) => exit::INTERNAL,
        }
    }
}

impl From<tonic::Status> for OpsError {
    fn from(status: tonic::Status) -> Self {
        use tonic::Code;
        let message = format!("coordinator: {}", status.message());
        // A status the client made from a failed connection (not one the server sent) carries
        // its cause; the usual one is a scheme that does not match the server's. Plain HTTP/2
        // against a TLS listener fails either in the transport (Unknown) or as an HTTP/2
        // protocol error (Internal), depending on how far the handshake got.
        if matches!(status.code(), Code::Unknown | Code::Internal)
            && let Some(cause) = std::error::Error::source(&status)
        {
            return Self::Unavailable(format!(
                "{message} ({}); if the coordinator serves TLS use https:// and --ca-file, if not \
                 http://",
                causes(cause)
            ));
        }
        match status.code() {
            Code::Unauthenticated | Code::PermissionDenied => Self::Auth(message),
            Code::Unavailable | Code::DeadlineExceeded => Self::Unavailable(message),
            Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::AlreadyExists
            | Code::Aborted => Self::Refused(message),
            _ => Self::Internal(message),
        }
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Output {
    /// Lines for people (progress bars on a terminal).
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// canton-ops: start, watch and steer runbooks on the canton-coordinator.
#[derive(Parser, Debug)]
#[command(version, after_help = EXIT_CODES)]
pub struct Cli {
    /// The coordinator API (http:// or https://).
    #[arg(
        long,
        env = "CANTON_OPS_COORDINATOR",
        default_value = "http://127.0.0.1:7443",
        global = true
    )]
    pub coordinator: String,
    /// Bearer token (operator or read-only).
    #[arg(long, env = "CANTON_OPS_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,
    /// A file holding the bearer token.
    #[arg(long, env = "CANTON_OPS_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,
    /// PEM CA certificate for an https:// coordinator.
    #[arg(long, env = "CANTON_OPS_CA_FILE", global = true)]
    pub ca_file: Option<PathBuf>,
    #[arg(long, value_enum, default_value_t, global = true)]
    pub output: Output,
    /// Log line format on stderr.
    #[arg(long, value_enum, default_value_t, global = true)]
    pub log_format: sidecar_telemetry::LogFormat,
    #[command(subcommand)]
    pub command: Command,
}

/// An operator's signature over an approval, which agents require before destructive
/// actions (restore, ACS import, repairs). The approval is for one destructive step of the
/// run (`--for-step`) and names every node it affects.
#[derive(clap::Args, Debug)]
pub struct ApprovalSignature {
    /// The operator's ed25519 seed file (hex, as `keys gen` writes it, or 32 raw bytes).
    #[arg(long, requires_all = ["key_id", "for_step", "network", "organisation"])]
    pub operator_key: Option<PathBuf>,
    /// The operator key's id in the network configuration.
    #[arg(long)]
    pub key_id: Option<String>,
    /// The destructive step the approval lets agents run (the coordinator's refusal names it).
    #[arg(long)]
    pub for_step: Option<String>,
    #[arg(long, env = "CANTON_OPS_NETWORK")]
    pub network: Option<String>,
    #[arg(long, env = "CANTON_OPS_ORGANISATION")]
    pub organisation: Option<String>,
    /// How long agents accept the approval.
    #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
    pub valid_for: std::time::Duration,
}

impl ApprovalSignature {
    /// The signed `OperatorApproval`, when an operator key was given.
    fn sign(
        &self,
        run: &str,
        nodes: &[String],
        comment: &str,
    ) -> Result<Option<pb::SignedEnvelope>, OpsError> {
        let (Some(path), Some(key_id), Some(step), Some(network), Some(organisation)) = (
            &self.operator_key,
            &self.key_id,
            &self.for_step,
            &self.network,
            &self.organisation,
        ) else {
            return Ok(None);
        };
        let stored = std::fs::read(path)
            .map_err(|e| OpsError::Usage(format!("--operator-key {}: {e}", path.display())))?;
        let seed = sidecar_trust::parse_seed(&stored).ok_or_else(|| {
            OpsError::Usage(format!(
                "--operator-key {}: not an ed25519 seed (64 hex digits or 32 raw bytes)",
                path.display()
            ))
        })?;
        let operator = sidecar_trust::SigningIdentity::from_seed(
            key_id.as_str(),
            sidecar_trust::KeyPurpose::Operator,
            organisation.as_str(),
            seed,
        );
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        let valid_for = i64::try_from(self.valid_for.as_millis()).unwrap_or(i64::MAX);
        let approval = pb::OperatorApproval {
            network: network.clone(),
            organisation: organisation.clone(),
            run: run.to_owned(),
            step: step.clone(),
            nodes: nodes.to_vec(),
            operator: key_id.clone(),
            approved_at_unix_ms: now,
            expires_at_unix_ms: now.saturating_add(valid_for),
            comment: comment.to_owned(),
        };
        Ok(Some(sidecar_trust::sign_approval(&operator, &approval)))
    }
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// The organisation's nodes with their health.
    Nodes,
    /// The steps a run would take, without starting it.
    Plan(Target),
    /// Starts a runbook.
    Run {
        #[command(flatten)]
        target: Target,
        /// Idempotency key: repeating it returns the same run (default: a fresh id).
        #[arg(long)]
        request_id: Option<String>,
        /// Follow the run until it finishes; the exit code tells how it ended.
        #[arg(long)]
        wait: bool,
    },
    /// Follows a run until it finishes.
    Watch { run: String },
    /// One run with every step, each node's outcome and the result its agent returned (a
    /// backup manifest, a rehydration's stop point, commitment evidence).
    Show { run: String },
    /// Approves a step waiting for approval; it must name every node of the step.
    Approve {
        run: String,
        step: String,
        #[arg(long, value_delimiter = ',', required = true)]
        nodes: Vec<String>,
        #[arg(long, default_value = "")]
        comment: String,
        #[command(flatten)]
        signature: ApprovalSignature,
    },
    /// Cancels a run (in-flight commands settle, completed steps are compensated).
    Cancel {
        run: String,
        #[arg(long, default_value = "")]
        reason: String,
    },
    /// Decides an unknown outcome of one node so the run continues.
    Resume {
        run: String,
        step: String,
        node: String,
        #[arg(long, value_enum)]
        decision: DecisionArg,
        #[arg(long, default_value = "")]
        comment: String,
    },
    /// Lists runs, newest first.
    Runs {
        /// Only runs in these states (e.g. running, failed).
        #[arg(long, value_delimiter = ',')]
        status: Vec<String>,
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Disaster recovery: the agreed recovery timestamp and network DR.
    Dr {
        #[command(subcommand)]
        command: DrCommand,
    },
    /// Cross-organisation proposals: list them, accept or abort for our organisation.
    Proposals {
        #[command(subcommand)]
        command: Option<ProposalsCommand>,
    },
    /// Key material: ed25519 seeds and the signed network configuration.
    Keys {
        #[command(subcommand)]
        command: keys::KeysCommand,
    },
    /// Generated deployment files: the NATS server's users and permissions.
    Gen {
        #[command(subcommand)]
        command: generate::GenCommand,
    },
}

#[derive(Subcommand, Debug)]
pub enum DrCommand {
    /// Collects every SV participant's ACS commitment agreement (a `dr-timestamp` run) and
    /// prints the latest period end a quorum mutually agreed on, minus the margin, with the
    /// evidence. Parameters: quorum=2/3 (or a count), margin=15m, deadline=30s,
    /// exclude=<participants mid party onboarding>.
    Timestamp {
        /// Participants to list (default: every participant of the organisation).
        #[arg(long = "node", value_delimiter = ',')]
        nodes: Vec<String>,
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
        #[arg(long)]
        request_id: Option<String>,
    },
    /// The recorded recovery timestamp of a finished dr-timestamp run.
    Show { run: String },
    /// Proposes a finished run's recovery timestamp to every organisation of the network
    /// (signed, with our acceptance); each accepts with `canton-ops proposals accept`.
    Propose { run: String },
    /// Runs network disaster recovery on our nodes at the timestamp of an accepted proposal:
    /// disconnect, migration dumps (SVs, then validators), approval once the new synchronizer
    /// is deployed, redeploy on new databases, reconnect, commitments. Other parameters:
    /// synchronizer_alias, deadline=10m, redeploy_timeout=30m.
    Run {
        #[arg(value_parser = ["network-dr"])]
        runbook: String,
        /// The accepted dr-timestamp proposal (hash or a prefix of ≥ 8 hex digits).
        #[arg(long)]
        proposal: String,
        /// The new synchronizer's migration id (the current one plus one).
        #[arg(long)]
        migration_id: u32,
        /// When the synchronizer was lost (RFC 3339): the data-loss window ends there.
        #[arg(long)]
        incident: Option<String>,
        #[arg(long = "node", value_delimiter = ',')]
        nodes: Vec<String>,
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
        #[arg(long)]
        request_id: Option<String>,
        /// Follow the run until it finishes; the exit code tells how it ended.
        #[arg(long)]
        wait: bool,
    },
}

#[derive(Subcommand, Debug)]
pub enum ProposalsCommand {
    /// Every proposal with who accepted and who is missing (the default).
    List,
    /// Proposes a runbook every organisation runs on its own nodes once all accepted
    /// (`joint-disconnect`; parameters synchronizer_alias, deadline), with our acceptance.
    Propose {
        runbook: String,
        /// Names the proposal for every organisation; a repeat returns the same one.
        #[arg(long)]
        request_id: String,
        #[arg(long = "param", value_parser = parse_param)]
        params: Vec<(String, String)>,
    },
    /// Our organisation's signed acceptance.
    Accept {
        /// The proposal hash, or at least its first 8 hex digits.
        hash: String,
    },
    /// Aborts the proposal for every organisation, with a reason they all see.
    Abort {
        hash: String,
        #[arg(long)]
        reason: String,
    },
}

#[derive(clap::Args, Debug)]
pub struct Target {
    /// backup, restore (--param backup_set=<set>), disconnect, reconnect, ignore-events,
    /// unignore-events or rehydrate-participant (--node <participant> --param
    /// with_technical_support=true; catch_up=1h, backup_set, synchronizer_never_pruned=true when
    /// the organisation runs no sequencer).
    pub runbook: String,
    /// Nodes to target (repeat or comma-separate); default: every node the runbook selects.
    #[arg(long = "node", value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Runbook parameters as key=value (e.g. deadline=30s).
    #[arg(long = "param", value_parser = parse_param)]
    pub params: Vec<(String, String)>,
}

fn parse_param(text: &str) -> Result<(String, String), String> {
    text.split_once('=')
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .ok_or_else(|| format!("{text:?} is not key=value"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum DecisionArg {
    MarkDone,
    Retry,
    Abort,
}

type Auth =
    Box<dyn FnMut(tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> + Send + Sync>;
type Client = CoordinatorServiceClient<InterceptedService<Channel, Auth>>;

async fn connect(cli: &Cli) -> Result<Client, OpsError> {
    let token = match (&cli.token, &cli.token_file) {
        (Some(token), _) => token.clone(),
        (None, Some(path)) => std::fs::read_to_string(path)
            .map_err(|e| OpsError::Usage(format!("--token-file {}: {e}", path.display())))?
            .trim()
            .to_owned(),
        (None, None) => {
            return Err(OpsError::Auth(
                "no token: set CANTON_OPS_TOKEN or pass --token-file".to_owned(),
            ));
        }
    };
    let header: tonic::metadata::MetadataValue<tonic::metadata::Ascii> = format!("Bearer {token}")
        .parse()
        .map_err(|_| OpsError::Usage("the token holds characters a header cannot".into()))?;
    let mut endpoint = Endpoint::from_shared(cli.coordinator.clone())
        .map_err(|e| OpsError::Usage(format!("--coordinator {:?}: {e}", cli.coordinator)))?
        .connect_timeout(std::time::Duration::from_secs(5));
    if cli.coordinator.starts_with("https://") && cli.ca_file.is_none() {
        return Err(OpsError::Usage(format!(
            "--coordinator {} is https://: pass --ca-file (or CANTON_OPS_CA_FILE) with the CA \
             certificate that signed the coordinator's",
            cli.coordinator
        )));
    }
    if let Some(ca) = &cli.ca_file {
        let pem = std::fs::read(ca)
            .map_err(|e| OpsError::Usage(format!("--ca-file {}: {e}", ca.display())))?;
        endpoint = endpoint
            .tls_config(
                ClientTlsConfig::new().ca_certificate(tonic::transport::Certificate::from_pem(pem)),
            )
            .map_err(|e| OpsError::Usage(format!("--ca-file: {e}")))?;
    }
    let channel = endpoint.connect().await.map_err(|e| {
        OpsError::Unavailable(format!(
            "cannot reach the coordinator at {}: {}",
            cli.coordinator,
            causes(&e)
        ))
    })?;
    let auth: Auth = Box::new(move |mut request: tonic::Request<()>| {
        request
            .metadata_mut()
            .insert("authorization", header.clone());
        Ok(request)
    });
    Ok(CoordinatorServiceClient::with_interceptor(channel, auth))
}

/// An error and its causes on one line: "transport error" alone does not say that the
/// certificate was not trusted.
fn causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let line = next.to_string();
        if !text.contains(&line) {
            text.push_str(": ");
            text.push_str(&line);
        }
        cause = next.source();
    }
    text
}

fn parameters(params: &[(String, String)]) -> Vec<pb::Parameter> {
    params
        .iter()
        .map(|(key, value)| pb::Parameter {
            key: key.clone(),
            value: value.clone(),
        })
        .collect()
}

/// Runs one command; returns the exit code.
pub async fn run(cli: Cli) -> Result<u8, OpsError> {
    let out = render::Out::new(cli.output);
    if let Command::Keys { command } = &cli.command {
        return keys::run(command, &out);
    }
    if let Command::Gen { command } = &cli.command {
        return generate::run(command, &out);
    }
    let mut client = connect(&cli).await?;
    match &cli.command {
        Command::Nodes => {
            let nodes = client
                .list_nodes(pb::ListNodesRequest {})
                .await?
                .into_inner();
            out.nodes(&nodes);
        }
        Command::Plan(target) => {
            let plan = client
                .plan(pb::PlanRequest {
                    runbook: target.runbook.clone(),
                    nodes: target.nodes.clone(),
                    parameters: parameters(&target.params),
                })
                .await?
                .into_inner();
            out.plan(&plan);
        }
        Command::Run {
            target,
            request_id,
            wait,
        } => {
            let request_id = request_id
                .clone()
                .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
            let started = client
                .start_run(pb::StartRunRequest {
                    runbook: target.runbook.clone(),
                    nodes: target.nodes.clone(),
                    parameters: parameters(&target.params),
                    request_id,
                })
                .await?
                .into_inner();
            let run = started.run.unwrap_or_default();
            out.started(&run, started.existing);
            if *wait {
                return watch(&mut client, &run.run_id, &out).await;
            }
        }
        Command::Watch { run } => return watch(&mut client, run, &out).await,
        Command::Show { run } => {
            let response = client
                .get_run(pb::GetRunRequest {
                    run_id: run.clone(),
                })
                .await?
                .into_inner();
            out.show(&response.run.unwrap_or_default());
        }
        Command::Approve {
            run,
            step,
            nodes,
            comment,
            signature,
        } => {
            let signed_approval = signature.sign(run, nodes, comment)?;
            let response = client
                .approve(pb::ApproveRequest {
                    run_id: run.clone(),
                    step: step.clone(),
                    nodes: nodes.clone(),
                    comment: comment.clone(),
                    signed_approval,
                })
                .await?
                .into_inner();
            out.summary("approved", &response.run.unwrap_or_default());
        }
        Command::Cancel { run, reason } => {
            let response = client
                .cancel(pb::CancelRequest {
                    run_id: run.clone(),
                    reason: reason.clone(),
                })
                .await?
                .into_inner();
            out.summary("cancelling", &response.run.unwrap_or_default());
        }
        Command::Resume {
            run,
            step,
            node,
            decision,
            comment,
        } => {
            let decision = match decision {
                DecisionArg::MarkDone => pb::Decision::MarkDone,
                DecisionArg::Retry => pb::Decision::Retry,
                DecisionArg::Abort => pb::Decision::Abort,
            };
            let response = client
                .resume(pb::ResumeRequest {
                    run_id: run.clone(),
                    step: step.clone(),
                    node: node.clone(),
                    decision: decision.into(),
                    comment: comment.clone(),
                })
                .await?
                .into_inner();
            out.summary("resumed", &response.run.unwrap_or_default());
        }
        Command::Runs { status, limit } => {
            let statuses = status
                .iter()
                .map(|s| render::parse_status(s))
                .collect::<Result<Vec<_>, _>>()?;
            let runs = client
                .list_runs(pb::ListRunsRequest {
                    statuses: statuses.into_iter().map(i32::from).collect(),
                    limit: *limit,
                })
                .await?
                .into_inner();
            out.runs(&runs);
        }
        Command::Dr { command } => return dr(&mut client, command, &out).await,
        Command::Proposals { command } => {
            let answer = |hash: &str, accept: bool, reason: &str| pb::AnswerProposalRequest {
                proposal_hash: hash.to_owned(),
                accept,
                reason: reason.to_owned(),
            };
            match command.as_ref().unwrap_or(&ProposalsCommand::List) {
                ProposalsCommand::List => {
                    let listed = client
                        .list_proposals(pb::ListProposalsRequest {})
                        .await?
                        .into_inner();
                    out.proposals(&listed.proposals);
                }
                ProposalsCommand::Propose {
                    runbook,
                    request_id,
                    params,
                } => {
                    let view = client
                        .propose_joint_run(pb::ProposeJointRunRequest {
                            runbook: runbook.clone(),
                            parameters: params.iter().cloned().collect(),
                            request_id: request_id.clone(),
                        })
                        .await?
                        .into_inner();
                    out.proposals(&[view]);
                }
                ProposalsCommand::Accept { hash } => {
                    let view = client
                        .answer_proposal(answer(hash, true, ""))
                        .await?
                        .into_inner();
                    out.proposals(&[view]);
                }
                ProposalsCommand::Abort { hash, reason } => {
                    let view = client
                        .answer_proposal(answer(hash, false, reason))
                        .await?
                        .into_inner();
                    out.proposals(&[view]);
                }
            }
        }
        Command::Keys { .. } | Command::Gen { .. } => {}
    }
    Ok(exit::OK)
}

async fn dr(client: &mut Client, command: &DrCommand, out: &render::Out) -> Result<u8, OpsError> {
    let run = match command {
        DrCommand::Run {
            runbook,
            proposal,
            migration_id,
            incident,
            nodes,
            params,
            request_id,
            wait,
        } => {
            let mut parameters = parameters(params);
            parameters.push(pb::Parameter {
                key: "proposal".to_owned(),
                value: proposal.clone(),
            });
            parameters.push(pb::Parameter {
                key: "migration_id".to_owned(),
                value: migration_id.to_string(),
            });
            if let Some(incident) = incident {
                parameters.push(pb::Parameter {
                    key: "incident".to_owned(),
                    value: incident.clone(),
                });
            }
            let started = client
                .start_run(pb::StartRunRequest {
                    runbook: runbook.clone(),
                    nodes: nodes.clone(),
                    parameters,
                    request_id: request_id
                        .clone()
                        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
                })
                .await?
                .into_inner();
            let run = started.run.unwrap_or_default();
            out.started(&run, started.existing);
            if *wait {
                return watch(client, &run.run_id, out).await;
            }
            return Ok(exit::OK);
        }
        DrCommand::Show { run } => run.clone(),
        DrCommand::Propose { run } => {
            let view = client
                .propose_dr_timestamp(pb::ProposeDrTimestampRequest {
                    run_id: run.clone(),
                })
                .await?
                .into_inner();
            out.proposals(&[view]);
            return Ok(exit::OK);
        }
        DrCommand::Timestamp {
            nodes,
            params,
            request_id,
        } => {
            let started = client
                .start_run(pb::StartRunRequest {
                    runbook: "dr-timestamp".to_owned(),
                    nodes: nodes.clone(),
                    parameters: parameters(params),
                    request_id: request_id
                        .clone()
                        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string()),
                })
                .await?
                .into_inner();
            let run = started.run.unwrap_or_default().run_id;
            if !out.json() {
                eprintln!("collecting commitment evidence in run {run}");
            }
            wait_quietly(client, &run).await?;
            run
        }
    };
    let response = client
        .get_dr_timestamp(pb::GetDrTimestampRequest { run_id: run })
        .await?
        .into_inner();
    out.dr_timestamp(&response);
    Ok(exit::OK)
}

/// Waits for a run to finish without printing its progress.
async fn wait_quietly(client: &mut Client, run: &str) -> Result<pb::RunStatus, OpsError> {
    let mut events = client
        .watch_run(pb::WatchRunRequest {
            run_id: run.to_owned(),
            after_seq: 0,
        })
        .await?
        .into_inner();
    while let Some(event) = events.next().await {
        let event = event?;
        if event.kind() == pb::RunEventKind::RunFinished {
            return Ok(event.run_status());
        }
    }
    Err(OpsError::Unavailable(format!(
        "the watch of run {run} ended before the run finished; `canton-ops dr show {run}` once it has"
    )))
}

/// Follows WatchRun to the end; the exit code says how the run ended.
async fn watch(client: &mut Client, run: &str, out: &render::Out) -> Result<u8, OpsError> {
    let mut events = client
        .watch_run(pb::WatchRunRequest {
            run_id: run.to_owned(),
            after_seq: 0,
        })
        .await?
        .into_inner();
    let mut progress = out.progress();
    while let Some(event) = events.next().await {
        let event = event?;
        progress.event(&event);
        if event.kind() == pb::RunEventKind::RunFinished {
            progress.finish();
            return Ok(match event.run_status() {
                pb::RunStatus::Succeeded => exit::OK,
                pb::RunStatus::Cancelled => exit::RUN_CANCELLED,
                pb::RunStatus::Compensated => exit::RUN_COMPENSATED,
                _ => exit::RUN_FAILED,
            });
        }
    }
    progress.finish();
    Err(OpsError::Unavailable(format!(
        "the watch of run {run} ended before the run finished; watch again"
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Plain HTTP/2 against a TLS listener can fail as an HTTP/2 protocol error rather than in
    /// the transport; both mean "not reached" and say which scheme to try.
    #[test]
    fn a_client_side_protocol_error_is_unavailable_with_the_scheme_hint() {
        let protocol =
            tonic::Status::from_error(Box::new(h2::Error::from(h2::Reason::PROTOCOL_ERROR)));
        assert_eq!(protocol.code(), tonic::Code::Internal);
        let error = OpsError::from(protocol);
        assert_eq!(error.exit_code(), exit::UNAVAILABLE, "{error}");
        assert!(error.to_string().contains("https://"), "{error}");
        // The same code sent by the server carries no cause: an internal error, not "unreachable".
        let sent = OpsError::from(tonic::Status::internal("boom"));
        assert_eq!(sent.exit_code(), exit::INTERNAL);
    }
}
