//! Properties of envelope verification over random bodies and tamperings.

use proptest::prelude::*;
use prost::Message;
use sidecar_trust::proto::SignedEnvelope;
use sidecar_trust::{RejectionReason, check_command};

use crate::fixtures::*;

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 10_000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    /// Flipping any bit of the body or the signature of a valid envelope never yields an
    /// accepted command.
    #[test]
    fn any_tampering_is_refused(flip_in_body in any::<bool>(), index in any::<prop::sample::Index>(), bit in 0u8..8, attempt in 1u32..1000) {
        let agent = Agent::new();
        let mut command = command(backup());
        command.attempt = attempt;
        let mut envelope = SignedEnvelope::decode(signed_command(&command).as_slice()).unwrap();
        let target = if flip_in_body { &mut envelope.body } else { &mut envelope.signature };
        let at = index.index(target.len());
        target[at] ^= 1 << bit;
        let rejection = check_command(&envelope.encode_to_vec(), &agent.context()).unwrap_err();
        prop_assert!(matches!(rejection.reason, RejectionReason::BadSignature), "{rejection}");
    }

    /// Arbitrary bytes never panic and never pass.
    #[test]
    fn arbitrary_bytes_are_refused(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let agent = Agent::new();
        prop_assert!(check_command(&bytes, &agent.context()).is_err());
        sidecar_trust::fuzzing::check_envelope_bytes(&bytes);
    }
}
