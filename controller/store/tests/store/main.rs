//! The store's integration tests: the conformance suite on every backend, plus tests of
//! what only the embedded backend promises (durability, crash safety, group commit).

mod conformance;
mod embedded;
mod etcd;
mod support;
