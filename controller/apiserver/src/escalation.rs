//! RBAC's rule against escalation, as kube-apiserver enforces it: a Role or ClusterRole may
//! only grant what its writer holds (in the role's namespace, or cluster-wide), unless the
//! writer may `escalate` it; a binding may only bind a role whose rules its writer holds where
//! the binding applies, unless the writer may `bind` that role. Otherwise whoever may write
//! roles or bindings could give themselves anything.

use k8s_openapi::api::rbac::v1::{ClusterRole, PolicyRule, Role, RoleRef};
use serde_json::Value;

use crate::authz::{Attributes, Caller, MASTERS, Rbac};
use crate::builtin::Builtin;
use crate::error::{ApiError, ApiResult};
use crate::object;
use crate::registry::Resource;

const GROUP: &str = "rbac.authorization.k8s.io";

/// Refuses the write of `object` (a role or a binding of `resource`, in `namespace`) by
/// `caller` if it would grant more than `caller` holds.
pub fn check(
    rbac: &Rbac,
    caller: &Caller,
    resource: &Resource,
    namespace: Option<&str>,
    object: &Value,
) -> ApiResult<()> {
    if caller.groups.iter().any(|g| g == MASTERS) {
        return Ok(());
    }
    let name = object::name(object).map(str::to_string);
    let may = |verb: &str, resource: &str, name: Option<String>| {
        rbac.allows(
            caller,
            &Attributes {
                verb: verb.into(),
                group: GROUP.into(),
                resource: resource.into(),
                subresource: None,
                namespace: namespace.map(str::to_string),
                name,
            },
        )
    };
    let (rules, scope) = match resource.builtin {
        Some(Builtin::Role) => {
            if may("escalate", "roles", name.clone()) {
                return Ok(());
            }
            let role: Role = parsed(object)?;
            (role.rules.unwrap_or_default(), namespace)
        }
        Some(Builtin::ClusterRole) => {
            if may("escalate", "clusterroles", name.clone()) {
                return Ok(());
            }
            let role: ClusterRole = parsed(object)?;
            if role.aggregation_rule.is_some() {
                // Its rules are whatever other ClusterRoles it picks, now and later.
                return Err(refused(
                    resource,
                    name.as_deref(),
                    caller,
                    "must be allowed to escalate clusterroles to use an aggregationRule".into(),
                ));
            }
            (role.rules.unwrap_or_default(), None)
        }
        Some(Builtin::RoleBinding | Builtin::ClusterRoleBinding) => {
            let role_ref: RoleRef = object
                .get("roleRef")
                .cloned()
                .map(serde_json::from_value)
                .transpose()
                .map_err(|e| ApiError::bad_request(format!("roleRef: {e}")))?
                .unwrap_or_default();
            let plural = if role_ref.kind == "ClusterRole" {
                "clusterroles"
            } else {
                "roles"
            };
            if may("bind", plural, Some(role_ref.name.clone())) {
                return Ok(());
            }
            let scope = if resource.builtin == Some(Builtin::RoleBinding) {
                namespace
            } else {
                None
            };
            match rbac.role_rules(&role_ref.kind, &role_ref.name, scope) {
                Some(rules) => (rules.to_vec(), scope),
                None => {
                    return Err(refused(
                        resource,
                        name.as_deref(),
                        caller,
                        format!(
                            "the {} {:?} it refers to does not exist, and binding it needs the bind verb on it",
                            role_ref.kind, role_ref.name
                        ),
                    ));
                }
            }
        }
        _ => return Ok(()),
    };
    let missing = rbac.not_held(caller, &rules, scope);
    if missing.is_empty() {
        return Ok(());
    }
    let listed: Vec<String> = missing.iter().map(|rule| describe(rule)).collect();
    Err(refused(
        resource,
        name.as_deref(),
        caller,
        format!(
            "is attempting to grant RBAC permissions not currently held:\n{}",
            listed.join("\n")
        ),
    ))
}

/// Whether an update changes what a role or a binding grants (its rules, aggregation rule,
/// role or subjects): only then is it checked, as kube-apiserver does, so that a writer may
/// still change labels or finalizers of a role that grants more than it holds.
pub fn grants_change(old: &Value, new: &Value) -> bool {
    ["rules", "aggregationRule", "roleRef", "subjects"]
        .iter()
        .any(|field| old.get(field) != new.get(field))
}

fn parsed<T: serde::de::DeserializeOwned>(object: &Value) -> ApiResult<T> {
    serde_json::from_value(object.clone()).map_err(|e| ApiError::bad_request(e.to_string()))
}

/// kube-apiserver's wording: `<plural>.rbac.authorization.k8s.io "<name>" is forbidden: user
/// "<user>" (groups=[…]) <why>`.
fn refused(resource: &Resource, name: Option<&str>, caller: &Caller, why: String) -> ApiError {
    ApiError::forbidden(format!(
        "{}.{GROUP} {:?} is forbidden: user {:?} (groups={:?}) {why}",
        resource.plural,
        name.unwrap_or_default(),
        caller.user,
        caller.groups
    ))
}

fn describe(rule: &PolicyRule) -> String {
    let mut parts = vec![
        format!(
            "APIGroups:{:?}",
            rule.api_groups.clone().unwrap_or_default()
        ),
        format!("Resources:{:?}", rule.resources.clone().unwrap_or_default()),
    ];
    if let Some(names) = rule.resource_names.as_ref().filter(|n| !n.is_empty()) {
        parts.push(format!("ResourceNames:{names:?}"));
    }
    parts.push(format!("Verbs:{:?}", rule.verbs));
    format!("{{{}}}", parts.join(", "))
}
