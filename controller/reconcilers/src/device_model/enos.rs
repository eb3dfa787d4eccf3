//! A DeviceModel as an EnOS product: whether it holds its product key (the oldest model
//! claiming a key holds it; see `devplane_core::enos`), and its product Secret, issued while
//! dynamic activation is on and the key is its own, deleted otherwise.

use std::collections::BTreeMap;

use devplane_api::constants::conditions::ENOS_PRODUCT_KEY;
use devplane_api::constants::{enos, labels};
use devplane_api::v1alpha1::DeviceModel;
use devplane_core::enos::Products;
use devplane_core::model::ModelKey;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, ObjectMeta, Time};
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::{Resource, ResourceExt};

use crate::conditions;
use crate::context::Context;
use crate::error::{Result, api};

/// What the model's product key comes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Standing {
    /// The model is no EnOS product.
    NoProduct,
    /// The model holds its product key.
    Holds(String),
    /// An older model holds the key it claims.
    Taken {
        /// The key.
        product_key: String,
        /// The model holding it.
        holder: ModelKey,
    },
}

/// The product keys of every model in the cache.
pub fn products(ctx: &Context) -> Products {
    let mut products = Products::default();
    for model in ctx.models.state() {
        let Some(namespace) = model.namespace() else {
            continue;
        };
        let key = ModelKey::new(namespace, model.name_any());
        products.claim(&key, product_key(&model), created(&model));
    }
    products
}

fn product_key(model: &DeviceModel) -> Option<&str> {
    model.spec.enos.as_ref().map(|e| e.product_key.as_str())
}

fn created(model: &DeviceModel) -> Option<i64> {
    model
        .metadata
        .creation_timestamp
        .as_ref()
        .map(|t| t.0.as_second())
}

/// Where `model` stands, given every model's claims (pure).
pub fn standing(products: &Products, key: &ModelKey, model: &DeviceModel) -> Standing {
    let Some(wanted) = product_key(model) else {
        return Standing::NoProduct;
    };
    let mut products = products.clone();
    // The cache may lag the object being reconciled: judge it by what it says now.
    products.claim(key, Some(wanted), created(model));
    match products.key_of(key) {
        Some(Err(holder)) => Standing::Taken {
            product_key: wanted.to_string(),
            holder: holder.clone(),
        },
        _ => Standing::Holds(wanted.to_string()),
    }
}

/// The models a change of `model` may hand a product key to, or take one from: those claiming
/// the key it claims, and those refused a key (it may have let go of theirs).
pub fn rivals(ctx: &Context, model: &DeviceModel) -> Vec<ModelKey> {
    let wanted = product_key(model);
    let own = (model.namespace(), model.name_any());
    let refused = |m: &DeviceModel| {
        m.status.as_ref().is_some_and(|s| {
            s.conditions
                .iter()
                .any(|c| c.type_ == ENOS_PRODUCT_KEY && c.status == "False")
        })
    };
    ctx.models
        .state()
        .iter()
        .filter(|m| (wanted.is_some() && product_key(m) == wanted) || refused(m))
        .filter(|m| (m.namespace(), m.name_any()) != own)
        .filter_map(|m| Some(ModelKey::new(m.namespace()?, m.name_any())))
        .collect()
}

/// Set (or drop) the `EnosProductKey` condition for `standing`.
pub fn set_condition(
    conditions_list: &mut Vec<Condition>,
    standing: &Standing,
    generation: Option<i64>,
    now: &Time,
) {
    match standing {
        Standing::NoProduct => conditions_list.retain(|c| c.type_ != ENOS_PRODUCT_KEY),
        Standing::Holds(key) => conditions::set(
            conditions_list,
            ENOS_PRODUCT_KEY,
            true,
            "Held",
            format!("EnOS devices connect with product key {key}"),
            generation,
            now,
        ),
        Standing::Taken {
            product_key,
            holder,
        } => conditions::set(
            conditions_list,
            ENOS_PRODUCT_KEY,
            false,
            "ProductKeyTaken",
            format!(
                "product key {product_key} belongs to DeviceModel {holder}, which claimed it first; \
                 EnOS devices cannot connect as this model until it has a key of its own"
            ),
            generation,
            now,
        ),
    }
}

/// The product Secret's name for model `name`.
pub fn secret_name(model: &str) -> String {
    devplane_core::naming::derived_name(model, enos::PRODUCT_SECRET_SUFFIX)
}

/// Whether the model should have a product Secret now.
pub fn wants_secret(model: &DeviceModel, standing: &Standing) -> bool {
    matches!(standing, Standing::Holds(_))
        && model
            .spec
            .enos
            .as_ref()
            .is_some_and(|e| e.dynamic_activation)
}

/// A product Secret for `model` holding `product_secret`.
pub fn build_secret(model: &DeviceModel, product_key: &str, product_secret: &str) -> Secret {
    let name = model.name_any();
    let data = BTreeMap::from([
        (
            enos::PRODUCT_SECRET_KEY.to_string(),
            ByteString(product_secret.as_bytes().to_vec()),
        ),
        (
            "productKey".to_string(),
            ByteString(product_key.as_bytes().to_vec()),
        ),
    ]);
    let labels = BTreeMap::from([
        (labels::ENOS_PRODUCT.to_string(), name.clone()),
        (
            labels::MANAGED_BY.to_string(),
            labels::MANAGED_BY_VALUE.to_string(),
        ),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: Some(secret_name(&name)),
            namespace: model.namespace(),
            labels: Some(labels),
            owner_references: model.controller_owner_ref(&()).map(|r| vec![r]),
            ..ObjectMeta::default()
        },
        type_: Some(enos::PRODUCT_SECRET_TYPE.to_string()),
        data: Some(data),
        ..Secret::default()
    }
}

fn has_product_secret(secret: &Secret) -> bool {
    secret
        .data
        .as_ref()
        .is_some_and(|d| d.contains_key(enos::PRODUCT_SECRET_KEY))
}

/// Issue the product Secret when it is wanted and missing; delete it when it is not wanted.
/// Returns whether the Secret changed.
pub async fn reconcile_secret(
    ctx: &Context,
    model: &DeviceModel,
    namespace: &str,
    standing: &Standing,
) -> Result<bool> {
    let name = secret_name(&model.name_any());
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), namespace);
    let cached = ctx
        .secrets
        .state()
        .into_iter()
        .find(|s| s.namespace().as_deref() == Some(namespace) && s.name_any() == name);
    let wanted = wants_secret(model, standing);
    match (wanted, cached) {
        (true, Some(secret)) if has_product_secret(&secret) => Ok(false),
        (true, _) => {
            // A fresh read before issuing: a lagging cache must not replace a secret devices
            // already hold.
            let current = secrets
                .get_opt(&name)
                .await
                .map_err(api(format!("read Secret {name}")))?;
            if current.as_ref().is_some_and(has_product_secret) {
                return Ok(false);
            }
            let Standing::Holds(product_key) = standing else {
                return Ok(false);
            };
            let secret = build_secret(model, product_key, &crate::credentials::new_password());
            secrets
                .patch(
                    &name,
                    &PatchParams::apply(devplane_api::constants::field_managers::DEVICE_MODEL)
                        .force(),
                    &Patch::Apply(&secret),
                )
                .await
                .map_err(api(format!("write Secret {name}")))?;
            Ok(true)
        }
        (false, None) => Ok(false),
        (false, Some(_)) => {
            match secrets.delete(&name, &DeleteParams::default()).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 => {}
                Err(e) => return Err(api(format!("delete Secret {name}"))(e)),
            }
            Ok(true)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(yaml: &str) -> DeviceModel {
        serde_yaml::from_str(yaml).expect("model yaml")
    }

    fn claims(models: &[&DeviceModel]) -> Products {
        let mut products = Products::default();
        for m in models {
            let key = ModelKey::new(m.namespace().unwrap_or_default(), m.name_any());
            products.claim(&key, product_key(m), created(m));
        }
        products
    }

    const OLDER: &str = r#"
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceModel
metadata: {name: thermo, namespace: home, creationTimestamp: "2026-01-01T00:00:00Z", uid: u1}
spec: {version: 1.0.0, enos: {productKey: thhy01, dynamicActivation: true}}
"#;
    const YOUNGER: &str = r#"
apiVersion: iot.devplane.io/v1alpha1
kind: DeviceModel
metadata: {name: copy, namespace: lab, creationTimestamp: "2026-02-01T00:00:00Z", uid: u2}
spec: {version: 1.0.0, enos: {productKey: thhy01, dynamicActivation: true}}
"#;

    #[test]
    fn a_second_model_claiming_a_product_key_is_refused_with_the_holder_named() {
        let (older, younger) = (model(OLDER), model(YOUNGER));
        let products = claims(&[&older, &younger]);
        let standing = standing(&products, &ModelKey::new("lab", "copy"), &younger);
        assert_eq!(
            standing,
            Standing::Taken {
                product_key: "thhy01".into(),
                holder: ModelKey::new("home", "thermo"),
            }
        );
        assert!(!wants_secret(&younger, &standing), "no product secret");
        let mut list = Vec::new();
        let now = Time(jiff::Timestamp::UNIX_EPOCH);
        set_condition(&mut list, &standing, Some(1), &now);
        assert_eq!(list[0].status, "False");
        assert_eq!(list[0].reason, "ProductKeyTaken");
        assert!(
            list[0].message.contains("home/thermo"),
            "{}",
            list[0].message
        );
        set_condition(&mut list, &Standing::NoProduct, Some(2), &now);
        assert!(list.is_empty(), "no product, no condition");
    }

    #[test]
    fn the_holder_with_dynamic_activation_gets_a_labelled_product_secret() {
        let older = model(OLDER);
        let products = claims(&[&older, &model(YOUNGER)]);
        let standing = standing(&products, &ModelKey::new("home", "thermo"), &older);
        assert_eq!(standing, Standing::Holds("thhy01".into()));
        assert!(wants_secret(&older, &standing));
        let secret = build_secret(&older, "thhy01", "s3cret");
        assert_eq!(secret.metadata.name.as_deref(), Some("thermo-enos-product"));
        let labels = secret.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            labels.get(labels::ENOS_PRODUCT).map(String::as_str),
            Some("thermo")
        );
        assert_eq!(
            labels.get(labels::MANAGED_BY).map(String::as_str),
            Some("devplane")
        );
        assert!(has_product_secret(&secret));
        let owner = secret.metadata.owner_references.unwrap_or_default();
        assert_eq!(owner.first().map(|o| o.uid.as_str()), Some("u1"));
    }
}
