//! `metav1.Condition` handling, shared with the front door (see `devplane_api::conditions`).

pub use devplane_api::conditions::*;
