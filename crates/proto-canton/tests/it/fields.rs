//! Every message and enum we compile has the appendix's fields: same names, numbers, types,
//! labels and oneofs. Messages the appendix does not cover are listed here with their facts.

use crate::descriptors::compiled;
use crate::facts::{appendix, appendix_types, notes};
use std::collections::{BTreeMap, BTreeSet};

/// Messages outside the appendix (the supplement files), with the facts they were written from.
fn supplement_messages() -> BTreeMap<String, Vec<String>> {
    let crypto = "com.digitalasset.canton.crypto.v30";
    let vault = "com.digitalasset.canton.crypto.admin.v30";
    let mediator = "com.digitalasset.canton.mediator.admin.v30";
    let sequencer = "com.digitalasset.canton.admin.sequencer.v30";
    let entries: Vec<(String, Vec<String>)> = vec![
        (
            "grpc.health.v1.HealthCheckRequest".into(),
            vec!["service = 1 : string".into()],
        ),
        (
            "grpc.health.v1.HealthCheckResponse".into(),
            vec!["status = 1 : grpc.health.v1.HealthCheckResponse.ServingStatus".into()],
        ),
        (
            format!("{vault}.ListKeysFilters"),
            vec![
                "fingerprint = 1 : string".into(),
                "name = 2 : string".into(),
                format!("purpose = 3 : rep {crypto}.KeyPurpose"),
                format!("usage_v30 = 4 : rep {crypto}.SigningKeyUsage"),
            ],
        ),
        (
            format!("{vault}.ListMyKeysRequest"),
            vec![format!("filters = 1 : {vault}.ListKeysFilters")],
        ),
        (
            format!("{vault}.PrivateKeyMetadata"),
            vec![
                format!("v30 = 1 : {crypto}.PublicKeyWithName (oneof public_key_with_name)"),
                "wrapper_key_id = 2 : opt string".into(),
                "kms_key_id = 3 : opt string".into(),
            ],
        ),
        (
            format!("{vault}.ListMyKeysResponse"),
            vec![format!(
                "private_keys_metadata = 1 : rep {vault}.PrivateKeyMetadata"
            )],
        ),
        (
            format!("{vault}.GenerateSigningKeyRequest"),
            vec![
                format!("key_spec = 1 : {crypto}.SigningKeySpec"),
                "name = 2 : string".into(),
                format!("usage_v30 = 3 : rep {crypto}.SigningKeyUsage"),
            ],
        ),
        (
            format!("{vault}.GenerateSigningKeyResponse"),
            vec![format!(
                "v30 = 1 : {crypto}.SigningPublicKey (oneof public_key)"
            )],
        ),
        (
            format!("{vault}.GenerateEncryptionKeyRequest"),
            vec![
                format!("key_spec = 1 : {crypto}.EncryptionKeySpec"),
                "name = 2 : string".into(),
            ],
        ),
        (
            format!("{vault}.GenerateEncryptionKeyResponse"),
            vec![format!("public_key = 1 : {crypto}.EncryptionPublicKey")],
        ),
        (
            format!("{vault}.ExportKeyPairRequest"),
            vec![
                "fingerprint = 1 : string".into(),
                "protocol_version = 2 : int32".into(),
                "password = 3 : string".into(),
            ],
        ),
        (
            format!("{vault}.ExportKeyPairResponse"),
            vec!["key_pair = 1 : bytes".into()],
        ),
        (format!("{mediator}.GetConnectionRequest"), vec![]),
        (
            format!("{mediator}.GetConnectionResponse"),
            vec![format!(
                "sequencer_connections = 1 : {sequencer}.SequencerConnections"
            )],
        ),
        (
            format!("{mediator}.SetConnectionRequest"),
            vec![
                format!("sequencer_connections = 1 : {sequencer}.SequencerConnections"),
                format!(
                    "sequencer_connection_validation = 2 : {sequencer}.SequencerConnectionValidation"
                ),
            ],
        ),
        (format!("{mediator}.SetConnectionResponse"), vec![]),
        (format!("{mediator}.LogoutRequest"), vec![]),
        (format!("{mediator}.LogoutResponse"), vec![]),
    ];
    entries.into_iter().collect()
}

/// What release line 3.5 changed in the messages of the `line_3_5` tree (notes §0.3, §3.1, §6.2).
fn line_3_5_changes() -> BTreeMap<&'static str, Vec<&'static str>> {
    BTreeMap::from([
        (
            "com.digitalasset.canton.admin.participant.v30.ImportPartyAcsRequest",
            vec![
                "acs_snapshot = 1 : bytes",
                "synchronizer_id = 2 : opt string",
                "workflow_id_prefix = 3 : opt string",
                "contract_import_mode = 4 : opt com.digitalasset.canton.admin.participant.v30.ContractImportMode",
                "representative_package_id_override = 5 : opt com.digitalasset.canton.admin.participant.v30.RepresentativePackageIdOverride",
                "party_id = 6 : opt string",
            ],
        ),
        (
            "com.digitalasset.canton.admin.health.v30.NotInitialized",
            vec![
                "active = 1 : bool",
                "waiting_for_external_input = 2 : com.digitalasset.canton.admin.health.v30.NotInitialized.WaitingForExternalInput",
                "version = 3 : string",
            ],
        ),
    ])
}

fn sorted(fields: &[impl AsRef<str>]) -> BTreeSet<String> {
    fields.iter().map(|f| f.as_ref().to_owned()).collect()
}

#[test]
fn every_3_4_message_has_the_appendix_fields() {
    let facts = appendix_types(&appendix());
    let ours = compiled(proto_canton::LINE_3_4_DESCRIPTORS);
    let supplement = supplement_messages();
    let mut checked = 0;
    let mut mismatches = Vec::new();
    let mut unknown = BTreeSet::new();
    for (name, fields) in &ours.messages {
        let expected: BTreeSet<String> = match (facts.messages.get(name), supplement.get(name)) {
            (Some(listed), None) => sorted(listed),
            (None, Some(listed)) => sorted(listed),
            (Some(_), Some(_)) => panic!("{name} is in the appendix and in the supplement list"),
            (None, None) => {
                unknown.insert(name.clone());
                continue;
            }
        };
        checked += 1;
        if sorted(fields) != expected {
            mismatches.push(format!(
                "{name}\n  ours:     {fields:?}\n  expected: {expected:?}"
            ));
        }
    }
    assert!(unknown.is_empty(), "messages without facts: {unknown:?}");
    assert!(mismatches.is_empty(), "{}", mismatches.join("\n"));
    let supplement_compiled = supplement
        .keys()
        .filter(|n| ours.messages.contains_key(*n))
        .count();
    assert_eq!(
        supplement_compiled,
        supplement.len(),
        "every supplement fact has a message"
    );
    eprintln!(
        "{checked} messages compared ({} from the supplement)",
        supplement.len()
    );
    assert!(checked > 200, "only {checked} messages compared");
}

#[test]
fn every_3_4_enum_has_the_appendix_values() {
    let facts = appendix_types(&appendix());
    let ours = compiled(proto_canton::LINE_3_4_DESCRIPTORS);
    let supplement_enums = BTreeMap::from([(
        "grpc.health.v1.HealthCheckResponse.ServingStatus".to_owned(),
        vec![
            "UNKNOWN=0",
            "SERVING=1",
            "NOT_SERVING=2",
            "SERVICE_UNKNOWN=3",
        ],
    )]);
    for (name, values) in &ours.enums {
        let expected = match (facts.enums.get(name), supplement_enums.get(name)) {
            (Some(listed), _) => sorted(listed),
            (None, Some(listed)) => sorted(listed),
            (None, None) => panic!("enum {name} has no facts"),
        };
        assert_eq!(sorted(values), expected, "enum {name}");
    }
    assert!(ours.enums.len() > 20, "only {} enums", ours.enums.len());
}

#[test]
fn line_3_5_messages_are_the_appendix_fields_plus_the_noted_changes() {
    let facts = appendix_types(&appendix());
    let ours = compiled(proto_canton::LINE_3_5_DESCRIPTORS);
    let changes = line_3_5_changes();
    for (name, fields) in &ours.messages {
        let expected = match changes.get(name.as_str()) {
            Some(changed) => sorted(changed),
            None => sorted(
                facts
                    .messages
                    .get(name)
                    .unwrap_or_else(|| panic!("3.5 message {name} has no facts")),
            ),
        };
        assert_eq!(sorted(fields), expected, "3.5 message {name}");
    }
    for name in changes.keys() {
        assert!(ours.messages.contains_key(*name), "3.5 tree lacks {name}");
        assert_ne!(
            sorted(&facts.messages[*name]),
            sorted(&changes[name]),
            "{name} is listed as changed but equals 3.4"
        );
    }
    // The changes are copied from the notes; fail if the notes stop saying so.
    let notes = notes();
    for fact in [
        "opt synchronizer_id=2, opt workflow_id_prefix=3, opt contract_import_mode=4, opt representative_package_id_override=5, opt party_id=6",
        "3.5+ adds `version = 3 : string`",
    ] {
        assert!(notes.contains(fact), "the notes no longer state: {fact}");
    }
}
