//! `metav1.Condition` handling: one helper sets a condition, keeping `lastTransitionTime` unless
//! the status flips, so a status recomputed from unchanged facts compares equal and is not
//! written again.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

/// Set (or add) condition `type_` to `status` with a reason and message.
pub fn set(
    conditions: &mut Vec<Condition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: impl Into<String>,
    observed_generation: Option<i64>,
    now: &Time,
) {
    let status = if status { "True" } else { "False" };
    let message = message.into();
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(existing) => {
            if existing.status != status {
                existing.last_transition_time = now.clone();
            }
            existing.status = status.to_string();
            existing.reason = reason.to_string();
            existing.message = message;
            existing.observed_generation = observed_generation;
        }
        None => conditions.push(Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            observed_generation,
            last_transition_time: now.clone(),
        }),
    }
}

/// Whether condition `type_` is True.
pub fn is_true(conditions: &[Condition], type_: &str) -> bool {
    conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Time {
        Time(jiff::Timestamp::from_second(seconds).expect("time"))
    }

    #[test]
    fn a_condition_keeps_its_transition_time_until_its_status_flips() {
        let mut conditions = Vec::new();
        set(
            &mut conditions,
            "Ready",
            false,
            "Waiting",
            "a",
            Some(1),
            &at(10),
        );
        set(
            &mut conditions,
            "Ready",
            false,
            "StillWaiting",
            "b",
            Some(2),
            &at(20),
        );
        assert_eq!(conditions[0].last_transition_time, at(10));
        assert_eq!(conditions[0].reason, "StillWaiting");
        set(
            &mut conditions,
            "Ready",
            true,
            "Done",
            "c",
            Some(2),
            &at(30),
        );
        assert_eq!(conditions[0].last_transition_time, at(30));
        assert!(is_true(&conditions, "Ready"));
        assert_eq!(conditions.len(), 1);
    }
}
