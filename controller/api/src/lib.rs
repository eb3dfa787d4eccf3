//! devplane's API: the custom resource types of `iot.devplane.io/v1alpha1`, the constants every
//! other crate shares (labels, finalizers, condition types, field managers), and [`all_crds`],
//! the single source of truth for the CRDs under `crds/`.
//!
//! This crate does no IO.

pub mod conditions;
pub mod constants;
pub mod crds;
pub mod library;
pub mod v1alpha1;

pub use crds::{all_crds, crd_file_name};

/// The API group of every devplane resource.
pub const GROUP: &str = "iot.devplane.io";
/// The served and stored API version.
pub const VERSION: &str = "v1alpha1";
/// `apiVersion` as it appears in manifests.
pub const API_VERSION: &str = "iot.devplane.io/v1alpha1";
