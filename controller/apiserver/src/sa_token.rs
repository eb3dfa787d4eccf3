//! ServiceAccount tokens, minted by the TokenRequest subresource (`kubectl create token`):
//! `dpsa.<claims>.<signature>`, the claims (namespace, name, uid, expiry, audiences) signed with an
//! HMAC-SHA256 key kept in the store, so every API server over the same store accepts them. A
//! token dies with its expiry or with its ServiceAccount (the uid must still match).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde::{Deserialize, Serialize};

/// What a token says.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The ServiceAccount's namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
    /// Its uid when the token was minted.
    pub uid: String,
    /// Expiry, Unix seconds.
    pub exp: i64,
    /// Who the token is for; the API server accepts it only if [`API_AUDIENCE`] is among them
    /// (or, for tokens minted before audiences were kept, if there are none).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub aud: Vec<String>,
}

/// The API server's own audience: what a TokenRequest without audiences gets (the default
/// service account issuer of a cluster).
pub const API_AUDIENCE: &str = "https://kubernetes.default.svc.cluster.local";

impl Claims {
    /// Whether the token may authenticate to the API server.
    pub fn for_the_api_server(&self) -> bool {
        self.aud.is_empty() || self.aud.iter().any(|a| a == API_AUDIENCE)
    }
}

const PREFIX: &str = "dpsa.";

/// Mints and checks tokens.
pub struct Signer {
    key: hmac::Key,
}

impl Signer {
    /// A signer with `secret` as its key.
    pub fn new(secret: &[u8]) -> Signer {
        Signer {
            key: hmac::Key::new(hmac::HMAC_SHA256, secret),
        }
    }

    /// A signed token carrying `claims`.
    pub fn mint(&self, claims: &Claims) -> String {
        let body = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let signature = URL_SAFE_NO_PAD.encode(hmac::sign(&self.key, body.as_bytes()));
        format!("{PREFIX}{body}.{signature}")
    }

    /// The claims of a token this key signed that has not expired at `now` (Unix seconds).
    pub fn verify(&self, token: &str, now: i64) -> Option<Claims> {
        let (body, signature) = token.strip_prefix(PREFIX)?.split_once('.')?;
        let signature = URL_SAFE_NO_PAD.decode(signature).ok()?;
        hmac::verify(&self.key, body.as_bytes(), &signature).ok()?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(body).ok()?).ok()?;
        (claims.exp > now).then_some(claims)
    }

    /// Whether a presented bearer token is one of ours by its shape.
    pub fn looks_like(token: &str) -> bool {
        token.starts_with(PREFIX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_verifies_until_it_expires_and_only_under_its_key() {
        let signer = Signer::new(b"key one");
        let claims = Claims {
            namespace: "devplane-system".into(),
            name: "frontdoor".into(),
            uid: "u-1".into(),
            exp: 1_000,
            aud: vec![API_AUDIENCE.into()],
        };
        let token = signer.mint(&claims);
        assert!(Signer::looks_like(&token));
        assert_eq!(signer.verify(&token, 999), Some(claims.clone()));
        assert_eq!(signer.verify(&token, 1_000), None, "expired");
        assert_eq!(
            Signer::new(b"key two").verify(&token, 0),
            None,
            "another key"
        );
        let mut forged = token.clone().into_bytes();
        forged[PREFIX.len() + 3] ^= 0x01;
        let forged = String::from_utf8(forged).expect("ascii");
        assert_eq!(signer.verify(&forged, 0), None, "a changed byte");
        let (head, _) = token.rsplit_once('.').expect("signature");
        let other = Claims {
            name: "admin".into(),
            ..claims
        };
        let swapped = format!(
            "{PREFIX}{}.{}",
            URL_SAFE_NO_PAD.encode(serde_json::to_vec(&other).expect("json")),
            head.rsplit_once('.').map(|(_, s)| s).unwrap_or_default()
        );
        assert_eq!(signer.verify(&swapped, 0), None, "claims changed");
    }

    #[test]
    fn a_token_for_another_audience_is_not_for_the_api_server() {
        let claims = |aud: &[&str]| Claims {
            namespace: "plant".into(),
            name: "ci".into(),
            uid: "u-1".into(),
            exp: 1_000,
            aud: aud.iter().map(|a| a.to_string()).collect(),
        };
        assert!(claims(&[API_AUDIENCE]).for_the_api_server());
        assert!(claims(&["https://vault.example", API_AUDIENCE]).for_the_api_server());
        assert!(!claims(&["https://vault.example"]).for_the_api_server());
        assert!(
            claims(&[]).for_the_api_server(),
            "minted before audiences were kept"
        );
    }
}
