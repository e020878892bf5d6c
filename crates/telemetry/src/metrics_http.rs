//! `/metrics`: Prometheus text exposition of every instrument of the process.

use std::future::Future;

use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use prometheus::Encoder as _;

/// The content type of the text exposition format.
pub const CONTENT_TYPE_TEXT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Renders the registry the OTel Prometheus reader fills; clones share it.
#[derive(Clone)]
pub struct MetricsText {
    registry: prometheus::Registry,
}

impl MetricsText {
    pub(crate) fn new(registry: prometheus::Registry) -> Self {
        Self { registry }
    }

    /// The current values in the text exposition format.
    pub fn render(&self) -> String {
        let mut buffer = Vec::new();
        // Encoding into a Vec fails only on a metric family the registry itself built wrongly.
        if let Err(error) =
            prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut buffer)
        {
            tracing::warn!(%error, "encoding /metrics failed");
        }
        String::from_utf8_lossy(&buffer).into_owned()
    }
}

/// Serves `GET /metrics` on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    metrics: MetricsText,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let metrics = metrics.clone();
            async move { ([(CONTENT_TYPE, CONTENT_TYPE_TEXT)], metrics.render()).into_response() }
        }),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}
