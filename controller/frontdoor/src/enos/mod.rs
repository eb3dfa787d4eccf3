//! The EnOS device-protocol profile: devices built for EnOS's Device Connectivity & Management
//! connect to the front door unchanged, on a listener of their own. It is an adapter: an EnOS
//! login resolves to the same identity, topics and envelopes translate to the native
//! protocol's uplink and downlink, and from there everything is shared — the registry, the
//! authorization rule, validation and ingest, presence and twin, commands and gateway logins.
//!
//! - [`sign`], [`topic`], [`envelope`]: the pure parts (login signatures, the topic tree,
//!   request and reply envelopes and their translation);
//! - [`activate`]: dynamic activation, a connection of its own;
//! - the session glue lives with the MQTT session (`mqtt::session::enos`).
//!
//! `docs/enos.md` is the contract: the mapping, and what is and is not supported.

pub mod activate;
pub mod envelope;
pub mod sign;
pub mod topic;
