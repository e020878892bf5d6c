//! The canton-agent sidecar: probes, heartbeats, node state and the signed command path against one Canton node.
