//! Which DeviceModel holds an EnOS product key (pure). A product key names one model across the
//! cluster; when several claim it, the oldest holds it (ties broken by namespace and name) and
//! the others are refused. The DeviceModel controller reports the refusal and the front door
//! routes the key to the holder: both ask this one rule.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::model::ModelKey;

/// The product keys models claim, with when each model was created.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Products {
    /// Product key → (creation time in seconds, model), oldest first.
    claims: BTreeMap<String, BTreeSet<(i64, ModelKey)>>,
    /// Model → the key it claims and its creation time.
    by_model: HashMap<ModelKey, (String, i64)>,
}

impl Products {
    /// Record that `model` (created at `created`, epoch seconds; None sorts last) claims
    /// `product_key`, or no key; replaces what it claimed before.
    pub fn claim(&mut self, model: &ModelKey, product_key: Option<&str>, created: Option<i64>) {
        self.forget(model);
        let Some(key) = product_key else {
            return;
        };
        let created = created.unwrap_or(i64::MAX);
        self.claims
            .entry(key.to_string())
            .or_default()
            .insert((created, model.clone()));
        self.by_model
            .insert(model.clone(), (key.to_string(), created));
    }

    /// Forget whatever `model` claimed.
    pub fn forget(&mut self, model: &ModelKey) {
        let Some((key, created)) = self.by_model.remove(model) else {
            return;
        };
        if let Some(claims) = self.claims.get_mut(&key) {
            claims.remove(&(created, model.clone()));
            if claims.is_empty() {
                self.claims.remove(&key);
            }
        }
    }

    /// Keep only the models `keep` says to keep (after a re-list).
    pub fn retain(&mut self, keep: impl Fn(&ModelKey) -> bool) {
        let gone: Vec<ModelKey> = self.by_model.keys().filter(|m| !keep(m)).cloned().collect();
        for model in gone {
            self.forget(&model);
        }
    }

    /// The model that holds `product_key`, if any claims it.
    pub fn holder(&self, product_key: &str) -> Option<&ModelKey> {
        self.claims
            .get(product_key)?
            .iter()
            .next()
            .map(|(_, model)| model)
    }

    /// The product key `model` holds: None when it claims none, or when an older model holds
    /// the key it claims (`Err` names that model).
    pub fn key_of(&self, model: &ModelKey) -> Option<Result<&str, &ModelKey>> {
        let (key, _) = self.by_model.get(model)?;
        match self.holder(key) {
            Some(holder) if holder != model => Some(Err(holder)),
            _ => Some(Ok(key.as_str())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(namespace: &str, name: &str) -> ModelKey {
        ModelKey::new(namespace, name)
    }

    #[test]
    fn the_oldest_model_claiming_a_product_key_holds_it() {
        let mut products = Products::default();
        let (a, b) = (model("plant", "a"), model("other", "b"));
        products.claim(&b, Some("pk1"), Some(200));
        products.claim(&a, Some("pk1"), Some(100));
        assert_eq!(products.holder("pk1"), Some(&a));
        assert_eq!(products.key_of(&a), Some(Ok("pk1")));
        assert_eq!(products.key_of(&b), Some(Err(&a)));
        assert_eq!(products.holder("pk2"), None);
    }

    #[test]
    fn a_tie_goes_to_the_first_namespace_and_name() {
        let mut products = Products::default();
        let (a, b) = (model("x", "a"), model("a", "z"));
        products.claim(&a, Some("pk"), Some(100));
        products.claim(&b, Some("pk"), Some(100));
        assert_eq!(products.holder("pk"), Some(&b));
    }

    #[test]
    fn a_model_that_lets_go_of_a_key_hands_it_to_the_next_claimant() {
        let mut products = Products::default();
        let (a, b) = (model("plant", "a"), model("plant", "b"));
        products.claim(&a, Some("pk"), Some(1));
        products.claim(&b, Some("pk"), Some(2));
        products.claim(&a, Some("other"), Some(1));
        assert_eq!(products.holder("pk"), Some(&b));
        assert_eq!(products.holder("other"), Some(&a));
        products.claim(&a, None, Some(1));
        assert_eq!(products.key_of(&a), None);
        assert_eq!(products.holder("other"), None);
        products.retain(|m| m != &b);
        assert_eq!(products.holder("pk"), None);
        assert_eq!(products, Products::default(), "nothing is left behind");
    }
}
