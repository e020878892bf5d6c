//! An in-process OTLP gRPC receiver standing in for an OpenTelemetry collector: it records
//! every span and metric name it is sent, counts the export requests, and keeps the encoded
//! bytes of every request so tests can search all of it (names, attributes, events, resources).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use opentelemetry_proto::tonic::collector::metrics::v1::metrics_service_server::{
    MetricsService, MetricsServiceServer,
};
use opentelemetry_proto::tonic::collector::metrics::v1::{
    ExportMetricsServiceRequest, ExportMetricsServiceResponse,
};
use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use opentelemetry_proto::tonic::resource::v1::Resource;

/// One received span, ids in hex.
#[derive(Clone, Debug)]
pub struct ReceivedSpan {
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub attributes: BTreeMap<String, String>,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// Everything received so far.
#[derive(Clone, Debug, Default)]
pub struct Received {
    pub trace_requests: usize,
    pub metric_requests: usize,
    pub spans: Vec<ReceivedSpan>,
    /// `(service, metric name)` of every metric seen.
    pub metrics: BTreeSet<(String, String)>,
}

#[derive(Clone, Default)]
struct Sink {
    received: Arc<Mutex<Received>>,
    /// Every export request as it was encoded on the wire, concatenated.
    exported: Arc<Mutex<Vec<u8>>>,
}

impl Sink {
    fn lock(&self) -> MutexGuard<'_, Received> {
        self.received.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn keep(&self, request: &impl prost::Message) {
        self.exported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(request.encode_to_vec());
    }
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn attributes(values: &[KeyValue]) -> BTreeMap<String, String> {
    values
        .iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn service(resource: Option<&Resource>) -> String {
    resource
        .map(|r| attributes(&r.attributes))
        .and_then(|mut a| a.remove("service.name"))
        .unwrap_or_default()
}

#[tonic::async_trait]
impl TraceService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        self.keep(&request);
        let mut received = self.lock();
        received.trace_requests += 1;
        for resource_spans in request.resource_spans {
            let service = service(resource_spans.resource.as_ref());
            for scope in resource_spans.scope_spans {
                for span in scope.spans {
                    received.spans.push(ReceivedSpan {
                        service: service.clone(),
                        name: span.name,
                        trace_id: hex::encode(&span.trace_id),
                        span_id: hex::encode(&span.span_id),
                        parent_span_id: hex::encode(&span.parent_span_id),
                        attributes: attributes(&span.attributes),
                    });
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

#[tonic::async_trait]
impl MetricsService for Sink {
    async fn export(
        &self,
        request: tonic::Request<ExportMetricsServiceRequest>,
    ) -> Result<tonic::Response<ExportMetricsServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        self.keep(&request);
        let mut received = self.lock();
        received.metric_requests += 1;
        for resource_metrics in request.resource_metrics {
            let service = service(resource_metrics.resource.as_ref());
            for scope in resource_metrics.scope_metrics {
                for metric in scope.metrics {
                    received.metrics.insert((service.clone(), metric.name));
                }
            }
        }
        Ok(tonic::Response::new(ExportMetricsServiceResponse::default()))
    }
}

/// A running receiver; stops when dropped.
pub struct OtlpReceiver {
    pub addr: SocketAddr,
    sink: Sink,
    task: tokio::task::JoinHandle<()>,
}

impl OtlpReceiver {
    /// Serves OTLP traces and metrics on `addr` (port 0 picks a free one).
    pub async fn start(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let sink = Sink::default();
        let router = tonic::transport::Server::builder()
            .add_service(TraceServiceServer::new(sink.clone()))
            .add_service(MetricsServiceServer::new(sink.clone()));
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let task = tokio::spawn(async move {
            if let Err(error) = router.serve_with_incoming(incoming).await {
                tracing::warn!(%error, "OTLP receiver stopped");
            }
        });
        Ok(Self { addr, sink, task })
    }

    /// `http://<addr>`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn received(&self) -> Received {
        self.sink.lock().clone()
    }

    /// The encoded bytes of every trace and metric export request so far: strings (span
    /// names, attribute and event values, resource attributes) appear in it verbatim.
    pub fn exported_bytes(&self) -> Vec<u8> {
        self.sink
            .exported
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}
