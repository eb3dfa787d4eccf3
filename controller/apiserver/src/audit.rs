//! The audit log (`--audit-log FILE`): one JSON line per API request in the shape of
//! `audit.k8s.io/v1` Events at the Metadata level — who (user, groups, source address), what
//! (verb, resource, namespace, name), when, and the response code. No request or response
//! bodies are ever written, so no Secret data can reach it.

use std::io::Write;
use std::path::Path;

use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::authz::{Attributes, Caller};

/// Where audit events go.
pub struct Audit {
    file: Mutex<std::io::BufWriter<std::fs::File>>,
}

impl std::fmt::Debug for Audit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Audit")
    }
}

/// One request as the audit log records it.
pub struct Record<'a> {
    /// Who (None: not authenticated).
    pub caller: Option<&'a Caller>,
    /// What, for resource requests.
    pub attributes: Option<&'a Attributes>,
    /// The resource's version, for `objectRef.apiVersion`.
    pub version: Option<&'a str>,
    /// Path and query.
    pub uri: &'a str,
    /// HTTP method (the verb of non-resource requests).
    pub method: &'a str,
    /// Response code.
    pub code: u16,
    /// For failures: the Status reason and message.
    pub failure: Option<(&'a str, &'a str)>,
    /// Client address.
    pub source: Option<String>,
    /// User-Agent.
    pub user_agent: Option<&'a str>,
    /// When the request arrived.
    pub received: jiff::Timestamp,
}

impl Audit {
    /// Append to `path` (created if missing, readable by its owner only).
    pub fn open(path: &Path) -> std::io::Result<Audit> {
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let file = options.open(path)?;
        Ok(Audit {
            file: Mutex::new(std::io::BufWriter::new(file)),
        })
    }

    /// Record one request.
    pub fn record(&self, record: &Record<'_>) {
        let line = event(record).to_string();
        let mut file = self.file.lock();
        if let Err(e) = writeln!(file, "{line}") {
            tracing::warn!(error = %e, "cannot write the audit log");
        }
    }

    /// Write what is buffered.
    pub fn flush(&self) {
        if let Err(e) = self.file.lock().flush() {
            tracing::warn!(error = %e, "cannot flush the audit log");
        }
    }
}

/// The audit.k8s.io/v1 Event of a request.
pub fn event(record: &Record<'_>) -> Value {
    let verb = match record.attributes {
        Some(a) => a.verb.clone(),
        None => record.method.to_ascii_lowercase(),
    };
    // As kube-apiserver's: `user` is who authenticated, `impersonatedUser` whom it acted as.
    let (user, impersonated) = match record.caller {
        Some(c) => match &c.impersonator {
            Some(impersonator) => (impersonator.user_info(), Some(c.user_info())),
            None => (c.user_info(), None),
        },
        None => (json!({}), None),
    };
    let mut event = json!({
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "Metadata",
        "auditID": uuid::Uuid::new_v4().to_string(),
        "stage": "ResponseComplete",
        "requestURI": record.uri,
        "verb": verb,
        "user": user,
        "responseStatus": {"metadata": {}, "code": record.code},
        "requestReceivedTimestamp": record.received.to_string(),
        "stageTimestamp": jiff::Timestamp::now().to_string(),
    });
    if let Some(impersonated) = impersonated {
        event["impersonatedUser"] = impersonated;
    }
    if let Some(source) = &record.source {
        event["sourceIPs"] = json!([source]);
    }
    if let Some(agent) = record.user_agent {
        event["userAgent"] = json!(agent);
    }
    if let Some(a) = record.attributes {
        let mut object = json!({"resource": a.resource, "apiGroup": a.group});
        if let Some(ns) = &a.namespace {
            object["namespace"] = json!(ns);
        }
        if let Some(name) = &a.name {
            object["name"] = json!(name);
        }
        if let Some(sub) = &a.subresource {
            object["subresource"] = json!(sub);
        }
        if let Some(version) = record.version {
            object["apiVersion"] = json!(version);
        }
        event["objectRef"] = object;
    }
    if let Some((reason, message)) = record.failure {
        event["responseStatus"]["status"] = json!("Failure");
        event["responseStatus"]["reason"] = json!(reason);
        event["responseStatus"]["message"] = json!(message);
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_event_names_who_did_what_and_the_answer() {
        let caller = Caller::new("alice", &["ops"]);
        let attributes = Attributes {
            verb: "delete".into(),
            group: "iot.devplane.io".into(),
            resource: "devices".into(),
            subresource: None,
            namespace: Some("plant".into()),
            name: Some("sensor-a".into()),
        };
        let event = event(&Record {
            caller: Some(&caller),
            attributes: Some(&attributes),
            version: Some("v1alpha1"),
            uri: "/apis/iot.devplane.io/v1alpha1/namespaces/plant/devices/sensor-a",
            method: "DELETE",
            code: 403,
            failure: Some(("Forbidden", "no")),
            source: Some("127.0.0.1".into()),
            user_agent: Some("kubectl/v1.33.0"),
            received: jiff::Timestamp::UNIX_EPOCH,
        });
        assert_eq!(event["apiVersion"], "audit.k8s.io/v1");
        assert_eq!(event["level"], "Metadata");
        assert_eq!(event["user"]["username"], "alice");
        assert_eq!(event["verb"], "delete");
        assert_eq!(
            event["objectRef"],
            json!({"resource": "devices", "apiGroup": "iot.devplane.io", "apiVersion": "v1alpha1", "namespace": "plant", "name": "sensor-a"})
        );
        assert_eq!(event["responseStatus"]["code"], 403);
        assert_eq!(event["responseStatus"]["reason"], "Forbidden");
        assert_eq!(event["sourceIPs"], json!(["127.0.0.1"]));
        assert!(event.get("requestObject").is_none() && event.get("responseObject").is_none());
        assert!(event.get("impersonatedUser").is_none());
    }

    #[test]
    fn an_impersonated_request_names_who_authenticated_and_whom_it_acted_as() {
        let mut jane = Caller::new("jane", &["developers"]);
        jane.impersonator = Some(Box::new(Caller::new("support", &[])));
        let event = event(&Record {
            caller: Some(&jane),
            attributes: None,
            version: None,
            uri: "/api/v1/namespaces/plant/configmaps",
            method: "GET",
            code: 200,
            failure: None,
            source: None,
            user_agent: None,
            received: jiff::Timestamp::UNIX_EPOCH,
        });
        assert_eq!(
            event["user"],
            json!({"username": "support", "groups": ["system:authenticated"]})
        );
        assert_eq!(
            event["impersonatedUser"],
            json!({"username": "jane", "groups": ["developers", "system:authenticated"]})
        );
    }
}
