//! An agent ack as the coordinator's ack consumer reads it: subject, envelope, signature, body
//! and the node the subject names. The harness lives in `canton_coordinator::fuzzing` so the
//! saved corpus replays as a normal test on stable.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    canton_coordinator::fuzzing::check_ack_message(data);
});
