//! The stand-in for what runs Canton nodes in production (systemd, Docker, Kubernetes): an HTTP
//! endpoint that stops and starts sim nodes. Agents reach it through their lifecycle hooks,
//! which run the `sim-lifecycle` program — exactly as a real agent's hook would run
//! `systemctl` or `kubectl scale`. A node keeps its config, ports and database across a stop.
//!
//! `POST /nodes/{id}/stop`, `POST /nodes/{id}/start`, `GET /nodes/{id}/status`
//! (`running` or `stopped`). Every request is logged in [`Orchestrator::history`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use canton_sim::SimNetwork;
use tokio_util::sync::CancellationToken;

/// Shared ownership of the sim network between the driver and the endpoint.
pub type SharedSims = Arc<Mutex<SimNetwork>>;

/// What the orchestrator was asked, with the wall-clock time it answered (Unix ms).
type History = Arc<Mutex<Vec<(i64, String)>>>;

#[derive(Clone)]
struct Shared {
    sims: SharedSims,
    history: History,
}

/// A running endpoint; stops when dropped.
pub struct Orchestrator {
    pub addr: SocketAddr,
    history: History,
    stop: CancellationToken,
}

impl Orchestrator {
    pub async fn serve(sims: SharedSims) -> anyhow::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Shared {
            sims,
            history: Arc::default(),
        };
        let history = shared.history.clone();
        let router = axum::Router::new()
            .route("/nodes/{id}/stop", post(stop))
            .route("/nodes/{id}/start", post(start))
            .route("/nodes/{id}/status", get(status))
            .with_state(shared);
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        tokio::spawn(async move {
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(stopped.cancelled_owned())
                .await;
        });
        Ok(Self {
            addr,
            history,
            stop,
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `"<verb> <node> -> <outcome>"` for every request so far.
    pub fn history(&self) -> Vec<String> {
        self.timed_history()
            .into_iter()
            .map(|(_, line)| line)
            .collect()
    }

    /// The same, each with the Unix time in ms at which it completed.
    pub fn timed_history(&self) -> Vec<(i64, String)> {
        self.history.lock().map(|h| h.clone()).unwrap_or_default()
    }
}

impl Drop for Orchestrator {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

type Reply = (StatusCode, String);

async fn stop(State(shared): State<Shared>, Path(id): Path<String>) -> Reply {
    act(shared, id, "stop").await
}

async fn start(State(shared): State<Shared>, Path(id): Path<String>) -> Reply {
    act(shared, id, "start").await
}

async fn status(State(shared): State<Shared>, Path(id): Path<String>) -> Reply {
    act(shared, id, "status").await
}

/// Stop and start block until the process exited or is ready, so they run off the runtime.
async fn act(shared: Shared, id: String, verb: &'static str) -> Reply {
    let sims = shared.sims.clone();
    let node = id.clone();
    let outcome = tokio::task::spawn_blocking(move || -> Reply {
        let Ok(mut sims) = sims.lock() else {
            return (StatusCode::INTERNAL_SERVER_ERROR, "state poisoned".into());
        };
        let Some(sim) = sims.node_mut(&node) else {
            return (StatusCode::NOT_FOUND, format!("no node {node}"));
        };
        let result = match verb {
            "stop" => sim.stop().map(|()| "stopped".to_owned()),
            "start" => sim
                .start()
                .map(|took| format!("running (ready in {took:?})")),
            _ => Ok(if sim.is_running() {
                "running"
            } else {
                "stopped"
            }
            .to_owned()),
        };
        match result {
            Ok(text) => (StatusCode::OK, text),
            Err(error) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{error:#}")),
        }
    })
    .await
    .unwrap_or_else(|error| (StatusCode::INTERNAL_SERVER_ERROR, error.to_string()));
    if verb != "status"
        && let Ok(mut history) = shared.history.lock()
    {
        history.push((
            crate::now_unix_ms(),
            format!("{verb} {id} -> {}", outcome.1),
        ));
    }
    outcome
}
