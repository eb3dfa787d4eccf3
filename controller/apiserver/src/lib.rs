//! A Kubernetes-compatible API server over devplane's store: CRDs and the custom resources
//! they define, core Namespaces, Secrets, ConfigMaps and Events, events.k8s.io Events and
//! coordination.k8s.io Leases — with discovery, OpenAPI v2 and v3, watch, every patch type,
//! server-side apply, tables, finalizers, garbage collection and CRD schema enforcement. Real
//! kubectl and kube-rs clients are its judges.

mod apply;
pub mod audit;
pub mod authz;
pub mod builtin;
pub mod discovery;
pub mod error;
mod escalation;
mod gc;
mod impersonation;
pub mod jsonpath;
pub mod object;
pub mod openapi;
pub mod openapi_v2;
pub mod path;
pub mod protobuf;
pub mod registry;
pub mod request;
mod rest;
mod review;
pub mod sa_token;
pub mod selector;
pub mod server;
pub mod ssa;
pub mod strategic;
pub mod table;
pub mod watch;
pub mod webhooks;

pub use error::{ApiError, ApiResult};
pub use rest::validate::name_and_label_errors;
pub use server::{ApiServer, ApiServerConfig, Caller};
