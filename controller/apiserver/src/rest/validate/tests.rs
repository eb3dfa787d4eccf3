use std::sync::Arc;

use serde_json::json;

use super::*;
use crate::rest::WriteOptions;
use crate::{ApiServer, ApiServerConfig};

async fn server() -> ApiServer {
    let store = devplane_store::open("memory://").await.expect("store");
    ApiServer::new(store, ApiServerConfig::default())
        .await
        .expect("server")
}

fn resource(server: &ApiServer, plural: &str) -> Arc<Resource> {
    server
        .inner
        .registry()
        .get("", "v1", plural)
        .expect("a core resource")
}

/// The message of a refused create, or None when it was stored.
async fn refusal(server: &ApiServer, plural: &str, object: Value) -> Option<String> {
    let resource = resource(server, plural);
    let namespace = resource.namespaced.then_some("default");
    server
        .inner
        .create(
            &resource,
            namespace,
            object,
            &WriteOptions::internal("test"),
        )
        .await
        .err()
        .map(|e| {
            assert_eq!(e.code, 422, "{}", e.message);
            e.message
        })
}

fn config_map(metadata: Value) -> Value {
    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": metadata})
}

#[tokio::test]
async fn object_names_with_empty_or_dash_edged_dot_labels_are_refused() {
    let server = server().await;
    for name in ["a..b", "a.-b", "a-.b", "-a", "a-", "A"] {
        let message = refusal(&server, "configmaps", config_map(json!({"name": name})))
            .await
            .unwrap_or_else(|| panic!("{name} was stored"));
        assert_eq!(
            message,
            format!(
                "ConfigMap \"{name}\" is invalid: metadata.name: Invalid value: \"{name}\": {}",
                NameError::NotDns1123Subdomain
            )
        );
    }
    let fine = refusal(&server, "configmaps", config_map(json!({"name": "a.b-c"}))).await;
    assert_eq!(fine, None);
}

#[tokio::test]
async fn namespace_names_are_labels_without_dots() {
    let server = server().await;
    let namespace =
        |name: &str| json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}});
    let message = refusal(&server, "namespaces", namespace("smart.home"))
        .await
        .expect("refused");
    assert!(
        message.contains("a lowercase RFC 1123 label must consist of"),
        "{message}"
    );
    assert_eq!(
        refusal(&server, "namespaces", namespace("smart-home")).await,
        None
    );
}

#[tokio::test]
async fn label_and_annotation_keys_and_label_values_follow_the_name_rules() {
    let server = server().await;
    let labelled = |labels: Value| config_map(json!({"name": "cm", "labels": labels}));
    let message = refusal(&server, "configmaps", labelled(json!({"a..b/key": "v"})))
        .await
        .expect("refused");
    assert!(
        message.contains("metadata.labels: Invalid value: \"a..b/key\": prefix part a lowercase RFC 1123 subdomain"),
        "{message}"
    );
    let message = refusal(&server, "configmaps", labelled(json!({"key": "-v"})))
        .await
        .expect("refused");
    assert!(
        message.contains("metadata.labels: Invalid value: \"-v\": a valid label must be"),
        "{message}"
    );
    let message = refusal(
        &server,
        "configmaps",
        config_map(json!({"name": "cm", "annotations": {"a/b/c": "x"}})),
    )
    .await
    .expect("refused");
    assert!(
        message.contains("a qualified name must consist of"),
        "{message}"
    );
    // Annotation keys are checked lower-cased: an upper-case prefix passes, as in Kubernetes.
    let stored = refusal(
        &server,
        "configmaps",
        config_map(json!({"name": "cm", "labels": {"example.com/key": ""}, "annotations": {"Example.com/Note": "any text"}})),
    )
    .await;
    assert_eq!(stored, None);
}

#[tokio::test]
async fn finalizers_must_be_qualified_names() {
    let server = server().await;
    let message = refusal(
        &server,
        "configmaps",
        config_map(json!({"name": "cm", "finalizers": ["example.com/ok", "a..b/bad"]})),
    )
    .await
    .expect("refused");
    assert_eq!(
        message,
        format!(
            "ConfigMap \"cm\" is invalid: metadata.finalizers[1]: Invalid value: \"a..b/bad\": {}",
            NameError::PrefixNotDns1123Subdomain
        )
    );
    let stored = refusal(
        &server,
        "configmaps",
        config_map(json!({"name": "cm", "finalizers": ["kubernetes", "orphan", "example.com/ok"]})),
    )
    .await;
    assert_eq!(stored, None);
}

#[tokio::test]
async fn the_request_s_own_unknown_fields_are_judged_where_it_sent_them_after_webhooks_moved_them()
{
    let server = server().await;
    let accounts = resource(&server, "serviceaccounts");
    let requested = json!({
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"},
        "imagePullSecrets": [{"name": "mine", "bogus": 1}]
    });
    // A mutating webhook put a pull secret of its own first, and added a field of its own.
    let mutated = || {
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"},
            "imagePullSecrets": [{"name": "added", "extra": 2}, {"name": "mine", "bogus": 1}]
        })
    };
    let err = admit(
        &accounts,
        &mut mutated(),
        (None, Some(&requested)),
        FieldValidation::Strict,
    )
    .expect_err("the request's unknown field is refused");
    assert_eq!(
        err.message,
        r#"strict decoding error: unknown field "imagePullSecrets[0].bogus""#
    );
    let warnings = admit(
        &accounts,
        &mut mutated(),
        (None, Some(&requested)),
        FieldValidation::Warn,
    )
    .expect("admitted with a warning");
    assert_eq!(warnings, [r#"unknown field "imagePullSecrets[0].bogus""#]);
    // A field the webhook took away was still sent.
    let mut cleaned = json!({
        "apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"},
        "imagePullSecrets": [{"name": "mine"}]
    });
    let warnings = admit(
        &accounts,
        &mut cleaned,
        (None, Some(&requested)),
        FieldValidation::Warn,
    )
    .expect("admitted with a warning");
    assert_eq!(warnings, [r#"unknown field "imagePullSecrets[0].bogus""#]);
}
