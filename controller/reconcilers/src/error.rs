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
    /// A Secret of the credentials' name exists and is not the owner's.
    #[error(
        "Secret {secret} exists and is not the credentials devplane issued to this {kind} (it has no owner reference to it); delete or rename it, and the credentials are issued"
    )]
    ForeignSecret {
        /// The Secret's name.
        secret: String,
        /// The owner's kind.
        kind: String,
    },
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
            Error::ForeignSecret { .. } => "ForeignSecret",
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
            Error::MissingMetadata(_) | Error::Serialize(..) | Error::ForeignSecret { .. } => true,
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

/// The result of kube-runtime's finalizer helper. Adding or removing the finalizer is a JSON
/// patch with a test of the list as the cache saw it; when the cache is behind (a second
/// reconcile of a deletion already removed the finalizer and the object is gone, or another
/// finalizer came or went) the patch fails with 404 or 422. That is no failure: the object's
/// next watch event, already on its way, brings the reconcile that sees it as it is.
pub fn finalized(
    result: std::result::Result<kube::runtime::controller::Action, FinalizerError>,
) -> Result<kube::runtime::controller::Action> {
    use kube::runtime::finalizer::Error as F;
    match result {
        Ok(action) => Ok(action),
        Err(
            F::AddFinalizer(kube::Error::Api(status))
            | F::RemoveFinalizer(kube::Error::Api(status)),
        ) if matches!(status.code, 404 | 409 | 422) => {
            tracing::debug!(code = status.code, message = %status.message, "finalizer patch raced a newer version; waiting for its event");
            Ok(kube::runtime::controller::Action::await_change())
        }
        Err(e) => Err(Error::Finalizer(Box::new(e))),
    }
}

/// kube-runtime's finalizer error around ours.
pub type FinalizerError = kube::runtime::finalizer::Error<Error>;

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
