//! Authorization as kube-apiserver's RBAC authorizer decides it (pure): Roles and ClusterRoles
//! grant rules; RoleBindings grant them within their namespace, ClusterRoleBindings everywhere;
//! the group `system:masters` may do everything. The server keeps one [`Rbac`] built from the
//! stored objects and rebuilds it when they change.

use std::collections::{BTreeMap, HashMap};

use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, Subject,
};
use serde_json::Value;

/// The group whose members may do everything (as on a cluster).
pub const MASTERS: &str = "system:masters";
/// The group of every authenticated user.
pub const AUTHENTICATED: &str = "system:authenticated";

/// Who makes a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// User name.
    pub user: String,
    /// Groups.
    pub groups: Vec<String>,
    /// A uid, when impersonation named one (RBAC does not use it).
    pub uid: Option<String>,
    /// Extra attributes, when impersonation named some (RBAC does not use them).
    pub extra: BTreeMap<String, Vec<String>>,
    /// Who authenticated, when this identity is impersonated (`kubectl --as`).
    pub impersonator: Option<Box<Caller>>,
}

impl Caller {
    /// A user in `groups` (and `system:authenticated`).
    pub fn new(user: impl Into<String>, groups: &[&str]) -> Caller {
        let mut groups: Vec<String> = groups.iter().map(|g| g.to_string()).collect();
        if !groups.iter().any(|g| g == AUTHENTICATED) {
            groups.push(AUTHENTICATED.into());
        }
        Caller {
            user: user.into(),
            groups,
            uid: None,
            extra: BTreeMap::new(),
            impersonator: None,
        }
    }

    /// The identity of a ServiceAccount.
    pub fn service_account(namespace: &str, name: &str) -> Caller {
        let groups = Caller::service_account_groups(namespace);
        let groups: Vec<&str> = groups.iter().map(String::as_str).collect();
        Caller::new(service_account_user(namespace, name), &groups)
    }

    /// The user info of `userInfo` fields (SelfSubjectReview, admission reviews, audit).
    pub fn user_info(&self) -> serde_json::Value {
        let mut info = serde_json::json!({"username": self.user, "groups": self.groups});
        if let Some(uid) = &self.uid {
            info["uid"] = serde_json::json!(uid);
        }
        if !self.extra.is_empty() {
            info["extra"] = serde_json::json!(self.extra);
        }
        info
    }

    /// The groups of every ServiceAccount in `namespace`.
    pub fn service_account_groups(namespace: &str) -> Vec<String> {
        vec![
            "system:serviceaccounts".to_string(),
            format!("system:serviceaccounts:{namespace}"),
        ]
    }
}

/// The user name of a ServiceAccount.
pub fn service_account_user(namespace: &str, name: &str) -> String {
    format!("system:serviceaccount:{namespace}:{name}")
}

/// What a request asks to do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attributes {
    /// get, list, watch, create, update, patch, delete, deletecollection.
    pub verb: String,
    /// API group ("" for core).
    pub group: String,
    /// Plural resource.
    pub resource: String,
    /// Subresource (`status`, `token`, …).
    pub subresource: Option<String>,
    /// Namespace (None: cluster scope).
    pub namespace: Option<String>,
    /// Object name, when the request names one.
    pub name: Option<String>,
}

impl Attributes {
    /// `resource` or `resource/subresource`, as rules name it.
    pub fn resource_path(&self) -> String {
        match &self.subresource {
            Some(sub) => format!("{}/{sub}", self.resource),
            None => self.resource.clone(),
        }
    }

    /// kube-apiserver's wording of a denial.
    pub fn forbidden_message(&self, caller: &Caller) -> String {
        let mut target = if self.group.is_empty() {
            self.resource.clone()
        } else {
            format!("{}.{}", self.resource, self.group)
        };
        if let Some(name) = &self.name {
            target = format!("{target} {name:?}");
        }
        let scope = match &self.namespace {
            Some(ns) => format!("in the namespace {ns:?}"),
            None => "at the cluster scope".to_string(),
        };
        format!(
            "{target} is forbidden: User {:?} cannot {} resource {:?} in API group {:?} {scope}",
            caller.user,
            self.verb,
            self.resource_path(),
            self.group
        )
    }
}

/// Whether `rule` allows the request.
fn rule_allows(rule: &PolicyRule, attrs: &Attributes) -> bool {
    let any = |list: &Option<Vec<String>>, wanted: &str| {
        list.as_ref()
            .is_some_and(|l| l.iter().any(|v| v == "*" || v == wanted))
    };
    if !rule.verbs.iter().any(|v| v == "*" || *v == attrs.verb) {
        return false;
    }
    if !any(&rule.api_groups, &attrs.group) {
        return false;
    }
    let combined = attrs.resource_path();
    let resource_matches = rule.resources.as_ref().is_some_and(|resources| {
        resources.iter().any(|r| {
            r == "*"
                || *r == combined
                || attrs
                    .subresource
                    .as_ref()
                    .is_some_and(|sub| *r == format!("*/{sub}"))
        })
    });
    if !resource_matches {
        return false;
    }
    match &rule.resource_names {
        Some(names) if !names.is_empty() => attrs
            .name
            .as_ref()
            .is_some_and(|n| names.iter().any(|allowed| allowed == n)),
        _ => true,
    }
}

fn subject_matches(subject: &Subject, caller: &Caller, binding_namespace: Option<&str>) -> bool {
    match subject.kind.as_str() {
        "User" => subject.name == caller.user,
        "Group" => caller.groups.contains(&subject.name),
        "ServiceAccount" => {
            let namespace = subject
                .namespace
                .as_deref()
                .or(binding_namespace)
                .unwrap_or_default();
            caller.user == service_account_user(namespace, &subject.name)
        }
        _ => false,
    }
}

/// A binding: where it applies, what it grants, to whom.
#[derive(Clone, Debug)]
struct Binding {
    /// None: a ClusterRoleBinding.
    namespace: Option<String>,
    /// `ClusterRole` or `Role`.
    role_kind: String,
    role_name: String,
    subjects: Vec<Subject>,
}

/// The RBAC objects of the server, indexed.
#[derive(Clone, Debug, Default)]
pub struct Rbac {
    roles: HashMap<(String, String), Vec<PolicyRule>>,
    cluster_roles: HashMap<String, Vec<PolicyRule>>,
    bindings: Vec<Binding>,
}

impl Rbac {
    /// Index stored objects (any kind of the four; others are ignored). ClusterRoles with an
    /// `aggregationRule` get the rules of every ClusterRole its selectors pick.
    pub fn from_objects<'a>(objects: impl IntoIterator<Item = &'a Value>) -> Rbac {
        let mut rbac = Rbac::default();
        let mut aggregated: Vec<ClusterRole> = Vec::new();
        let mut plain: Vec<ClusterRole> = Vec::new();
        for object in objects {
            let kind = object
                .get("kind")
                .and_then(Value::as_str)
                .unwrap_or_default();
            match kind {
                "Role" => {
                    if let Ok(role) = serde_json::from_value::<Role>(object.clone()) {
                        let key = (
                            role.metadata.namespace.unwrap_or_default(),
                            role.metadata.name.unwrap_or_default(),
                        );
                        rbac.roles.insert(key, role.rules.unwrap_or_default());
                    }
                }
                "ClusterRole" => {
                    if let Ok(role) = serde_json::from_value::<ClusterRole>(object.clone()) {
                        if role.aggregation_rule.is_some() {
                            aggregated.push(role);
                        } else {
                            plain.push(role);
                        }
                    }
                }
                "RoleBinding" => {
                    if let Ok(b) = serde_json::from_value::<RoleBinding>(object.clone()) {
                        rbac.bindings.push(Binding {
                            namespace: Some(b.metadata.namespace.unwrap_or_default()),
                            role_kind: b.role_ref.kind,
                            role_name: b.role_ref.name,
                            subjects: b.subjects.unwrap_or_default(),
                        });
                    }
                }
                "ClusterRoleBinding" => {
                    if let Ok(b) = serde_json::from_value::<ClusterRoleBinding>(object.clone()) {
                        rbac.bindings.push(Binding {
                            namespace: None,
                            role_kind: b.role_ref.kind,
                            role_name: b.role_ref.name,
                            subjects: b.subjects.unwrap_or_default(),
                        });
                    }
                }
                _ => {}
            }
        }
        for role in &plain {
            rbac.cluster_roles.insert(
                role.metadata.name.clone().unwrap_or_default(),
                role.rules.clone().unwrap_or_default(),
            );
        }
        for role in aggregated {
            let selectors = role
                .aggregation_rule
                .and_then(|a| a.cluster_role_selectors)
                .unwrap_or_default();
            let mut rules = role.rules.unwrap_or_default();
            for source in &plain {
                let labels: BTreeMap<String, String> =
                    source.metadata.labels.clone().unwrap_or_default();
                let picked = selectors.iter().any(|s| {
                    s.match_labels.as_ref().is_some_and(|want| {
                        !want.is_empty() && want.iter().all(|(k, v)| labels.get(k) == Some(v))
                    })
                });
                if picked {
                    rules.extend(source.rules.clone().unwrap_or_default());
                }
            }
            rbac.cluster_roles
                .insert(role.metadata.name.unwrap_or_default(), rules);
        }
        rbac
    }

    fn rules_of(&self, binding: &Binding) -> &[PolicyRule] {
        let rules = match (binding.role_kind.as_str(), &binding.namespace) {
            ("ClusterRole", _) => self.cluster_roles.get(&binding.role_name),
            ("Role", Some(ns)) => self.roles.get(&(ns.clone(), binding.role_name.clone())),
            _ => None,
        };
        rules.map(Vec::as_slice).unwrap_or_default()
    }

    /// The bindings that apply to `caller` for a request in `namespace`.
    fn bindings_for<'s>(
        &'s self,
        caller: &'s Caller,
        namespace: Option<&'s str>,
    ) -> impl Iterator<Item = &'s Binding> + 's {
        self.bindings.iter().filter(move |b| {
            let in_scope = match (&b.namespace, namespace) {
                (None, _) => true,
                (Some(bns), Some(ns)) => bns == ns,
                (Some(_), None) => false,
            };
            in_scope
                && b.subjects
                    .iter()
                    .any(|s| subject_matches(s, caller, b.namespace.as_deref()))
        })
    }

    /// Whether `caller` may do what `attrs` asks.
    pub fn allows(&self, caller: &Caller, attrs: &Attributes) -> bool {
        if caller.groups.iter().any(|g| g == MASTERS) {
            return true;
        }
        self.bindings_for(caller, attrs.namespace.as_deref())
            .any(|b| self.rules_of(b).iter().any(|r| rule_allows(r, attrs)))
    }

    /// The rules of the role a binding in `namespace` (None: a ClusterRoleBinding) refers to
    /// as `kind` (`Role` or `ClusterRole`) and `name`; None if there is no such role.
    pub fn role_rules(
        &self,
        kind: &str,
        name: &str,
        namespace: Option<&str>,
    ) -> Option<&[PolicyRule]> {
        let rules = match (kind, namespace) {
            ("ClusterRole", _) => self.cluster_roles.get(name),
            ("Role", Some(ns)) => self.roles.get(&(ns.to_string(), name.to_string())),
            _ => None,
        };
        rules.map(Vec::as_slice)
    }

    /// The rules of `rules` that grant something `caller` does not hold in `namespace` (None:
    /// cluster-wide). A rule is held when every request it allows, wildcards taken literally,
    /// is allowed to `caller`: `*` is only held through `*`, and a rule for every name only
    /// through one that names none. Non-resource URLs are not authorized by this server, so
    /// granting them grants nothing.
    pub fn not_held<'r>(
        &self,
        caller: &Caller,
        rules: &'r [PolicyRule],
        namespace: Option<&str>,
    ) -> Vec<&'r PolicyRule> {
        rules
            .iter()
            .filter(|rule| !self.holds(caller, rule, namespace))
            .collect()
    }

    fn holds(&self, caller: &Caller, rule: &PolicyRule, namespace: Option<&str>) -> bool {
        let names: Vec<Option<&String>> = match &rule.resource_names {
            Some(names) if !names.is_empty() => names.iter().map(Some).collect(),
            _ => vec![None],
        };
        let groups = rule.api_groups.as_deref().unwrap_or_default();
        let resources = rule.resources.as_deref().unwrap_or_default();
        rule.verbs.iter().all(|verb| {
            groups.iter().all(|group| {
                resources.iter().all(|resource| {
                    let (resource, subresource) = match resource.split_once('/') {
                        Some((resource, sub)) => (resource, Some(sub.to_string())),
                        None => (resource.as_str(), None),
                    };
                    names.iter().all(|name| {
                        self.allows(
                            caller,
                            &Attributes {
                                verb: verb.clone(),
                                group: group.clone(),
                                resource: resource.to_string(),
                                subresource: subresource.clone(),
                                namespace: namespace.map(str::to_string),
                                name: name.cloned(),
                            },
                        )
                    })
                })
            })
        })
    }

    /// Every rule `caller` has in `namespace` (cluster-wide ones included), for
    /// SelfSubjectRulesReview.
    pub fn rules_for(&self, caller: &Caller, namespace: &str) -> Vec<PolicyRule> {
        if caller.groups.iter().any(|g| g == MASTERS) {
            return vec![PolicyRule {
                api_groups: Some(vec!["*".into()]),
                resources: Some(vec!["*".into()]),
                verbs: vec!["*".into()],
                ..Default::default()
            }];
        }
        self.bindings_for(caller, Some(namespace))
            .flat_map(|b| self.rules_of(b).iter().cloned())
            .collect()
    }
}

#[cfg(test)]
mod tests;
