//! Impersonation (`kubectl --as`, `--as-group`, `--as-uid`): the `Impersonate-*` headers of an
//! authenticated request make it a request of another identity, once the caller has been found
//! allowed to `impersonate` each part of that identity, as kube-apiserver does (pure):
//!
//! | header | what the caller needs `impersonate` on |
//! |---|---|
//! | `Impersonate-User: u` | `users` named `u` (core group); for `system:serviceaccount:ns:n`, `serviceaccounts` named `n` in `ns` |
//! | `Impersonate-Group: g` (repeatable) | `groups` named `g` (core group) |
//! | `Impersonate-Uid: id` | `uids` named `id` (`authentication.k8s.io`) |
//! | `Impersonate-Extra-k: v` (repeatable) | `userextras/k` named `v` (`authentication.k8s.io`) |
//!
//! The identity is the user with exactly the groups asked for (a ServiceAccount asked for with no
//! groups gets its own), plus `system:authenticated` (`system:unauthenticated` for
//! `system:anonymous`) unless one of the two is asked for. RBAC here decides by user and
//! groups only; a uid and extras are checked, then shown wherever the user is (`kubectl auth
//! whoami`, admission reviews, the audit log).

use axum::http::HeaderMap;
use serde_json::json;

use crate::authz::{AUTHENTICATED, Attributes, Caller, Rbac};
use crate::error::{ApiError, ApiResult};

const USER: &str = "impersonate-user";
const GROUP: &str = "impersonate-group";
const UID: &str = "impersonate-uid";
const EXTRA_PREFIX: &str = "impersonate-extra-";
/// The group that `authentication.k8s.io` names uids and extras in.
const AUTHENTICATION_GROUP: &str = "authentication.k8s.io";
const ANONYMOUS: &str = "system:anonymous";
const UNAUTHENTICATED: &str = "system:unauthenticated";

/// What a request's headers ask to act as.
#[derive(Debug, PartialEq)]
struct Asked {
    user: String,
    groups: Vec<String>,
    uid: Option<String>,
    /// (key, value) pairs; a key with several values comes once per value.
    extra: Vec<(String, String)>,
}

/// The identity the impersonation headers name, once `rbac` lets `caller` impersonate every
/// part of it; `None` without such headers. Bad headers are a 400, a part the caller may not
/// impersonate a 403 naming it.
pub fn acting_as(rbac: &Rbac, caller: &Caller, headers: &HeaderMap) -> ApiResult<Option<Caller>> {
    let Some(asked) = asked(headers)? else {
        return Ok(None);
    };
    for attrs in checks(&asked) {
        if !rbac.allows(caller, &attrs) {
            tracing::info!(user = %caller.user, resource = %attrs.resource_path(), name = attrs.name.as_deref().unwrap_or(""), "impersonation forbidden");
            let mut error = ApiError::forbidden(attrs.forbidden_message(caller));
            error.details =
                Some(json!({"name": attrs.name, "group": attrs.group, "kind": attrs.resource}));
            return Err(error);
        }
    }
    Ok(Some(identity(asked, caller.clone())))
}

/// The impersonation a request asks for: `None` without any `Impersonate-*` header.
fn asked(headers: &HeaderMap) -> ApiResult<Option<Asked>> {
    let text = |name: &str, value: &axum::http::HeaderValue| {
        std::str::from_utf8(value.as_bytes())
            .map(str::to_string)
            .map_err(|_| ApiError::bad_request(format!("the header {name} is not UTF-8 text")))
    };
    let mut users = Vec::new();
    for value in headers.get_all(USER) {
        users.push(text("Impersonate-User", value)?);
    }
    if users.len() > 1 {
        return Err(ApiError::bad_request(
            "only one Impersonate-User header may be given",
        ));
    }
    let user = users.pop().unwrap_or_default();
    let mut groups = Vec::new();
    for value in headers.get_all(GROUP) {
        groups.push(text("Impersonate-Group", value)?);
    }
    // An empty uid is none, as kube-apiserver reads it.
    let uid = match headers.get(UID) {
        Some(value) => Some(text("Impersonate-Uid", value)?).filter(|uid| !uid.is_empty()),
        None => None,
    };
    let mut extra = Vec::new();
    for (name, value) in headers {
        if let Some(key) = name.as_str().strip_prefix(EXTRA_PREFIX) {
            let key = unescape_extra_key(key).ok_or_else(|| {
                ApiError::bad_request(format!(
                    "the header {name} names an extra that is not percent-encoded UTF-8"
                ))
            })?;
            extra.push((key, text(name.as_str(), value)?));
        }
    }
    if user.is_empty() {
        if groups.is_empty() && uid.is_none() && extra.is_empty() {
            return Ok(None);
        }
        return Err(ApiError::bad_request(
            "Impersonate-Group, Impersonate-Uid and Impersonate-Extra-* need Impersonate-User",
        ));
    }
    Ok(Some(Asked {
        user,
        groups,
        uid,
        extra,
    }))
}

/// An extra's key from its header name: percent-encoded UTF-8 (header names are lower case).
fn unescape_extra_key(encoded: &str) -> Option<String> {
    // Every `%` starts an escape of two hex digits; the decoder would keep a bad one as text.
    let well_formed = encoded.split('%').skip(1).all(|rest| {
        rest.get(..2)
            .is_some_and(|hex| hex.bytes().all(|b| b.is_ascii_hexdigit()))
    });
    let decoded = percent_encoding::percent_decode_str(encoded)
        .decode_utf8()
        .ok()?;
    well_formed.then(|| decoded.into_owned())
}

/// The namespace and name of a ServiceAccount's user name.
fn service_account(user: &str) -> Option<(&str, &str)> {
    let (namespace, name) = user
        .strip_prefix("system:serviceaccount:")?
        .split_once(':')?;
    (!namespace.is_empty() && !name.is_empty() && !name.contains(':')).then_some((namespace, name))
}

/// One `impersonate` check per part of the identity asked for.
fn checks(asked: &Asked) -> Vec<Attributes> {
    let check = |group: &str, resource: &str, subresource: Option<&str>, namespace, name: &str| {
        Attributes {
            verb: "impersonate".into(),
            group: group.into(),
            resource: resource.into(),
            subresource: subresource.map(str::to_string),
            namespace,
            name: Some(name.to_string()),
        }
    };
    let mut checks = vec![match service_account(&asked.user) {
        Some((namespace, name)) => check(
            "",
            "serviceaccounts",
            None,
            Some(namespace.to_string()),
            name,
        ),
        None => check("", "users", None, None, &asked.user),
    }];
    checks.extend(
        asked
            .groups
            .iter()
            .map(|group| check("", "groups", None, None, group)),
    );
    checks.extend(
        asked
            .uid
            .iter()
            .map(|uid| check(AUTHENTICATION_GROUP, "uids", None, None, uid)),
    );
    checks.extend(
        asked
            .extra
            .iter()
            .map(|(key, value)| check(AUTHENTICATION_GROUP, "userextras", Some(key), None, value)),
    );
    checks
}

/// The identity asked for, acting for `impersonator`.
fn identity(asked: Asked, impersonator: Caller) -> Caller {
    let mut groups = asked.groups;
    if groups.is_empty()
        && let Some((namespace, _)) = service_account(&asked.user)
    {
        groups = Caller::service_account_groups(namespace);
    }
    // As kube-apiserver: unless either is asked for, anonymous is unauthenticated and anyone
    // else authenticated.
    if !groups
        .iter()
        .any(|g| g == AUTHENTICATED || g == UNAUTHENTICATED)
    {
        let implied = if asked.user == ANONYMOUS {
            UNAUTHENTICATED
        } else {
            AUTHENTICATED
        };
        groups.push(implied.to_string());
    }
    let mut extra: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for (key, value) in asked.extra {
        extra.entry(key).or_default().push(value);
    }
    Caller {
        user: asked.user,
        groups,
        uid: asked.uid,
        extra,
        impersonator: Some(Box::new(impersonator)),
    }
}

#[cfg(test)]
mod tests;
