//! Error reports with their whole cause chain, for logs.

use std::error::Error;

/// `error` and every cause under it, joined with `: ` (`write status: API call failed: 409`).
pub fn chain(error: &(dyn Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(inner) = cause {
        let next = inner.to_string();
        // Some errors repeat their source's text in their own message; say it once.
        if !text.ends_with(&next) {
            text.push_str(": ");
            text.push_str(&next);
        }
        cause = inner.source();
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("outer step failed")]
    struct Outer(#[source] std::io::Error);

    #[test]
    fn a_report_names_every_cause_from_outer_to_root() {
        let error = Outer(std::io::Error::other("disk full"));
        assert_eq!(chain(&error), "outer step failed: disk full");
    }
}
