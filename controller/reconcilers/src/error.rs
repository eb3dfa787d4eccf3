//! The controllers' error type.

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A call to the Kubernetes API failed.
    #[error("Kubernetes API call failed: {context}")]
    Api {
        /// What was being done.
        context: String,
        /// The cause.
        source: kube::Error,
    },
    /// The object lacks a namespace or name (a malformed watch event).
    #[error("object has no {0}")]
    MissingMetadata(&'static str),
    /// The finalizer helper failed.
    #[error("finalizer step failed")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
    /// An object could not be serialized.
    #[error("cannot serialize {0}")]
    Serialize(&'static str, #[source] serde_json::Error),
}

impl Error {
    /// A stable label for metrics and event reasons.
    pub fn category(&self) -> &'static str {
        match self {
            Error::Api { .. } => "ApiError",
            Error::MissingMetadata(_) => "MissingMetadata",
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.category(),
                _ => "FinalizerError",
            },
            Error::Serialize(..) => "SerializeError",
        }
    }
}

impl Error {
    /// Whether retrying the same input cannot help: the API refused what was written as
    /// invalid (400, 422), or the object itself is malformed.
    pub fn is_invalid(&self) -> bool {
        match self {
            Error::Api {
                source: kube::Error::Api(status),
                ..
            } => matches!(status.code, 400 | 422),
            Error::Api { .. } => false,
            Error::MissingMetadata(_) | Error::Serialize(..) => true,
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.is_invalid(),
                _ => false,
            },
        }
    }
}

impl Error {
    /// Whether the API refused a create because the object's namespace is being deleted: the
    /// object itself goes with it, so there is nothing to retry.
    pub fn is_namespace_terminating(&self) -> bool {
        match self {
            Error::Api {
                source: kube::Error::Api(status),
                ..
            } => {
                status.code == 403
                    && (status.details.as_ref().is_some_and(|details| {
                        details
                            .causes
                            .iter()
                            .any(|cause| cause.reason == "NamespaceTerminating")
                    }) || status.message.contains("because it is being terminated"))
            }
            Error::Finalizer(inner) => match inner.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(e)
                | kube::runtime::finalizer::Error::CleanupFailed(e) => e.is_namespace_terminating(),
                _ => false,
            },
            _ => false,
        }
    }
}

/// Attach context to a kube error.
pub fn api(context: impl Into<String>) -> impl FnOnce(kube::Error) -> Error {
    let context = context.into();
    move |source| Error::Api { context, source }
}

/// Result of a reconcile step.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An error with its whole cause chain, for logs.
pub fn chain(error: &Error) -> String {
    devplane_core::report::chain(error)
}
