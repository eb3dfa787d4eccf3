//! MQTT 3.1.1 and 5 for devices and applications: the codec adapter and the session.

pub mod codec;
pub mod provision;
pub mod session;
