use super::*;

#[test]
fn a_watch_is_authorized_as_a_watch_however_its_flag_is_spelled() {
    let verb = |query: &str| {
        let query = Query::parse(Some(query)).expect("query");
        verb_of(&Method::GET, false, &query)
    };
    for watch in ["watch=true", "watch=True", "watch=TRUE", "watch=1", "watch"] {
        assert_eq!(verb(watch), "watch", "{watch}");
        let query = Query::parse(Some(watch)).expect("query");
        assert!(query.flag("watch"), "served as a watch too: {watch}");
    }
    for list in ["", "watch=false", "watch=False", "watch=0"] {
        assert_eq!(verb(list), "list", "{list}");
    }
}

#[tokio::test]
async fn a_custom_resource_in_the_rbac_group_grants_nothing() {
    let store = devplane_store::open("memory://").await.expect("store");
    let server = ApiServer::new(store, ApiServerConfig::default())
        .await
        .expect("server");
    server
        .ensure(serde_json::json!({
            "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
            "metadata": {"name": "rb2.rbac.authorization.k8s.io",
                "annotations": {"api-approved.kubernetes.io": "https://example.com/approval"}},
            "spec": {"group": "rbac.authorization.k8s.io", "scope": "Cluster",
                "names": {"kind": "ClusterRoleBinding", "plural": "rb2"},
                "versions": [{"name": "v1", "served": true, "storage": true,
                    "schema": {"openAPIV3Schema": {"type": "object",
                        "x-kubernetes-preserve-unknown-fields": true}}}]}
        }))
        .await
        .expect("the CRD");
    // Its objects look like bindings, in the same group and version.
    let router = server.in_process_router(Caller::new("admin", &[crate::authz::MASTERS]));
    let request = axum::http::Request::post("/apis/rbac.authorization.k8s.io/v1/rb2")
        .header("content-type", "application/json")
        .body(axum::body::Body::from(
            serde_json::json!({
                "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
                "metadata": {"name": "grab"},
                "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"kind": "User", "name": "mallory"}]
            })
            .to_string(),
        ))
        .expect("request");
    let response = tower::ServiceExt::oneshot(router, request)
        .await
        .expect("infallible");
    assert_eq!(response.status(), 201);
    let stored = server
        .inner
        .store
        .get("/registry/rbac.authorization.k8s.io/rb2/grab")
        .await
        .expect("read");
    assert!(stored.is_some(), "stored as the custom resource");
    server.inner.refresh_rbac().await.expect("refresh");
    let attrs = Attributes {
        verb: "list".into(),
        group: String::new(),
        resource: "secrets".into(),
        subresource: None,
        namespace: None,
        name: None,
    };
    assert!(
        !server
            .inner
            .rbac()
            .allows(&Caller::new("mallory", &[]), &attrs)
    );
}
