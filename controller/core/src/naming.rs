//! Names devplane derives and the Kubernetes name rules it checks offline.

use devplane_api::constants::CREDENTIALS_SECRET_SUFFIX;

/// Name of the Secret holding a device's or gateway's credentials.
pub fn credentials_secret_name(owner: &str) -> String {
    format!("{owner}{CREDENTIALS_SECRET_SUFFIX}")
}

/// Why a name is not a valid Kubernetes object name (DNS-1123 subdomain), or None if it is.
pub fn object_name_problem(name: &str) -> Option<&'static str> {
    if name.is_empty() {
        return Some("must not be empty");
    }
    if name.len() > 253 {
        return Some("must be at most 253 characters");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
    {
        return Some("must consist of lower-case letters, digits, '-' and '.'");
    }
    let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    if !alnum(name.bytes().next()) || !alnum(name.bytes().last()) {
        return Some("must start and end with a lower-case letter or digit");
    }
    None
}

/// Why a string is not a valid label value, or None if it is.
pub fn label_value_problem(value: &str) -> Option<&'static str> {
    if value.len() > 63 {
        return Some("must be at most 63 characters");
    }
    if value.is_empty() {
        return None;
    }
    if !value
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Some("must consist of letters, digits, '-', '_' and '.'");
    }
    let alnum = |b: Option<u8>| b.is_some_and(|b| b.is_ascii_alphanumeric());
    if !alnum(value.bytes().next()) || !alnum(value.bytes().last()) {
        return Some("must start and end with a letter or digit");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_follow_dns_1123_subdomain_rules() {
        assert_eq!(object_name_problem("inverter-01"), None);
        assert_eq!(object_name_problem("a.b-c"), None);
        assert!(object_name_problem("").is_some());
        assert!(object_name_problem("Inverter").is_some());
        assert!(object_name_problem("-lead").is_some());
        assert!(object_name_problem("trail.").is_some());
        assert!(object_name_problem(&"a".repeat(254)).is_some());
    }

    #[test]
    fn label_values_follow_kubernetes_rules() {
        assert_eq!(label_value_problem("north-field_2.a"), None);
        assert_eq!(label_value_problem(""), None);
        assert!(label_value_problem("has space").is_some());
        assert!(label_value_problem("_lead").is_some());
        assert!(label_value_problem(&"a".repeat(64)).is_some());
    }

    #[test]
    fn credentials_secret_is_named_after_its_owner() {
        assert_eq!(credentials_secret_name("inv-01"), "inv-01-credentials");
    }
}
