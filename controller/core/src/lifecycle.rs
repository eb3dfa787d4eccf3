//! The device lifecycle state machine, as tables.
//!
//! `spec.lifecycle` ([`Lifecycle`]) is what the operator wants; `status.phase` ([`Phase`]) is
//! what is true. The CRDs carry the same rules as CEL transition rules, so a real cluster
//! refuses what these tables refuse; a test evaluates those rules for every pair and compares.
//!
//! ```text
//!  Planned ──► Provisioned ──(first connect)──► Servicing ◄──► Maintenance
//!     │              │                              │              │
//!     └──────────────┴──────────────► Decommissioned ◄─────────────┘   (terminal)
//! ```

use devplane_api::v1alpha1::{Lifecycle, Phase};

/// Changes of `spec.lifecycle` an update may make (staying put is always allowed).
pub const LIFECYCLE_TRANSITIONS: &[(Lifecycle, Lifecycle)] = &[
    (Lifecycle::Planned, Lifecycle::Servicing),
    (Lifecycle::Planned, Lifecycle::Decommissioned),
    (Lifecycle::Servicing, Lifecycle::Maintenance),
    (Lifecycle::Servicing, Lifecycle::Decommissioned),
    (Lifecycle::Maintenance, Lifecycle::Servicing),
    (Lifecycle::Maintenance, Lifecycle::Decommissioned),
];

/// Changes of `status.phase` a status update may make (staying put is always allowed).
pub const PHASE_TRANSITIONS: &[(Phase, Phase)] = &[
    (Phase::Planned, Phase::Provisioned),
    (Phase::Planned, Phase::Decommissioned),
    (Phase::Provisioned, Phase::Servicing),
    (Phase::Provisioned, Phase::Decommissioned),
    (Phase::Servicing, Phase::Maintenance),
    (Phase::Servicing, Phase::Decommissioned),
    (Phase::Maintenance, Phase::Servicing),
    (Phase::Maintenance, Phase::Decommissioned),
];

/// Whether `spec.lifecycle` may change from `from` to `to`.
pub fn lifecycle_change_allowed(from: Lifecycle, to: Lifecycle) -> bool {
    from == to || LIFECYCLE_TRANSITIONS.contains(&(from, to))
}

/// Whether `status.phase` may change from `from` to `to`.
pub fn phase_change_allowed(from: Phase, to: Phase) -> bool {
    from == to || PHASE_TRANSITIONS.contains(&(from, to))
}

/// Whether a device in this phase holds valid credentials.
pub fn has_credentials(phase: Phase) -> bool {
    matches!(
        phase,
        Phase::Provisioned | Phase::Servicing | Phase::Maintenance
    )
}

/// Whether the desired lifecycle calls for credentials.
pub fn wants_credentials(desired: Lifecycle) -> bool {
    matches!(desired, Lifecycle::Servicing | Lifecycle::Maintenance)
}

/// The phase a device moves to next, one allowed step at a time: from `current` (None for a
/// new device, which counts as Planned), towards `desired`, knowing whether the device has ever connected.
///
/// Calling it again with its own result converges in at most three steps; every step is in
/// [`PHASE_TRANSITIONS`].
pub fn next_phase(current: Option<Phase>, desired: Lifecycle, has_connected: bool) -> Phase {
    // A new device starts out Planned.
    let current = current.unwrap_or(Phase::Planned);
    match (current, desired) {
        (Phase::Decommissioned, _) => Phase::Decommissioned,
        (_, Lifecycle::Decommissioned) => Phase::Decommissioned,
        // A device cannot go back to Planned: it stays where it is.
        (phase, Lifecycle::Planned) => phase,
        (Phase::Planned, Lifecycle::Servicing | Lifecycle::Maintenance) => Phase::Provisioned,
        (Phase::Provisioned, Lifecycle::Servicing | Lifecycle::Maintenance) if has_connected => {
            Phase::Servicing
        }
        (Phase::Provisioned, _) => Phase::Provisioned,
        (Phase::Servicing, Lifecycle::Maintenance) => Phase::Maintenance,
        (Phase::Servicing, Lifecycle::Servicing) => Phase::Servicing,
        (Phase::Maintenance, Lifecycle::Servicing) => Phase::Servicing,
        (Phase::Maintenance, Lifecycle::Maintenance) => Phase::Maintenance,
    }
}

/// The phase [`next_phase`] settles on, following every step.
pub fn settled_phase(current: Option<Phase>, desired: Lifecycle, has_connected: bool) -> Phase {
    let mut phase = next_phase(current, desired, has_connected);
    loop {
        let next = next_phase(Some(phase), desired, has_connected);
        if next == phase {
            return phase;
        }
        phase = next;
    }
}

#[cfg(test)]
mod tests;
