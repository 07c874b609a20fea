//! A MetricTemplate's credentials: the Secret its `provider.secretRef` names, read from the
//! template's namespace, turned into the `Authorization` header of every query, with Flagger's
//! rules (its Prometheus provider): a `token` key is a bearer token and wins; without it,
//! `username` and `password` are both required and sent as basic authentication.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

/// The data of the Secret a MetricTemplate's `provider.secretRef` names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    /// `<namespace>/<name>`, for messages.
    pub secret: String,
    /// The Secret's `data`, decoded.
    pub data: BTreeMap<String, Vec<u8>>,
}

impl Credentials {
    /// The value of the `Authorization` header, or why there is none, naming the Secret and
    /// the key. Stricter than Flagger in one way: an empty key or a value that cannot be an HTTP
    /// header (a trailing newline from `--from-file`) is an error here, where Flagger sends no
    /// credentials (empty) or fails to send the request (newline).
    pub fn authorization(&self) -> Result<String, String> {
        if self.data.contains_key("token") {
            return Ok(format!("Bearer {}", self.value("token")?));
        }
        let missing = |key: &str| {
            format!(
                "Secret {} has no key `{key}`: provider.secretRef needs `token` (a bearer token) \
                 or `username` and `password` (basic authentication)",
                self.secret
            )
        };
        if !self.data.contains_key("username") {
            return Err(missing("username"));
        }
        if !self.data.contains_key("password") {
            return Err(missing("password"));
        }
        let pair = format!("{}:{}", self.value("username")?, self.value("password")?);
        Ok(format!("Basic {}", STANDARD.encode(pair)))
    }

    /// A key's value as header text: non-empty visible ASCII (tabs and spaces inside).
    fn value(&self, key: &str) -> Result<&str, String> {
        let bytes = self.data.get(key).map(Vec::as_slice).unwrap_or_default();
        let bad = |why: &str| format!("Secret {} key `{key}` {why}", self.secret);
        let text = std::str::from_utf8(bytes).map_err(|_| bad("is not text"))?;
        if text.is_empty() {
            return Err(bad("is empty"));
        }
        if !text.chars().all(|c| c == '\t' || (' '..='~').contains(&c)) {
            return Err(bad(
                "cannot be sent in an HTTP header (visible ASCII only; a trailing newline?)",
            ));
        }
        Ok(text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret(pairs: &[(&str, &str)]) -> Credentials {
        Credentials {
            secret: "monitoring/prom-auth".into(),
            data: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.as_bytes().to_vec()))
                .collect(),
        }
    }

    #[test]
    fn a_token_key_is_a_bearer_token_and_wins_over_basic_authentication() {
        let both = secret(&[("token", "abc"), ("username", "u"), ("password", "p")]);
        assert_eq!(both.authorization().as_deref(), Ok("Bearer abc"));
    }

    #[test]
    fn username_and_password_are_basic_authentication() {
        let basic = secret(&[("username", "admin"), ("password", "s3cret")]);
        // base64("admin:s3cret")
        assert_eq!(
            basic.authorization().as_deref(),
            Ok("Basic YWRtaW46czNjcmV0")
        );
    }

    #[test]
    fn a_missing_or_unusable_key_names_the_secret_and_the_key() {
        for (pairs, expected) in [
            (&[("username", "u")][..], "key `password`"),
            (&[("password", "p")][..], "key `username`"),
            (&[][..], "key `username`"),
            (&[("token", "")][..], "key `token` is empty"),
            (&[("token", "abc\n")][..], "key `token` cannot be sent"),
        ] {
            let e = secret(pairs).authorization().unwrap_err();
            assert!(
                e.contains("Secret monitoring/prom-auth") && e.contains(expected),
                "{pairs:?}: {e}"
            );
        }
    }
}
