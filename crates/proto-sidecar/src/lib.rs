//! Our bus messages (envelopes, commands, acks, heartbeats, node state, fences, proposals) and the coordinator gRPC API.
