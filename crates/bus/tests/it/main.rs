//! The bus against a real nats-server.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use bytes::Bytes;
use futures::StreamExt;
use sidecar_bus::{Bucket, BusSettings, KvErrorKind, Names, Network, NetworkId, NodeId, connect};
use testkit::{NatsServer, unique_id};

async fn network(url: &str, settings: &BusSettings) -> Network {
    let client = connect(url, "bus-test").await.unwrap();
    let names = Names::new(NetworkId::new(unique_id("n")).unwrap());
    Network::ensure(client, names, settings).await.unwrap()
}

#[tokio::test]
async fn kv_create_and_compare_and_set() {
    let server = NatsServer::shared_or_start().unwrap();
    let net = network(server.url(), &BusSettings::default()).await;
    let runs = net.kv(Bucket::Runs);

    let first = runs
        .create("run-1", Bytes::from_static(b"v1"))
        .await
        .unwrap();
    let again = runs
        .create("run-1", Bytes::from_static(b"other"))
        .await
        .unwrap_err();
    assert_eq!(again.kind(), KvErrorKind::Conflict);

    let second = runs
        .update("run-1", Bytes::from_static(b"v2"), first)
        .await
        .unwrap();
    assert!(second > first);
    let stale = runs
        .update("run-1", Bytes::from_static(b"v3"), first)
        .await
        .unwrap_err();
    assert_eq!(stale.kind(), KvErrorKind::Conflict);

    let current = runs.get("run-1").await.unwrap().unwrap();
    assert_eq!(
        (current.value.as_ref(), current.revision),
        (&b"v2"[..], second)
    );
    assert!(runs.get("absent").await.unwrap().is_none());
}

#[tokio::test]
async fn two_networks_on_one_server_do_not_see_each_other() {
    let server = NatsServer::shared_or_start().unwrap();
    let settings = BusSettings::default();
    let a = network(server.url(), &settings).await;
    let b = network(server.url(), &settings).await;
    let node = NodeId::new("p1").unwrap();

    a.kv(Bucket::Nodes)
        .put("p1", Bytes::from_static(b"state-a"))
        .await
        .unwrap();
    assert!(b.kv(Bucket::Nodes).get("p1").await.unwrap().is_none());

    let mut b_heartbeats = b.client.subscribe(b.names.heartbeats()).await.unwrap();
    let mut a_heartbeats = a.client.subscribe(a.names.heartbeats()).await.unwrap();
    a.client
        .publish(a.names.heartbeat(&node), "hb".into())
        .await
        .unwrap();
    b.client
        .publish(b.names.heartbeat(&node), "hb-b".into())
        .await
        .unwrap();
    let got_a = tokio::time::timeout(Duration::from_secs(10), a_heartbeats.next())
        .await
        .unwrap()
        .unwrap();
    let got_b = tokio::time::timeout(Duration::from_secs(10), b_heartbeats.next())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got_a.payload.as_ref(), b"hb");
    assert_eq!(got_b.payload.as_ref(), b"hb-b");

    a.jetstream
        .publish(a.names.command(&node), "cmd".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let mut a_stream = a
        .jetstream
        .get_stream(a.names.command_stream())
        .await
        .unwrap();
    let mut b_stream = b
        .jetstream
        .get_stream(b.names.command_stream())
        .await
        .unwrap();
    assert_eq!(a_stream.info().await.unwrap().state.messages, 1);
    assert_eq!(b_stream.info().await.unwrap().state.messages, 0);
}

#[tokio::test]
async fn a_write_that_times_out_is_resolved_by_reading_back() {
    let server = NatsServer::start().unwrap();
    let settings = BusSettings {
        request_timeout: Duration::from_millis(500),
        ..BusSettings::default()
    };
    let net = network(server.url(), &settings).await;
    let claims = net.kv(Bucket::Claims).clone();
    let revision = claims
        .create("p1", Bytes::from_static(b"run-a@1"))
        .await
        .unwrap();

    server.pause().unwrap();
    let writer = {
        let claims = claims.clone();
        tokio::spawn(async move {
            claims
                .update("p1", Bytes::from_static(b"run-b@2"), revision)
                .await
        })
    };
    let start = Instant::now();
    while claims.timeouts() == 0 {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the write never timed out"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    eprintln!("first timeout observed after {:?}", start.elapsed());
    server.resume().unwrap();

    let written = writer.await.unwrap().unwrap();
    assert!(written > revision);
    let current = claims.get("p1").await.unwrap().unwrap();
    assert_eq!(current.value.as_ref(), b"run-b@2");
    assert_eq!(current.revision, written);
}
