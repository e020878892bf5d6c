//! Typed Canton admin, health and ledger-end client over proto-canton, with release-line profiles.
