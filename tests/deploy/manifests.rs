//! `kubectl kustomize manifests/deploy` (and the production overlay) parsed into k8s-openapi's
//! types and checked as a whole: the references between objects hold, every listener flag has
//! its container port, Service port and probe, the pods are locked down, and each identity
//! gets only what its code calls.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;

use k8s_openapi::api::admissionregistration::v1::ValidatingWebhookConfiguration;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Container, Namespace, PodSpec, Service, ServiceAccount};
use k8s_openapi::api::networking::v1::NetworkPolicy;
use k8s_openapi::api::policy::v1::PodDisruptionBudget;
use k8s_openapi::api::rbac::v1::{
    ClusterRole, ClusterRoleBinding, PolicyRule, Role, RoleBinding, RoleRef, Subject,
};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::serde::Serialize;
use k8s_openapi::serde::de::DeserializeOwned;
use serde_json::Value;

use super::{documents, kustomize};
use crate::support::{repo, stdout};

/// The base and the example overlay: both must pass every check.
const INSTALLS: [&str; 2] = [
    "manifests/deploy",
    "manifests/deploy/overlays/production-site",
];

/// The Lease the controller replicas compete for (`controller::LEASE_NAME` in the runtime).
const LEASE_NAME: &str = "devplane-controller";

/// Every rendered object, typed.
#[derive(Default)]
struct Install {
    namespaces: Vec<Namespace>,
    crds: Vec<CustomResourceDefinition>,
    service_accounts: Vec<ServiceAccount>,
    cluster_roles: Vec<ClusterRole>,
    cluster_role_bindings: Vec<ClusterRoleBinding>,
    roles: Vec<Role>,
    role_bindings: Vec<RoleBinding>,
    deployments: Vec<Deployment>,
    services: Vec<Service>,
    budgets: Vec<PodDisruptionBudget>,
    network_policies: Vec<NetworkPolicy>,
    webhooks: Vec<ValidatingWebhookConfiguration>,
}

/// Every number as a float: YAML writes `86400` where a typed schema says `86400.0`.
fn numbers_as_floats(value: &Value) -> Value {
    match value {
        Value::Number(n) => n
            .as_f64()
            .and_then(serde_json::Number::from_f64)
            .map_or(Value::Null, Value::Number),
        Value::Array(items) => Value::Array(items.iter().map(numbers_as_floats).collect()),
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (k.clone(), numbers_as_floats(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Parse into `T` and back: anything the type does not know (a misspelt or misplaced field)
/// would be dropped on the way, so the round trip must give the same document.
fn typed<T: DeserializeOwned + Serialize>(object: &Value) -> T {
    let what = format!("{} {}", object["kind"], object["metadata"]["name"]);
    let parsed: T = serde_json::from_value(object.clone())
        .unwrap_or_else(|e| panic!("{what} does not parse into its type: {e}"));
    let back = serde_json::to_value(&parsed).expect("serializes");
    assert_eq!(
        numbers_as_floats(&back),
        numbers_as_floats(object),
        "{what} has fields its type does not know (misspelt or misplaced)"
    );
    parsed
}

impl Install {
    fn from_documents(objects: &[Value]) -> Install {
        let mut install = Install::default();
        for object in objects {
            match object["kind"].as_str().unwrap_or_default() {
                "Namespace" => install.namespaces.push(typed(object)),
                "CustomResourceDefinition" => install.crds.push(typed(object)),
                "ServiceAccount" => install.service_accounts.push(typed(object)),
                "ClusterRole" => install.cluster_roles.push(typed(object)),
                "ClusterRoleBinding" => install.cluster_role_bindings.push(typed(object)),
                "Role" => install.roles.push(typed(object)),
                "RoleBinding" => install.role_bindings.push(typed(object)),
                "Deployment" => install.deployments.push(typed(object)),
                "Service" => install.services.push(typed(object)),
                "PodDisruptionBudget" => install.budgets.push(typed(object)),
                "NetworkPolicy" => install.network_policies.push(typed(object)),
                "ValidatingWebhookConfiguration" => install.webhooks.push(typed(object)),
                other => panic!("unexpected kind {other} in the install"),
            }
        }
        install
    }

    fn render(dir: &str) -> Install {
        Install::from_documents(&documents(&kustomize(dir)))
    }

    fn deployment(&self, name: &str) -> &Deployment {
        self.deployments
            .iter()
            .find(|d| d.metadata.name.as_deref() == Some(name))
            .unwrap_or_else(|| panic!("no Deployment {name}"))
    }

    /// The Deployments whose pods `selector` (a plain label map) selects.
    fn selected(&self, selector: &BTreeMap<String, String>) -> Vec<&Deployment> {
        self.deployments
            .iter()
            .filter(|d| {
                let labels = pod_labels(d);
                !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
            })
            .collect()
    }

    /// Every rule bound to a ServiceAccount, with the namespace it holds in (None: cluster).
    fn rules_of(&self, namespace: &str, account: &str) -> Vec<(Option<String>, PolicyRule)> {
        let is_subject = |subjects: &Option<Vec<Subject>>| {
            subjects.iter().flatten().any(|s| {
                s.kind == "ServiceAccount"
                    && s.name == account
                    && s.namespace.as_deref() == Some(namespace)
            })
        };
        let mut rules = Vec::new();
        for binding in &self.cluster_role_bindings {
            if is_subject(&binding.subjects) {
                for rule in self.role_rules(&binding.role_ref, None) {
                    rules.push((None, rule));
                }
            }
        }
        for binding in &self.role_bindings {
            if is_subject(&binding.subjects) {
                let scope = binding.metadata.namespace.clone();
                for rule in self.role_rules(&binding.role_ref, scope.as_deref()) {
                    rules.push((scope.clone(), rule));
                }
            }
        }
        rules
    }

    fn role_rules(&self, role_ref: &RoleRef, namespace: Option<&str>) -> Vec<PolicyRule> {
        match role_ref.kind.as_str() {
            "ClusterRole" => self
                .cluster_roles
                .iter()
                .filter(|r| r.metadata.name.as_deref() == Some(role_ref.name.as_str()))
                .flat_map(|r| r.rules.clone().unwrap_or_default())
                .collect(),
            _ => self
                .roles
                .iter()
                .filter(|r| {
                    r.metadata.name.as_deref() == Some(role_ref.name.as_str())
                        && r.metadata.namespace.as_deref() == namespace
                })
                .flat_map(|r| r.rules.clone().unwrap_or_default())
                .collect(),
        }
    }
}

fn pod_labels(deployment: &Deployment) -> BTreeMap<String, String> {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.metadata.as_ref())
        .and_then(|m| m.labels.clone())
        .unwrap_or_default()
}

fn pod_spec(deployment: &Deployment) -> &PodSpec {
    deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("a pod template")
}

fn name_of(deployment: &Deployment) -> &str {
    deployment.metadata.name.as_deref().unwrap_or_default()
}

fn match_labels(selector: &LabelSelector) -> BTreeMap<String, String> {
    assert!(
        selector.match_expressions.is_none(),
        "selectors here are plain label maps"
    );
    selector.match_labels.clone().unwrap_or_default()
}

/// The subcommand and `--name=value` flags of a container (the manifests spell every flag so).
fn command_line(container: &Container) -> (String, BTreeMap<String, String>) {
    let args = container.args.clone().unwrap_or_default();
    let (subcommand, rest) = args.split_first().expect("a subcommand");
    let flags = rest
        .iter()
        .map(|arg| {
            let (flag, value) = arg
                .split_once('=')
                .unwrap_or_else(|| panic!("{arg}: flags are written as --name=value"));
            assert!(flag.starts_with("--"), "{arg} is not a long flag");
            (flag.to_string(), value.to_string())
        })
        .collect();
    (subcommand.clone(), flags)
}

/// The ports a container is told to listen on, with their protocol: every `--…-addr` flag.
fn listen_ports(flags: &BTreeMap<String, String>) -> BTreeMap<String, (i32, &'static str)> {
    flags
        .iter()
        .filter(|(flag, _)| flag.ends_with("-addr"))
        .map(|(flag, value)| {
            let addr: std::net::SocketAddr = value
                .parse()
                .unwrap_or_else(|e| panic!("{flag}={value}: {e}"));
            assert!(
                addr.ip().is_unspecified(),
                "{flag}={value}: a pod listens on 0.0.0.0"
            );
            let protocol = if flag.starts_with("--coap") {
                "UDP"
            } else {
                "TCP"
            };
            (flag.clone(), (i32::from(addr.port()), protocol))
        })
        .collect()
}

/// A container port by name or number, with its protocol.
fn resolve_port(container: &Container, port: &IntOrString) -> Option<(i32, String)> {
    container.ports.iter().flatten().find_map(|p| {
        let protocol = p.protocol.clone().unwrap_or_else(|| "TCP".into());
        let hit = match port {
            IntOrString::Int(n) => p.container_port == *n,
            IntOrString::String(name) => p.name.as_deref() == Some(name.as_str()),
        };
        hit.then_some((p.container_port, protocol))
    })
}

/// The routes of the admin endpoint, read from its router (controller/runtime/src/admin.rs).
fn admin_routes() -> BTreeSet<String> {
    let source =
        std::fs::read_to_string(repo().join("controller/runtime/src/admin.rs")).expect("admin.rs");
    source
        .split(".route(\"")
        .skip(1)
        .filter_map(|rest| rest.split('"').next().map(str::to_string))
        .collect()
}

/// Every problem with the references between objects, the listeners and the pods' hardening.
fn problems(install: &Install) -> Vec<String> {
    let mut problems = Vec::new();
    let namespaces: BTreeSet<_> = install
        .namespaces
        .iter()
        .filter_map(|n| n.metadata.name.clone())
        .collect();
    let accounts: BTreeSet<(String, String)> = install
        .service_accounts
        .iter()
        .map(|a| {
            (
                a.metadata.namespace.clone().unwrap_or_default(),
                a.metadata.name.clone().unwrap_or_default(),
            )
        })
        .collect();
    let routes = admin_routes();

    // Bindings: a role that exists, subjects that exist.
    let cluster_roles: BTreeSet<_> = install
        .cluster_roles
        .iter()
        .filter_map(|r| r.metadata.name.clone())
        .collect();
    let mut check_binding = |what: String,
                             namespace: Option<&String>,
                             role_ref: &RoleRef,
                             subjects: &Option<Vec<Subject>>| {
        let role_exists = match role_ref.kind.as_str() {
            "ClusterRole" => cluster_roles.contains(&role_ref.name),
            "Role" => install.roles.iter().any(|r| {
                r.metadata.name.as_ref() == Some(&role_ref.name)
                    && r.metadata.namespace.as_ref() == namespace
            }),
            other => {
                problems.push(format!("{what}: roleRef kind {other}"));
                true
            }
        };
        if !role_exists {
            problems.push(format!(
                "{what}: {} {} does not exist",
                role_ref.kind, role_ref.name
            ));
        }
        for subject in subjects.iter().flatten() {
            let key = (
                subject.namespace.clone().unwrap_or_default(),
                subject.name.clone(),
            );
            if subject.kind != "ServiceAccount" || !accounts.contains(&key) {
                problems.push(format!(
                    "{what}: subject {} {}/{} is not a ServiceAccount of the install",
                    subject.kind, key.0, key.1
                ));
            }
        }
    };
    for b in &install.cluster_role_bindings {
        let what = format!("ClusterRoleBinding {:?}", b.metadata.name);
        check_binding(what, None, &b.role_ref, &b.subjects);
    }
    for b in &install.role_bindings {
        let what = format!("RoleBinding {:?}", b.metadata.name);
        check_binding(
            what,
            b.metadata.namespace.as_ref(),
            &b.role_ref,
            &b.subjects,
        );
    }

    // Namespaced objects live in namespaces of the install.
    let namespaced = install
        .service_accounts
        .iter()
        .map(|o| &o.metadata)
        .chain(install.roles.iter().map(|o| &o.metadata))
        .chain(install.role_bindings.iter().map(|o| &o.metadata))
        .chain(install.deployments.iter().map(|o| &o.metadata))
        .chain(install.services.iter().map(|o| &o.metadata))
        .chain(install.budgets.iter().map(|o| &o.metadata))
        .chain(install.network_policies.iter().map(|o| &o.metadata));
    for meta in namespaced {
        if !meta
            .namespace
            .as_ref()
            .is_some_and(|n| namespaces.contains(n))
        {
            problems.push(format!(
                "{:?} is in namespace {:?}, not one of the install's",
                meta.name, meta.namespace
            ));
        }
    }

    // Deployments: identity, listeners, probes, hardening.
    let mut used_accounts = BTreeSet::new();
    for deployment in &install.deployments {
        let name = name_of(deployment);
        let namespace = deployment.metadata.namespace.clone().unwrap_or_default();
        let pod = pod_spec(deployment);
        let account = pod.service_account_name.clone().unwrap_or_default();
        if !accounts.contains(&(namespace.clone(), account.clone())) {
            problems.push(format!(
                "Deployment {name}: ServiceAccount {account} does not exist"
            ));
        }
        used_accounts.insert((namespace.clone(), account));
        let selector = match_labels(&deployment.spec.as_ref().expect("spec").selector);
        let labels = pod_labels(deployment);
        if !selector.iter().all(|(k, v)| labels.get(k) == Some(v)) {
            problems.push(format!(
                "Deployment {name}: its selector does not select its pods"
            ));
        }
        let pod_security = pod.security_context.clone().unwrap_or_default();
        for container in &pod.containers {
            let what = format!("Deployment {name} container {}", container.name);
            let (_, flags) = command_line(container);
            let wanted: BTreeSet<(i32, String)> = listen_ports(&flags)
                .values()
                .map(|(port, protocol)| (*port, protocol.to_string()))
                .collect();
            let declared: BTreeSet<(i32, String)> = container
                .ports
                .iter()
                .flatten()
                .map(|p| {
                    (
                        p.container_port,
                        p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                    )
                })
                .collect();
            if wanted != declared {
                problems.push(format!(
                    "{what}: listens on {wanted:?} but declares container ports {declared:?}"
                ));
            }
            let admin = listen_ports(&flags).get("--admin-addr").map(|p| p.0);
            for (kind, probe, path) in [
                ("liveness", &container.liveness_probe, "/healthz"),
                ("readiness", &container.readiness_probe, "/readyz"),
            ] {
                let Some(get) = probe.as_ref().and_then(|p| p.http_get.as_ref()) else {
                    problems.push(format!("{what}: no HTTP {kind} probe"));
                    continue;
                };
                let probe_path = get.path.clone().unwrap_or_default();
                if probe_path != path || !routes.contains(&probe_path) {
                    problems.push(format!(
                        "{what}: {kind} probe on {probe_path}, not the admin route {path}"
                    ));
                }
                let port = resolve_port(container, &get.port).map(|p| p.0);
                if port.is_none() || port != admin {
                    problems.push(format!(
                        "{what}: {kind} probe port {:?} is not --admin-addr's {admin:?}",
                        get.port
                    ));
                }
            }
            let security = container.security_context.clone().unwrap_or_default();
            let non_root = security
                .run_as_non_root
                .or(pod_security.run_as_non_root)
                .unwrap_or(false);
            let seccomp = security
                .seccomp_profile
                .or(pod_security.seccomp_profile.clone())
                .map(|s| s.type_);
            let drops_all = security
                .capabilities
                .and_then(|c| c.drop)
                .is_some_and(|d| d.iter().any(|c| c == "ALL"));
            if !non_root
                || security.read_only_root_filesystem != Some(true)
                || security.allow_privilege_escalation != Some(false)
                || !drops_all
                || seccomp.as_deref() != Some("RuntimeDefault")
            {
                problems.push(format!(
                    "{what}: must run as non-root with a read-only root filesystem, no \
                     privilege escalation, all capabilities dropped and seccomp RuntimeDefault"
                ));
            }
            let resources = container.resources.clone().unwrap_or_default();
            for (kind, values) in [
                ("requests", resources.requests),
                ("limits", resources.limits),
            ] {
                let values = values.unwrap_or_default();
                if !values.contains_key("cpu") || !values.contains_key("memory") {
                    problems.push(format!("{what}: no cpu and memory {kind}"));
                }
            }
        }
        if !install.budgets.iter().any(|b| {
            b.spec
                .as_ref()
                .and_then(|s| s.selector.as_ref())
                .map(match_labels)
                .is_some_and(|s| install.selected(&s).iter().any(|d| name_of(d) == name))
        }) {
            problems.push(format!("Deployment {name} has no PodDisruptionBudget"));
        }
    }
    for account in &accounts {
        if !used_accounts.contains(account) {
            problems.push(format!(
                "ServiceAccount {account:?} is used by no Deployment"
            ));
        }
    }

    // Services: they select one Deployment, and each port reaches a container port of the same
    // protocol.
    for service in &install.services {
        let name = service.metadata.name.clone().unwrap_or_default();
        let spec = service.spec.clone().unwrap_or_default();
        let selector = spec.selector.clone().unwrap_or_default();
        let selected = install.selected(&selector);
        let [deployment] = selected.as_slice() else {
            problems.push(format!(
                "Service {name} selects {} Deployments",
                selected.len()
            ));
            continue;
        };
        for port in spec.ports.iter().flatten() {
            let target = port
                .target_port
                .clone()
                .unwrap_or(IntOrString::Int(port.port));
            let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
            let found = pod_spec(deployment)
                .containers
                .iter()
                .find_map(|c| resolve_port(c, &target));
            match found {
                Some((_, p)) if p == protocol => {}
                other => problems.push(format!(
                    "Service {name} port {:?} ({protocol}) reaches {other:?} in {}",
                    port.name,
                    name_of(deployment)
                )),
            }
        }
    }

    // Budgets and network policies select Deployments; policies name ports the pods have.
    for budget in &install.budgets {
        let selector = budget
            .spec
            .as_ref()
            .and_then(|s| s.selector.as_ref())
            .map(match_labels)
            .unwrap_or_default();
        if install.selected(&selector).is_empty() {
            problems.push(format!(
                "PodDisruptionBudget {:?} selects nothing",
                budget.metadata.name
            ));
        }
    }
    for policy in &install.network_policies {
        let name = policy.metadata.name.clone().unwrap_or_default();
        let spec = policy.spec.clone().unwrap_or_default();
        let selected = install.selected(&match_labels(&spec.pod_selector.unwrap_or_default()));
        if selected.is_empty() {
            problems.push(format!("NetworkPolicy {name} selects nothing"));
        }
        for rule in spec.ingress.iter().flatten() {
            for port in rule.ports.iter().flatten() {
                let Some(wanted) = &port.port else { continue };
                let protocol = port.protocol.clone().unwrap_or_else(|| "TCP".into());
                for deployment in &selected {
                    let found = pod_spec(deployment)
                        .containers
                        .iter()
                        .find_map(|c| resolve_port(c, wanted));
                    if found.as_ref().map(|f| f.1.as_str()) != Some(protocol.as_str()) {
                        problems.push(format!(
                            "NetworkPolicy {name} port {wanted:?} ({protocol}) is not a port of {}",
                            name_of(deployment)
                        ));
                    }
                }
            }
        }
    }

    // The webhook: its Service and port exist, and it covers what the issue asks for.
    for configuration in &install.webhooks {
        for hook in configuration.webhooks.iter().flatten() {
            let what = format!("webhook {}", hook.name);
            match &hook.client_config.service {
                None => problems.push(format!("{what}: no Service")),
                Some(reference) => {
                    let service = install.services.iter().find(|s| {
                        s.metadata.name.as_deref() == Some(reference.name.as_str())
                            && s.metadata.namespace.as_deref() == Some(reference.namespace.as_str())
                    });
                    let port = reference.port.unwrap_or(443);
                    let has_port = service.is_some_and(|s| {
                        s.spec
                            .iter()
                            .flat_map(|s| s.ports.iter().flatten())
                            .any(|p| p.port == port)
                    });
                    if !has_port {
                        problems.push(format!(
                            "{what}: Service {}/{} port {port} does not exist",
                            reference.namespace, reference.name
                        ));
                    }
                    if reference.path.as_deref() != Some("/validate") {
                        problems.push(format!("{what}: path {:?}", reference.path));
                    }
                }
            }
            if hook.failure_policy.as_deref() != Some("Fail") || hook.side_effects != "None" {
                problems.push(format!("{what}: failurePolicy Fail and sideEffects None"));
            }
            let plurals: BTreeSet<_> = install
                .crds
                .iter()
                .map(|c| c.spec.names.plural.clone())
                .collect();
            let mut covered = BTreeSet::new();
            for rule in hook.rules.iter().flatten() {
                let ops: BTreeSet<_> = rule.operations.iter().flatten().cloned().collect();
                for resource in rule.resources.iter().flatten() {
                    if !plurals.contains(resource) {
                        problems.push(format!("{what}: {resource} is no CRD of the install"));
                    }
                    if rule.api_groups.as_deref() == Some(&["iot.devplane.io".to_string()][..])
                        && ops.contains("CREATE")
                        && ops.contains("UPDATE")
                    {
                        covered.insert(resource.clone());
                    }
                }
            }
            for kind in ["devices", "devicecommands", "gateways"] {
                if !covered.contains(kind) {
                    problems.push(format!(
                        "{what}: does not check {kind} on CREATE and UPDATE"
                    ));
                }
            }
        }
    }
    problems
}

/// The verbs a ServiceAccount has on a resource (any namespace, any resourceNames).
fn verbs_on(install: &Install, account: &str, group: &str, resource: &str) -> BTreeSet<String> {
    install
        .rules_of("devplane-system", account)
        .into_iter()
        .filter(|(_, rule)| {
            rule.api_groups.iter().flatten().any(|g| g == group)
                && rule.resources.iter().flatten().any(|r| r == resource)
        })
        .flat_map(|(_, rule)| rule.verbs)
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| s.to_string()).collect()
}

#[test]
fn the_install_and_the_production_overlay_render_into_typed_objects_that_reference_each_other() {
    for dir in INSTALLS {
        let install = Install::render(dir);
        assert_eq!(install.crds.len(), 7, "{dir}: devplane's seven CRDs");
        assert_eq!(install.deployments.len(), 3, "{dir}");
        let problems = problems(&install);
        assert!(problems.is_empty(), "{dir}:\n{}", problems.join("\n"));
    }
}

#[test]
fn the_install_carries_the_same_crds_as_the_crds_directory() {
    let rendered = documents(&kustomize("manifests/deploy"));
    let mut from_install: Vec<&Value> = rendered
        .iter()
        .filter(|o| o["kind"] == "CustomResourceDefinition")
        .collect();
    from_install.sort_by_key(|o| o["metadata"]["name"].as_str().map(str::to_string));
    let mut files: Vec<_> = std::fs::read_dir(repo().join("crds"))
        .expect("crds/")
        .map(|e| e.expect("entry").path())
        .collect();
    files.sort();
    assert_eq!(files.len(), from_install.len());
    for (file, rendered) in files.iter().zip(from_install) {
        let mut on_disk: Value =
            serde_yaml::from_str(&std::fs::read_to_string(file).expect("read CRD")).expect("CRD");
        // kustomize adds the install's part-of label.
        let mut rendered = rendered.clone();
        rendered["metadata"]["labels"]
            .as_object_mut()
            .expect("labels")
            .remove("app.kubernetes.io/part-of");
        if rendered["metadata"]["labels"]
            .as_object()
            .is_some_and(|l| l.is_empty())
        {
            rendered["metadata"]
                .as_object_mut()
                .expect("metadata")
                .remove("labels");
        }
        on_disk["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("creationTimestamp");
        rendered["metadata"]
            .as_object_mut()
            .expect("metadata")
            .remove("creationTimestamp");
        assert_eq!(
            numbers_as_floats(&on_disk),
            numbers_as_floats(&rendered),
            "{}",
            file.display()
        );
    }
}

#[test]
fn broken_references_are_reported() {
    let mut objects = documents(&kustomize("manifests/deploy"));
    for object in &mut objects {
        let name = object["metadata"]["name"].as_str().unwrap_or_default();
        match (object["kind"].as_str().unwrap_or_default(), name) {
            ("ClusterRoleBinding", "devplane-frontdoor") => {
                object["subjects"][0]["name"] = "devplane-front-door".into();
            }
            ("Service", "devplane-frontdoor") => {
                object["spec"]["ports"][0]["targetPort"] = "mqtt-typo".into();
            }
            ("Deployment", "devplane-controller") => {
                let container = &mut object["spec"]["template"]["spec"]["containers"][0];
                container["livenessProbe"]["httpGet"]["path"] = "/health".into();
                container["args"][1] = "--admin-addr=0.0.0.0:9999".into();
            }
            _ => {}
        }
    }
    let problems = problems(&Install::from_documents(&objects)).join("\n");
    for expected in [
        "subject ServiceAccount devplane-system/devplane-front-door",
        "Service devplane-frontdoor port Some(\"mqtt\")",
        "liveness probe on /health",
        "container controller: listens on",
    ] {
        assert!(problems.contains(expected), "{expected} in:\n{problems}");
    }
}

#[test]
fn every_flag_the_deployments_pass_is_one_the_binary_takes() {
    let install = Install::render("manifests/deploy");
    for deployment in &install.deployments {
        for container in &pod_spec(deployment).containers {
            let (subcommand, flags) = command_line(container);
            let help = Command::new(env!("CARGO_BIN_EXE_devplane"))
                .args([subcommand.as_str(), "--help"])
                .output()
                .expect("devplane runs");
            assert!(help.status.success(), "devplane {subcommand} --help fails");
            let help = stdout(&help);
            for flag in flags.keys() {
                let listed = help
                    .split(|c: char| c.is_whitespace() || c == ',')
                    .any(|w| w == flag);
                assert!(listed, "devplane {subcommand} has no {flag}:\n{help}");
            }
            for env in container.env.iter().flatten() {
                if env.name != "RUST_LOG" {
                    assert!(
                        help.contains(&format!("env: {}", env.name)),
                        "devplane {subcommand} reads no {} (env of {}):\n{help}",
                        env.name,
                        name_of(deployment)
                    );
                }
            }
        }
    }
}

#[test]
fn the_controller_runs_two_replicas_that_elect_a_leader_in_their_own_namespace() {
    let install = Install::render("manifests/deploy");
    let controller = install.deployment("devplane-controller");
    assert_eq!(controller.spec.as_ref().and_then(|s| s.replicas), Some(2));
    let container = &pod_spec(controller).containers[0];
    let namespace_env = container
        .env
        .iter()
        .flatten()
        .find(|e| e.name == "POD_NAMESPACE")
        .and_then(|e| e.value_from.as_ref())
        .and_then(|v| v.field_ref.as_ref())
        .map(|f| f.field_path.clone());
    assert_eq!(namespace_env.as_deref(), Some("metadata.namespace"));
    // The Lease rules are a Role in the controller's namespace, naming the one Lease.
    let rules = install.rules_of("devplane-system", "devplane-controller");
    let lease_rules: Vec<_> = rules
        .iter()
        .filter(|(_, r)| r.resources.iter().flatten().any(|x| x == "leases"))
        .collect();
    assert!(!lease_rules.is_empty());
    for (scope, rule) in lease_rules {
        assert_eq!(scope.as_deref(), Some("devplane-system"), "{rule:?}");
        let named = rule.resource_names.clone().unwrap_or_default();
        if rule.verbs != ["create"] {
            assert_eq!(named, [LEASE_NAME], "{rule:?}");
        }
    }
    let lease_verbs = verbs_on(
        &install,
        "devplane-controller",
        "coordination.k8s.io",
        "leases",
    );
    assert_eq!(lease_verbs, set(&["create", "get", "update"]));
}

#[test]
fn each_identity_gets_only_what_its_code_calls() {
    let install = Install::render("manifests/deploy");
    for role in &install.cluster_roles {
        for rule in role.rules.iter().flatten() {
            for field in [
                rule.verbs.clone(),
                rule.resources.clone().unwrap_or_default(),
                rule.api_groups.clone().unwrap_or_default(),
            ] {
                assert!(
                    !field.iter().any(|v| v == "*"),
                    "{:?}: no wildcards",
                    role.metadata.name
                );
            }
            for verb in ["escalate", "bind", "impersonate", "deletecollection"] {
                assert!(
                    !rule.verbs.iter().any(|v| v == verb),
                    "{:?} grants {verb}",
                    role.metadata.name
                );
            }
        }
    }
    let group = "iot.devplane.io";
    // The front door reads the registry and writes only status, registrations, provisioned
    // devices (a create, and a rotation request by patch) and Events; it reads Secrets and
    // never writes one.
    let frontdoor = "devplane-frontdoor";
    assert_eq!(
        verbs_on(&install, frontdoor, "", "secrets"),
        set(&["get", "list", "watch"])
    );
    assert_eq!(
        verbs_on(&install, frontdoor, group, "devices"),
        set(&["get", "list", "watch", "create", "patch"])
    );
    for kind in [
        "devicemodels",
        "gateways",
        "devicecommands",
        "provisioningpolicies",
    ] {
        assert_eq!(
            verbs_on(&install, frontdoor, group, kind),
            set(&["list", "watch"])
        );
    }
    for status in [
        "devices/status",
        "gateways/status",
        "devicecommands/status",
        "provisioningpolicies/status",
    ] {
        assert_eq!(
            verbs_on(&install, frontdoor, group, status),
            set(&["patch"])
        );
    }
    assert_eq!(
        verbs_on(&install, frontdoor, "events.k8s.io", "events"),
        set(&["create", "patch"])
    );
    assert_eq!(
        verbs_on(&install, frontdoor, "", "namespaces"),
        set(&["get"])
    );
    assert!(verbs_on(&install, frontdoor, "coordination.k8s.io", "leases").is_empty());
    // The controller: credentials Secrets without update or deletecollection, its own kinds
    // and their statuses, never Secrets through anything but the credentials role.
    let controller = "devplane-controller";
    assert_eq!(
        verbs_on(&install, controller, "", "secrets"),
        set(&["get", "list", "watch", "create", "patch", "delete"])
    );
    let secret_roles: Vec<_> = install
        .cluster_roles
        .iter()
        .filter(|r| {
            r.rules
                .iter()
                .flatten()
                .any(|rule| rule.resources.iter().flatten().any(|x| x == "secrets"))
        })
        .filter_map(|r| r.metadata.name.clone())
        .collect();
    assert_eq!(
        secret_roles,
        ["devplane-controller-credentials", "devplane-frontdoor"],
        "Secrets only in the controller's credentials role and the front door's read role"
    );
    assert_eq!(
        verbs_on(&install, controller, group, "devices"),
        set(&["list", "watch", "create", "patch"])
    );
    for kind in ["devicemodels", "devicecommands", "applications"] {
        assert_eq!(
            verbs_on(&install, controller, group, kind),
            set(&["list", "watch"])
        );
        assert_eq!(
            verbs_on(&install, controller, group, &format!("{kind}/status")),
            set(&["patch"])
        );
    }
    // The webhook reads devplane's kinds and nothing else.
    let webhook_rules = install.rules_of("devplane-system", "devplane-webhook");
    assert!(!webhook_rules.is_empty());
    for (_, rule) in webhook_rules {
        assert_eq!(rule.api_groups.as_deref(), Some(&[group.to_string()][..]));
        assert_eq!(rule.verbs, ["list", "watch"], "{rule:?}");
    }
}

#[test]
fn the_front_door_service_serves_every_device_protocol_on_the_ports_credentials_name() {
    let install = Install::render("manifests/deploy");
    let service = install
        .services
        .iter()
        .find(|s| s.metadata.name.as_deref() == Some("devplane-frontdoor"))
        .expect("the front door's Service");
    let ports: BTreeSet<(i32, String)> = service
        .spec
        .iter()
        .flat_map(|s| s.ports.iter().flatten())
        .map(|p| (p.port, p.protocol.clone().unwrap_or_else(|| "TCP".into())))
        .collect();
    // MQTT, MQTTS, HTTP, HTTPS over TCP; CoAP and CoAPS over UDP. 1883, 8080 and 5683 are the
    // ports the controller writes into credentials Secrets.
    for (port, protocol) in [
        (1883, "TCP"),
        (8883, "TCP"),
        (8080, "TCP"),
        (8443, "TCP"),
        (5683, "UDP"),
        (5684, "UDP"),
    ] {
        assert!(
            ports.contains(&(port, protocol.to_string())),
            "{port}/{protocol} in {ports:?}"
        );
    }
}
