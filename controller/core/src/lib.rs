//! devplane's domain logic, free of IO: resolving models through `extends`, validating values
//! and payloads against a resolved model, the lifecycle state machine, and expanding
//! onboarding batches into devices.
//!
//! Nothing here knows tokio or a Kubernetes client; inputs are the API types and plain maps.

pub mod admission;
pub mod enos;
pub mod gateway;
pub mod lifecycle;
pub mod manifests;
pub mod model;
pub mod naming;
pub mod onboarding;
pub mod payload;
pub mod provisioning;
pub mod report;
pub mod spreadsheet;
pub mod value;

pub use model::{ModelKey, ResolveError, ResolvedModel};

#[cfg(test)]
mod test_support;
