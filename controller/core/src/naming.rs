//! Names devplane derives and the Kubernetes name rules it checks offline. The rules
//! themselves live in `devplane-naming`, the one implementation the API server and
//! `devplane validate` use too; they are re-exported here for the domain code.

use devplane_api::constants::CREDENTIALS_SECRET_SUFFIX;
pub use devplane_naming::{
    NameError, annotation_key_problems, dns1123_label_problems, dns1123_subdomain_problems,
    label_value_problem, label_value_problems, namespace_name_problem, object_name_problem,
    qualified_name_problems,
};

/// Name of the Secret holding a device's or gateway's credentials.
pub fn credentials_secret_name(owner: &str) -> String {
    format!("{owner}{CREDENTIALS_SECRET_SUFFIX}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_secret_is_named_after_its_owner() {
        assert_eq!(credentials_secret_name("inv-01"), "inv-01-credentials");
    }
}
