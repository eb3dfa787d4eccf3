//! Kubernetes' name rules, implemented once for every devplane crate that checks a name: the
//! API server, the domain logic in `devplane-core` and `devplane validate`.
//!
//! - object names of most kinds are DNS-1123 subdomains;
//! - Namespace names are DNS-1123 labels;
//! - label keys and finalizers are qualified names: an optional DNS-1123 subdomain prefix and
//!   `/`, then a name part of alphanumerics, `-`, `_` and `.`; annotation keys are qualified
//!   names once lower-cased;
//! - label values are empty or shaped like a qualified name's name part.
//!
//! A check returns every rule a string breaks, as the Kubernetes API server lists them; each
//! [`NameError`] displays as the API server words it, so `devplane validate`, the embedded API
//! server and a real cluster tell a user the same thing.
//!
//! This crate depends on nothing heavier than `thiserror`: the API server (which knows nothing
//! of devplane's kinds) and `devplane-core` (which knows nothing of HTTP) both use it without
//! taking on each other's dependencies.

/// Longest DNS-1123 subdomain (object names, qualified-name prefixes).
pub const DNS1123_SUBDOMAIN_MAX_LENGTH: usize = 253;
/// Longest DNS-1123 label (Namespace names).
pub const DNS1123_LABEL_MAX_LENGTH: usize = 63;
/// Longest name part of a qualified name.
pub const QUALIFIED_NAME_MAX_LENGTH: usize = 63;
/// Longest label value.
pub const LABEL_VALUE_MAX_LENGTH: usize = 63;

const DNS1123_SUBDOMAIN_RULE: &str = "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric characters, '-' or '.', and must start and end with an alphanumeric character (e.g. 'example.com', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*')";
const DNS1123_LABEL_RULE: &str = "a lowercase RFC 1123 label must consist of lower case alphanumeric characters or '-', and must start and end with an alphanumeric character (e.g. 'my-name',  or '123-abc', regex used for validation is '[a-z0-9]([-a-z0-9]*[a-z0-9])?')";
const QUALIFIED_NAME_RULE: &str = "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')";
const LABEL_VALUE_RULE: &str = "a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')";

/// One name rule a string breaks. The text is the Kubernetes API server's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Longer than the rule allows.
    #[error("must be no more than {max} characters")]
    TooLong {
        /// The most characters (bytes) allowed.
        max: usize,
    },
    /// Not lowercase alphanumeric dot-separated labels.
    #[error("{}", DNS1123_SUBDOMAIN_RULE)]
    NotDns1123Subdomain,
    /// Not a lowercase alphanumeric label.
    #[error("{}", DNS1123_LABEL_RULE)]
    NotDns1123Label,
    /// Not a valid label value.
    #[error("{}", LABEL_VALUE_RULE)]
    NotLabelValue,
    /// A qualified name with more than one `/`.
    #[error(
        "a qualified name {} with an optional DNS subdomain prefix and '/' (e.g. 'example.com/MyName')",
        QUALIFIED_NAME_RULE
    )]
    NotQualifiedName,
    /// A qualified name with nothing before its `/`.
    #[error("prefix part must be non-empty")]
    EmptyPrefix,
    /// A qualified name's prefix is longer than a DNS-1123 subdomain may be.
    #[error(
        "prefix part must be no more than {} characters",
        DNS1123_SUBDOMAIN_MAX_LENGTH
    )]
    PrefixTooLong,
    /// A qualified name's prefix is not a DNS-1123 subdomain.
    #[error("prefix part {}", DNS1123_SUBDOMAIN_RULE)]
    PrefixNotDns1123Subdomain,
    /// A qualified name with nothing after its `/` (or nothing at all).
    #[error("name part must be non-empty")]
    EmptyNamePart,
    /// A qualified name's name part is too long.
    #[error(
        "name part must be no more than {} characters",
        QUALIFIED_NAME_MAX_LENGTH
    )]
    NamePartTooLong,
    /// A qualified name's name part has other characters, or does not start and end with an
    /// alphanumeric one.
    #[error("name part {}", QUALIFIED_NAME_RULE)]
    BadNamePart,
}

/// What breaks the DNS-1123 subdomain rule (object names): at most 253 characters, dot-separated
/// DNS-1123 labels. Empty when `value` keeps it.
pub fn dns1123_subdomain_problems(value: &str) -> Vec<NameError> {
    let mut problems = Vec::new();
    if value.len() > DNS1123_SUBDOMAIN_MAX_LENGTH {
        problems.push(NameError::TooLong {
            max: DNS1123_SUBDOMAIN_MAX_LENGTH,
        });
    }
    if !is_dns1123_subdomain(value) {
        problems.push(NameError::NotDns1123Subdomain);
    }
    problems
}

/// What breaks the DNS-1123 label rule (Namespace names): at most 63 characters of lowercase
/// alphanumerics and `-`, alphanumeric at both ends. Empty when `value` keeps it.
pub fn dns1123_label_problems(value: &str) -> Vec<NameError> {
    let mut problems = Vec::new();
    if value.len() > DNS1123_LABEL_MAX_LENGTH {
        problems.push(NameError::TooLong {
            max: DNS1123_LABEL_MAX_LENGTH,
        });
    }
    if !is_dns1123_label(value) {
        problems.push(NameError::NotDns1123Label);
    }
    problems
}

/// What breaks the qualified-name rule (label and annotation keys, finalizers): an optional
/// DNS-1123 subdomain prefix and `/`, then a name part of at most 63 alphanumerics, `-`, `_`
/// and `.`, alphanumeric at both ends. Empty when `value` keeps it.
pub fn qualified_name_problems(value: &str) -> Vec<NameError> {
    let mut problems = Vec::new();
    let name =
        match value.split_once('/') {
            None => value,
            Some((_, name)) if name.contains('/') => return vec![NameError::NotQualifiedName],
            Some((prefix, name)) => {
                if prefix.is_empty() {
                    problems.push(NameError::EmptyPrefix);
                } else {
                    problems.extend(dns1123_subdomain_problems(prefix).into_iter().map(
                        |problem| match problem {
                            NameError::TooLong { .. } => NameError::PrefixTooLong,
                            _ => NameError::PrefixNotDns1123Subdomain,
                        },
                    ));
                }
                name
            }
        };
    if name.is_empty() {
        problems.push(NameError::EmptyNamePart);
    } else if name.len() > QUALIFIED_NAME_MAX_LENGTH {
        problems.push(NameError::NamePartTooLong);
    }
    if !is_qualified_name_part(name) {
        problems.push(NameError::BadNamePart);
    }
    problems
}

/// What breaks the rule for annotation keys: a qualified name once lower-cased (Kubernetes
/// checks them so, which lets a prefix carry capitals). Empty when `value` keeps it.
pub fn annotation_key_problems(value: &str) -> Vec<NameError> {
    qualified_name_problems(&value.to_lowercase())
}

/// What breaks the label-value rule: empty, or at most 63 alphanumerics, `-`, `_` and `.`,
/// alphanumeric at both ends. Empty when `value` keeps it.
pub fn label_value_problems(value: &str) -> Vec<NameError> {
    let mut problems = Vec::new();
    if value.len() > LABEL_VALUE_MAX_LENGTH {
        problems.push(NameError::TooLong {
            max: LABEL_VALUE_MAX_LENGTH,
        });
    }
    if !value.is_empty() && !is_qualified_name_part(value) {
        problems.push(NameError::NotLabelValue);
    }
    problems
}

/// The first problem of an object name (a DNS-1123 subdomain), for messages that name one.
pub fn object_name_problem(name: &str) -> Option<NameError> {
    dns1123_subdomain_problems(name).into_iter().next()
}

/// The first problem of a Namespace name (a DNS-1123 label), for messages that name one.
pub fn namespace_name_problem(name: &str) -> Option<NameError> {
    dns1123_label_problems(name).into_iter().next()
}

/// The first problem of a label value, for messages that name one.
pub fn label_value_problem(value: &str) -> Option<NameError> {
    label_value_problems(value).into_iter().next()
}

/// `[a-z0-9]` at both ends, `[-a-z0-9]` between; not empty.
fn is_dns1123_label(value: &str) -> bool {
    let lower_alphanumeric = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    match (value.as_bytes().first(), value.as_bytes().last()) {
        (Some(first), Some(last)) => {
            lower_alphanumeric(first)
                && lower_alphanumeric(last)
                && value.bytes().all(|b| lower_alphanumeric(&b) || b == b'-')
        }
        _ => false,
    }
}

/// DNS-1123 labels joined by single dots, so no empty label (`a..b`) and no label that starts
/// or ends with `-` (`a.-b`).
fn is_dns1123_subdomain(value: &str) -> bool {
    value.split('.').all(is_dns1123_label)
}

/// `[A-Za-z0-9]` at both ends, `[-A-Za-z0-9_.]` between; not empty.
fn is_qualified_name_part(value: &str) -> bool {
    match (value.as_bytes().first(), value.as_bytes().last()) {
        (Some(first), Some(last)) => {
            first.is_ascii_alphanumeric()
                && last.is_ascii_alphanumeric()
                && value
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests;
