//! Parsing resource paths: `/api/v1/namespaces/ns/configmaps/x`, `/apis/g/v/devices`, …

/// What a request path addresses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ResourcePath {
    /// API group ("" for core).
    pub group: String,
    /// API version.
    pub version: String,
    /// Namespace from the path, if any.
    pub namespace: Option<String>,
    /// Resource (plural), if any; None for the group-version's discovery document.
    pub resource: Option<String>,
    /// Object name, if any.
    pub name: Option<String>,
    /// Subresource (`status`, `finalize`), if any.
    pub subresource: Option<String>,
}

/// Parse the part of a path after `/api/` (core) or `/apis/` (groups). `is_namespaced`
/// tells whether a plural of this group-version is namespaced; it settles the one ambiguity of
/// the URL scheme: `/namespaces/x/status` is a subresource of namespace x while
/// `/namespaces/x/configmaps` is a collection inside it.
pub fn parse(
    core: bool,
    rest: &str,
    is_namespaced: impl Fn(&str, &str, &str) -> bool,
) -> Option<ResourcePath> {
    let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, tail) = if core {
        let (version, tail) = segments.split_first()?;
        ("", *version, tail)
    } else {
        match segments.as_slice() {
            [group, version, tail @ ..] => (*group, *version, tail),
            _ => return None,
        }
    };
    let mut path = ResourcePath {
        group: group.to_string(),
        version: version.to_string(),
        namespace: None,
        resource: None,
        name: None,
        subresource: None,
    };
    let owned = |s: &&str| Some(s.to_string());
    match tail {
        [] => {}
        [resource] => path.resource = owned(resource),
        [resource, name] => {
            path.resource = owned(resource);
            path.name = owned(name);
        }
        ["namespaces", ns, resource] if is_namespaced(group, version, resource) => {
            path.namespace = owned(ns);
            path.resource = owned(resource);
        }
        [resource, name, sub] => {
            path.resource = owned(resource);
            path.name = owned(name);
            path.subresource = owned(sub);
        }
        ["namespaces", ns, resource, name] => {
            path.namespace = owned(ns);
            path.resource = owned(resource);
            path.name = owned(name);
        }
        ["namespaces", ns, resource, name, sub] => {
            path.namespace = owned(ns);
            path.resource = owned(resource);
            path.name = owned(name);
            path.subresource = owned(sub);
        }
        _ => return None,
    }
    Some(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn namespaced(_: &str, _: &str, resource: &str) -> bool {
        matches!(resource, "configmaps" | "devices" | "events")
    }

    fn p(core: bool, rest: &str) -> ResourcePath {
        parse(core, rest, namespaced).expect("parses")
    }

    #[test]
    fn core_and_group_paths_are_split_into_their_parts() {
        let x = p(true, "v1/namespaces/ns1/configmaps/cm");
        assert_eq!((x.group.as_str(), x.version.as_str()), ("", "v1"));
        assert_eq!(x.namespace.as_deref(), Some("ns1"));
        assert_eq!(x.resource.as_deref(), Some("configmaps"));
        assert_eq!(x.name.as_deref(), Some("cm"));
        let x = p(false, "iot.devplane.io/v1alpha1/devices");
        assert_eq!(x.group, "iot.devplane.io");
        assert_eq!(x.resource.as_deref(), Some("devices"));
        assert_eq!(x.namespace, None);
        let x = p(
            false,
            "iot.devplane.io/v1alpha1/namespaces/a/devices/d/status",
        );
        assert_eq!(x.subresource.as_deref(), Some("status"));
        assert_eq!(p(false, "iot.devplane.io/v1alpha1").resource, None);
    }

    #[test]
    fn namespace_subresources_are_told_from_collections_inside_a_namespace() {
        let x = p(true, "v1/namespaces/ns1/finalize");
        assert_eq!(
            (
                x.resource.as_deref(),
                x.name.as_deref(),
                x.subresource.as_deref()
            ),
            (Some("namespaces"), Some("ns1"), Some("finalize"))
        );
        let x = p(true, "v1/namespaces/ns1/events");
        assert_eq!(
            (x.namespace.as_deref(), x.resource.as_deref(), x.name),
            (Some("ns1"), Some("events"), None)
        );
        let x = p(true, "v1/namespaces/ns1");
        assert_eq!(
            (x.resource.as_deref(), x.name.as_deref()),
            (Some("namespaces"), Some("ns1"))
        );
    }

    #[test]
    fn paths_that_address_nothing_are_refused() {
        assert!(parse(false, "only-a-group", namespaced).is_none());
        assert!(parse(true, "v1/a/b/c/d/e/f", namespaced).is_none());
    }
}
