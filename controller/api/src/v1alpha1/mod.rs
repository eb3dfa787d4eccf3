//! `iot.devplane.io/v1alpha1`: one module per kind, plus what they share.

pub mod common;
pub mod device;
pub mod device_command;
pub mod device_model;
pub mod gateway;
pub mod onboarding_batch;

pub use common::*;
pub use device::*;
pub use device_command::*;
pub use device_model::*;
pub use gateway::*;
pub use onboarding_batch::*;
