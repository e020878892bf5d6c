use prost::Message;
use proto_canton::admin::participant::v30 as participant;

#[test]
fn disconnect_request_is_field_one_string() {
    let request = participant::DisconnectSynchronizerRequest {
        synchronizer_alias: "global".into(),
    };
    assert_eq!(request.encode_to_vec(), b"\x0a\x06global");
}
