//! canton-ops: the operator CLI over the coordinator API.
