use std::time::{Duration, Instant};

use canton_client::{CantonClient, ClientConfig, ErrorKind, NodeKind};

use crate::fake_node::FakeNode;

#[tokio::test]
async fn grpc_statuses_map_to_error_kinds() {
    let node = FakeNode::new(Some("3.4.11"));
    let served = node.serve().await;
    let client = served.client();
    for (alias, kind) in [
        ("missing", ErrorKind::NotFound),
        ("busy", ErrorKind::FailedPrecondition),
        ("bad", ErrorKind::InvalidArgument),
        ("down", ErrorKind::Unavailable),
    ] {
        let error = client.disconnect_synchronizer(alias).await.unwrap_err();
        assert_eq!(error.kind(), kind, "{alias}: {error}");
        assert!(
            error.to_string().contains("DisconnectSynchronizer on p1"),
            "{error}"
        );
    }
    client.disconnect_synchronizer("global").await.unwrap();
    // A method the node does not serve.
    let error = client.list_connected_synchronizers().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unimplemented, "{error}");
}

#[tokio::test]
async fn bearer_token_is_sent_and_a_wrong_one_is_unauthenticated() {
    let mut node = FakeNode::new(Some("3.4.11"));
    node.required_token = Some("secret".into());
    let served = node.serve().await;
    let error = served
        .client()
        .disconnect_synchronizer("global")
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unauthenticated, "{error}");

    let mut config = served.config();
    config.admin.bearer_token = Some("secret".into());
    CantonClient::new(config)
        .unwrap()
        .disconnect_synchronizer("global")
        .await
        .unwrap();
}

#[tokio::test]
async fn a_call_past_its_timeout_is_deadline_exceeded() {
    let node = FakeNode::new(Some("3.4.11"));
    let served = node.serve().await;
    let client = served.client().with_timeout(Duration::from_millis(300));
    let started = Instant::now();
    let error = client.disconnect_synchronizer("slow").await.unwrap_err();
    let took = started.elapsed();
    eprintln!("timed out after {took:?}");
    assert_eq!(error.kind(), ErrorKind::DeadlineExceeded, "{error}");
    assert!(took >= Duration::from_millis(300), "{took:?}");
    assert!(took < Duration::from_secs(10), "{took:?}");
}

#[tokio::test]
async fn an_unreachable_node_is_unavailable() {
    // A port that was free a moment ago and has no listener now.
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let address = listener.local_addr().unwrap();
    drop(listener);
    let client = CantonClient::new(ClientConfig::new(
        "p9",
        NodeKind::Participant,
        format!("http://{address}"),
    ))
    .unwrap();
    let error = client.status().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::Unavailable, "{error}");
    assert!(error.kind().is_transient());
}

#[tokio::test]
async fn calls_for_another_node_kind_are_refused_locally() {
    let node = FakeNode::new(Some("3.4.11"));
    let served = node.serve().await;
    let mut config = served.config();
    config.node_kind = NodeKind::Mediator;
    let client = CantonClient::new(config).unwrap();
    let error = client.set_passive().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::WrongNodeType, "{error}");
    let error = client.disable_member("MED::m::1220").await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::WrongNodeType, "{error}");
    assert!(node.calls().is_empty());
}

#[tokio::test]
async fn bad_configuration_is_a_config_error() {
    let error = CantonClient::new(ClientConfig::new("p1", NodeKind::Participant, "not a url"))
        .err()
        .unwrap();
    assert_eq!(error.kind(), ErrorKind::Config, "{error}");
    let mut config = ClientConfig::new("p1", NodeKind::Participant, "http://127.0.0.1:1");
    config.admin.bearer_token = Some("line\nbreak".into());
    let error = CantonClient::new(config).err().unwrap();
    assert_eq!(error.kind(), ErrorKind::Config, "{error}");
    // The ledger end needs a ledger endpoint.
    let client = CantonClient::new(ClientConfig::new(
        "p1",
        NodeKind::Participant,
        "http://127.0.0.1:1",
    ))
    .unwrap();
    assert_eq!(
        client.ledger_end().await.unwrap_err().kind(),
        ErrorKind::Config
    );
}
