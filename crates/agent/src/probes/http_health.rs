//! HTTP `/health`: 200 is serving, 503 not serving (also what a passive replica answers).

use std::time::Duration;

use futures::future::BoxFuture;
use http_body_util::{BodyExt, Empty};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::config::Schedule;
use crate::probe::{Facts, Probe, ProbeOutcome, ReasonKind};
use crate::probes::is_connection_failure;

/// GETs the node's health URL.
pub struct HttpHealthProbe {
    url: String,
    schedule: Schedule,
}

impl HttpHealthProbe {
    pub fn new(url: String, schedule: Schedule) -> Self {
        Self { url, schedule }
    }
}

impl Probe for HttpHealthProbe {
    fn name(&self) -> &'static str {
        "http_health"
    }

    fn schedule(&self) -> Schedule {
        self.schedule
    }

    fn check(&self) -> BoxFuture<'static, ProbeOutcome> {
        let url = self.url.clone();
        Box::pin(async move {
            match get(&url).await {
                Ok((200, _)) => ProbeOutcome::Healthy(Facts {
                    serving: Some(true),
                    ..Facts::default()
                }),
                Ok((503, body)) => ProbeOutcome::Unhealthy {
                    facts: Facts {
                        serving: Some(false),
                        ..Facts::default()
                    },
                    kind: ReasonKind::NotServing,
                    detail: format!("GET {url}: 503 {}", first_line(&body)),
                },
                Ok((status, body)) => ProbeOutcome::failed(
                    ReasonKind::Error,
                    format!("GET {url}: {status} {}", first_line(&body)),
                ),
                Err((kind, detail)) => ProbeOutcome::failed(kind, format!("GET {url}: {detail}")),
            }
        })
    }
}

fn first_line(body: &str) -> &str {
    body.lines().next().unwrap_or("").trim()
}

/// Longest body kept for the reason text.
const BODY_LIMIT: usize = 512;

async fn get(url: &str) -> Result<(u16, String), (ReasonKind, String)> {
    let uri: hyper::Uri = url
        .parse()
        .map_err(|e| (ReasonKind::Error, format!("bad URL: {e}")))?;
    if uri.scheme_str() != Some("http") {
        return Err((
            ReasonKind::Error,
            "only http:// health URLs are supported".to_owned(),
        ));
    }
    let authority = uri
        .authority()
        .ok_or((ReasonKind::Error, "URL without host".to_owned()))?
        .clone();
    let stream = TcpStream::connect(authority.as_str())
        .await
        .map_err(|e| (ReasonKind::Unreachable, e.to_string()))?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| classify(&e))?;
    let driver = tokio::spawn(async move {
        let _ = connection.await;
    });
    let request = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
        .header(hyper::header::HOST, authority.as_str())
        .body(Empty::<Bytes>::new())
        .map_err(|e| (ReasonKind::Error, e.to_string()))?;
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| classify(&e))?;
    let status = response.status().as_u16();
    // The body is only for the reason text; a slow one must not make a 503 look like a hang.
    let body = tokio::time::timeout(Duration::from_millis(500), response.into_body().collect())
        .await
        .ok()
        .and_then(Result::ok)
        .map(|b| {
            let bytes = b.to_bytes();
            String::from_utf8_lossy(&bytes[..bytes.len().min(BODY_LIMIT)]).into_owned()
        })
        .unwrap_or_default();
    driver.abort();
    Ok((status, body))
}

fn classify(error: &hyper::Error) -> (ReasonKind, String) {
    let kind = if is_connection_failure(error) || error.is_incomplete_message() {
        ReasonKind::Unreachable
    } else {
        ReasonKind::Error
    };
    (kind, error.to_string())
}
