//! canton-sim: a Canton stand-in node on Postgres that serves the same admin API for tests and the demo.
