use canton_client::types::{ContractImportMode, PartyAcsImport};
use canton_client::{ErrorKind, Profile};

use crate::fake_node::FakeNode;

#[tokio::test]
async fn line_3_4_node_gets_the_enterprise_set_passive_path() {
    let node = FakeNode::new(Some("3.4.11"));
    let served = node.serve().await;
    let client = served.client();
    client.set_passive().await.unwrap();
    assert_eq!(client.profile().await.unwrap(), Profile::Line3_4);
    assert_eq!(
        node.calls(),
        [
            "ParticipantStatus",
            "EnterpriseParticipantReplicationService/SetPassive"
        ]
    );
}

#[tokio::test]
async fn line_3_5_node_gets_the_renamed_set_passive_path() {
    let node = FakeNode::new(Some("3.5.0-snapshot.20260120.1"));
    let served = node.serve().await;
    let client = served.client();
    client.set_passive().await.unwrap();
    client.set_passive().await.unwrap();
    assert_eq!(client.profile().await.unwrap(), Profile::Line3_5);
    // The version is read once; both calls take the 3.5 path.
    assert_eq!(
        node.calls(),
        [
            "ParticipantStatus",
            "ParticipantReplicationService/SetPassive",
            "ParticipantReplicationService/SetPassive"
        ]
    );
}

#[tokio::test]
async fn unknown_release_line_is_refused_before_anything_is_sent() {
    for version in ["3.6.0-SNAPSHOT", "3.3.2", "4.0.0"] {
        let node = FakeNode::new(Some(version));
        let served = node.serve().await;
        let client = served.client();
        let error = client.set_passive().await.unwrap_err();
        assert_eq!(
            error.kind(),
            ErrorKind::UnsupportedVersion,
            "{version}: {error}"
        );
        let message = error.to_string();
        assert!(
            message.contains(version) && message.contains("p1"),
            "{message}"
        );
        // Only the version probe reached the node.
        assert_eq!(node.calls(), ["ParticipantStatus"], "{version}");
        // The status itself stays readable, so probes keep working.
        let status = client.status().await.unwrap();
        assert_eq!(status.version.as_deref(), Some(version));
    }
}

#[tokio::test]
async fn uninitialised_3_4_node_names_no_version_and_is_refused() {
    let node = FakeNode::new(None);
    let served = node.serve().await;
    let client = served.client();
    let status = client.status().await.unwrap();
    assert!(!status.initialized);
    assert_eq!(status.version, None);
    let error = client.set_passive().await.unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotInitialized, "{error}");
    assert!(!node.calls().iter().any(|call| call.contains("SetPassive")));
}

#[tokio::test]
async fn status_maps_to_plain_types() {
    let node = FakeNode::new(Some("3.4.11"));
    let served = node.serve().await;
    let status = served.client().status().await.unwrap();
    assert!(status.initialized && status.active);
    assert_eq!(status.uid.as_deref(), Some("p1::1220"));
    assert_eq!(status.connected_synchronizers.len(), 1);
    assert_eq!(status.connected_synchronizers[0].healthy, Some(true));
}

async fn import(version: &str) -> Vec<String> {
    let node = FakeNode::new(Some(version));
    let served = node.serve().await;
    let import = PartyAcsImport {
        synchronizer_id: "global::1220".into(),
        party_id: Some("alice::1220".into()),
        workflow_id_prefix: "import-1".into(),
        mode: ContractImportMode::Validation,
    };
    let chunks = futures::stream::iter(vec![vec![1u8, 2], vec![3u8]]);
    served
        .client()
        .import_party_acs(&import, chunks)
        .await
        .unwrap();
    node.calls()
}

#[tokio::test]
async fn party_acs_import_uses_each_line_request_shape() {
    let line_3_4 = import("3.4.11").await;
    assert_eq!(
        line_3_4[1],
        "3.4 ImportPartyAcs prefix=import-1 mode=2 bytes=[1, 2, 3]"
    );
    let line_3_5 = import("3.5.2").await;
    assert_eq!(
        line_3_5[1],
        "3.5 ImportPartyAcs synchronizer=Some(\"global::1220\") prefix=Some(\"import-1\") mode=Some(2) party=Some(\"alice::1220\") bytes=[1, 2, 3]"
    );
}

#[tokio::test]
async fn modify_synchronizer_keeps_the_rest_of_the_stored_config() {
    let node = FakeNode::new(Some("3.4.11"));
    let served = node.serve().await;
    let change = canton_client::types::SynchronizerChange {
        manual_connect: Some(true),
        priority: None,
    };
    served
        .client()
        .modify_synchronizer("global", &change, Default::default())
        .await
        .unwrap();
    assert_eq!(
        node.calls().last().unwrap(),
        "ModifySynchronizer id=Some(\"global::1220::34-0\") alias=global manual=true priority=7 trusted=true validation=3"
    );
    let error = served
        .client()
        .modify_synchronizer("other", &change, Default::default())
        .await
        .unwrap_err();
    assert_eq!(error.kind(), ErrorKind::NotFound);
}
