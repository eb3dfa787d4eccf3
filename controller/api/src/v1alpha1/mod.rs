//! `iot.devplane.io/v1alpha1`: one module per kind, plus what they share.

// clippy reads the repeated `type_ = ...` of separate `printcolumn(...)` entries as duplicated
// attributes; they are not.
#[allow(clippy::duplicated_attributes)]
pub mod application;
pub mod common;
#[allow(clippy::duplicated_attributes)]
pub mod device;
#[allow(clippy::duplicated_attributes)]
pub mod device_command;
#[allow(clippy::duplicated_attributes)]
pub mod device_model;
#[allow(clippy::duplicated_attributes)]
pub mod gateway;
#[allow(clippy::duplicated_attributes)]
pub mod onboarding_batch;
#[allow(clippy::duplicated_attributes)]
pub mod provisioning_policy;

pub use application::*;
pub use common::*;
pub use device::*;
pub use device_command::*;
pub use device_model::*;
pub use gateway::*;
pub use onboarding_batch::*;
pub use provisioning_policy::*;
