//! Signing and checking of envelopes and acks, key ids, organisations, the signed network configuration and agent policy.
