//! Our protobuf definitions of the Canton admin and ledger API subset, with Canton's packages, paths and field numbers.
