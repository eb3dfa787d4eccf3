//! EnOS login signatures (pure): the client id and user name a device presents, and the digest
//! that proves it holds its secret.
//!
//! The client id is `{inner}|securemode={mode},signmethod={alg},timestamp={ts}|`, where `{inner}`
//! is everything before the first `|`, taken verbatim, and the timestamp an opaque string. The
//! user name is `{deviceKey}&{productKey}`. The password is the hex digest of
//! `clientId{inner}deviceKey{dk}productKey{pk}timestamp{ts}` followed by the secret: a plain
//! digest whatever the algorithm's alias says (`hmacsha256` is SHA-256 of that text, no HMAC).

use std::fmt::Write as _;

use md5::Digest as _;

/// How the digest is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SignMethod {
    /// SHA-256 (`sha256`, `hmacsha256`).
    Sha256,
    /// SHA-1 (`sha1`, `hmacsha1`).
    Sha1,
    /// MD5 (`md5`, `hmacmd5`).
    Md5,
}

impl SignMethod {
    /// The method an alias names (case-insensitive).
    pub fn parse(alias: &str) -> Option<SignMethod> {
        match alias.to_ascii_lowercase().as_str() {
            "sha256" | "hmacsha256" => Some(SignMethod::Sha256),
            "sha1" | "hmacsha1" => Some(SignMethod::Sha1),
            "md5" | "hmacmd5" => Some(SignMethod::Md5),
            _ => None,
        }
    }

    /// The canonical alias.
    pub fn as_str(self) -> &'static str {
        match self {
            SignMethod::Sha256 => "sha256",
            SignMethod::Sha1 => "sha1",
            SignMethod::Md5 => "md5",
        }
    }

    fn digest(self, parts: &[&[u8]]) -> Vec<u8> {
        match self {
            SignMethod::Sha256 | SignMethod::Sha1 => {
                let algorithm = if self == SignMethod::Sha256 {
                    &ring::digest::SHA256
                } else {
                    &ring::digest::SHA1_FOR_LEGACY_USE_ONLY
                };
                let mut context = ring::digest::Context::new(algorithm);
                for part in parts {
                    context.update(part);
                }
                context.finish().as_ref().to_vec()
            }
            SignMethod::Md5 => {
                let mut hasher = md5::Md5::new();
                for part in parts {
                    hasher.update(part);
                }
                hasher.finalize().to_vec()
            }
        }
    }
}

/// The text a signature covers: the four name/value pairs in key order.
pub fn content(client_id: &str, device_key: &str, product_key: &str, timestamp: &str) -> String {
    format!("clientId{client_id}deviceKey{device_key}productKey{product_key}timestamp{timestamp}")
}

/// The signature of `content` with `secret`: the lowercase hex digest of both, in that order.
pub fn sign(method: SignMethod, content: &str, secret: &[u8]) -> String {
    let digest = method.digest(&[content.as_bytes(), secret]);
    let mut hex = String::with_capacity(digest.len() * 2);
    for byte in digest {
        let _ = write!(hex, "{byte:02x}");
    }
    hex
}

/// Whether `presented` is the signature of `content` with `secret` (hex compared without regard
/// to case: SDKs differ; in constant time).
pub fn verify(method: SignMethod, content: &str, secret: &[u8], presented: &str) -> bool {
    let expected = sign(method, content, secret);
    let presented = presented.trim().to_ascii_lowercase();
    expected.len() == presented.len()
        && expected
            .bytes()
            .zip(presented.bytes())
            .fold(0u8, |differ, (a, b)| differ | (a ^ b))
            == 0
}

/// EnOS secure modes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SecureMode {
    /// 2: signed with the device secret.
    DeviceSecret,
    /// 3: signed with the product secret (dynamic activation).
    ProductSecret,
}

/// What a client id says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientId {
    /// Everything before the first `|`, verbatim (what the signature covers).
    pub inner: String,
    /// The secure mode.
    pub mode: SecureMode,
    /// The digest algorithm.
    pub method: SignMethod,
    /// The timestamp, as written.
    pub timestamp: String,
}

/// Why a client id or user name is not an EnOS one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LoginError {
    /// No `|…|` section after the inner client id.
    #[error("the client id has no |securemode=…,signmethod=…,timestamp=…| section")]
    NoParameters,
    /// A parameter is missing.
    #[error("the client id names no {0}")]
    Missing(&'static str),
    /// The secure mode is not 2 or 3.
    #[error("secure mode {0:?} is not supported (2: device secret, 3: product secret)")]
    SecureMode(String),
    /// The sign method is unknown.
    #[error("sign method {0:?} is not supported (sha256, sha1, md5 or their hmac… aliases)")]
    SignMethod(String),
    /// The user name is not `{deviceKey}&{productKey}`.
    #[error("the user name is not deviceKey&productKey")]
    UserName,
}

/// Read a client id `{inner}|securemode=…,signmethod=…,timestamp=…|`.
pub fn parse_client_id(client_id: &str) -> Result<ClientId, LoginError> {
    let (inner, rest) = client_id.split_once('|').ok_or(LoginError::NoParameters)?;
    let parameters = rest.split('|').next().unwrap_or_default();
    let (mut mode, mut method, mut timestamp) = (None, None, None);
    for pair in parameters.split(',') {
        let Some((name, value)) = pair.split_once('=') else {
            continue;
        };
        match name.trim().to_ascii_lowercase().as_str() {
            "securemode" => mode = Some(value.trim()),
            "signmethod" => method = Some(value.trim()),
            "timestamp" => timestamp = Some(value.trim()),
            _ => {}
        }
    }
    let mode = match mode.ok_or(LoginError::Missing("securemode"))? {
        "2" => SecureMode::DeviceSecret,
        "3" => SecureMode::ProductSecret,
        other => return Err(LoginError::SecureMode(other.to_string())),
    };
    let method = method.ok_or(LoginError::Missing("signmethod"))?;
    let method = SignMethod::parse(method).ok_or_else(|| LoginError::SignMethod(method.into()))?;
    let timestamp = timestamp.ok_or(LoginError::Missing("timestamp"))?;
    Ok(ClientId {
        inner: inner.to_string(),
        mode,
        method,
        timestamp: timestamp.to_string(),
    })
}

/// Read a user name `{deviceKey}&{productKey}`: (product key, device key).
pub fn parse_username(username: &str) -> Result<(&str, &str), LoginError> {
    let (device_key, product_key) = username.split_once('&').ok_or(LoginError::UserName)?;
    if device_key.is_empty() || product_key.is_empty() || product_key.contains('&') {
        return Err(LoginError::UserName);
    }
    Ok((product_key, device_key))
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONTENT: &str = "clientIdsensor-1deviceKeysensor-1productKeythhy01timestamp1700000000000";

    #[test]
    fn the_signed_text_lists_the_four_pairs_in_key_order() {
        assert_eq!(
            content("sensor-1", "sensor-1", "thhy01", "1700000000000"),
            CONTENT
        );
    }

    #[test]
    fn each_sign_method_is_a_plain_digest_of_the_text_and_the_secret() {
        // Known digests of "abc" (FIPS 180 / RFC 1321 test vectors), split as text + secret.
        assert_eq!(
            sign(SignMethod::Sha256, "ab", b"c"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(
            sign(SignMethod::Sha1, "a", b"bc"),
            "a9993e364706816aba3e25717850c26c9cd0d89d"
        );
        assert_eq!(
            sign(SignMethod::Md5, "", b"abc"),
            "900150983cd24fb0d6963f7d28e17f72"
        );
    }

    #[test]
    fn a_signature_is_checked_without_regard_to_case_and_for_its_secret() {
        for method in [SignMethod::Sha256, SignMethod::Sha1, SignMethod::Md5] {
            let signature = sign(method, CONTENT, b"s3cret");
            assert!(verify(method, CONTENT, b"s3cret", &signature));
            assert!(verify(
                method,
                CONTENT,
                b"s3cret",
                &signature.to_ascii_uppercase()
            ));
            assert!(!verify(method, CONTENT, b"other", &signature));
            assert!(!verify(
                method,
                &format!("{CONTENT}1"),
                b"s3cret",
                &signature
            ));
        }
    }

    #[test]
    fn hmac_aliases_name_the_plain_digests() {
        assert_eq!(SignMethod::parse("hmacsha256"), Some(SignMethod::Sha256));
        assert_eq!(SignMethod::parse("HmacSHA1"), Some(SignMethod::Sha1));
        assert_eq!(SignMethod::parse("hmacmd5"), Some(SignMethod::Md5));
        assert_eq!(SignMethod::parse("sha512"), None);
    }

    #[test]
    fn a_client_id_keeps_its_inner_part_verbatim() {
        let parsed = parse_client_id(
            "sn-1{ip=10.0.0.2,version=2.2,compress=gzip}|securemode=2,signmethod=hmacsha1,timestamp=1700000000000.5|",
        )
        .expect("an EnOS client id");
        assert_eq!(parsed.inner, "sn-1{ip=10.0.0.2,version=2.2,compress=gzip}");
        assert_eq!(parsed.mode, SecureMode::DeviceSecret);
        assert_eq!(parsed.method, SignMethod::Sha1);
        assert_eq!(parsed.timestamp, "1700000000000.5", "signed as written");
        let activation =
            parse_client_id("dk|securemode=3,signmethod=sha256,timestamp=1|").expect("mode 3");
        assert_eq!(activation.mode, SecureMode::ProductSecret);
    }

    #[test]
    fn a_client_id_without_parameters_or_with_unknown_ones_is_refused() {
        assert_eq!(parse_client_id("plain"), Err(LoginError::NoParameters));
        assert_eq!(
            parse_client_id("x|signmethod=sha256,timestamp=1|"),
            Err(LoginError::Missing("securemode"))
        );
        assert_eq!(
            parse_client_id("x|securemode=4,signmethod=sha256,timestamp=1|"),
            Err(LoginError::SecureMode("4".into()))
        );
        assert_eq!(
            parse_client_id("x|securemode=2,signmethod=sha512,timestamp=1|"),
            Err(LoginError::SignMethod("sha512".into()))
        );
        assert_eq!(
            parse_client_id("x|securemode=2,signmethod=sha256|"),
            Err(LoginError::Missing("timestamp"))
        );
    }

    #[test]
    fn a_user_name_is_the_device_key_then_the_product_key() {
        assert_eq!(
            parse_username("sensor-1&thhy01"),
            Ok(("thhy01", "sensor-1"))
        );
        for bad in ["sensor-1", "&thhy01", "sensor-1&", "a&b&c"] {
            assert_eq!(parse_username(bad), Err(LoginError::UserName), "{bad}");
        }
    }
}
