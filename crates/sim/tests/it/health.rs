use std::time::Duration;

use canton_sim::control::http_request;
use proto_canton::grpc_health::v1::HealthCheckRequest;
use proto_canton::grpc_health::v1::health_check_response::ServingStatus;
use proto_canton::grpc_health::v1::health_client::HealthClient;

use crate::support::{eventually, start_on};

async fn status(url: &str, service: &str) -> Option<ServingStatus> {
    let mut client = HealthClient::connect(url.to_owned()).await.ok()?;
    let reply = client
        .check(HealthCheckRequest {
            service: service.to_owned(),
        })
        .await
        .ok()?;
    ServingStatus::try_from(reply.into_inner().status).ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_follows_storage_and_http_health_is_optional() {
    // A private cluster: it is killed below.
    let mut net = start_on(
        testkit::Postgres::start().unwrap(),
        r#"
[[node]]
id = "sequencer1"
kind = "sequencer"

[[node]]
id = "mediator1"
kind = "mediator"
http_health = false
"#,
    );
    let sequencer = net.net.node("sequencer1").unwrap();
    let mediator = net.net.node("mediator1").unwrap();
    assert!(mediator.http_health_addr().is_none());
    let http = sequencer.http_health_addr().unwrap();
    eventually("sequencer /health 200", Duration::from_secs(10), || async {
        (http_request(http, "GET", "/health", None).await.ok()?.0 == 200).then_some(())
    })
    .await;
    for (url, service) in [
        (sequencer.grpc_health_url(), "sequencer"),
        (sequencer.grpc_health_url(), ""),
        (sequencer.grpc_health_url(), "liveness"),
        (mediator.grpc_health_url(), "mediator"),
        // The sequencer's public API answers health checks too, as Canton's does.
        (sequencer.public_url().unwrap(), "sequencer"),
    ] {
        let what = format!("{url} {service:?} serving");
        eventually(&what, Duration::from_secs(10), || {
            let url = url.clone();
            async move { (status(&url, service).await? == ServingStatus::Serving).then_some(()) }
        })
        .await;
    }

    // Storage down: not ready (503 / NOT_SERVING), still alive; back when Postgres is.
    let seq_url = sequencer.grpc_health_url();
    net.pg.kill();
    eventually(
        "503 without the database",
        Duration::from_secs(15),
        || async {
            (http_request(http, "GET", "/health", None).await.ok()?.0 == 503).then_some(())
        },
    )
    .await;
    assert_eq!(
        status(&seq_url, "sequencer").await,
        Some(ServingStatus::NotServing)
    );
    assert_eq!(
        status(&seq_url, "liveness").await,
        Some(ServingStatus::Serving)
    );
    net.pg.restart().unwrap();
    eventually(
        "200 once the database is back",
        Duration::from_secs(15),
        || async {
            (http_request(http, "GET", "/health", None).await.ok()?.0 == 200).then_some(())
        },
    )
    .await;
}
