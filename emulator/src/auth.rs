//! Authentication: client certificates (user = CN, groups = O) and bearer
//! tokens for ServiceAccounts (HS256 JWTs signed with the emulator's key).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::hmac;
use serde_json::{Value, json};

/// An authenticated user.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserInfo {
    pub name: String,
    pub uid: String,
    pub groups: Vec<String>,
}

impl UserInfo {
    /// Whether the user is in `system:masters` (all-powerful).
    pub fn is_master(&self) -> bool {
        self.groups.iter().any(|g| g == "system:masters")
    }

    /// The user of a ServiceAccount.
    pub fn service_account(namespace: &str, name: &str, uid: &str) -> Self {
        UserInfo {
            name: format!("system:serviceaccount:{namespace}:{name}"),
            uid: uid.to_string(),
            groups: vec![
                "system:serviceaccounts".to_string(),
                format!("system:serviceaccounts:{namespace}"),
                "system:authenticated".to_string(),
            ],
        }
    }

    /// The user a verified client certificate names.
    pub fn from_certificate(der: &[u8]) -> Option<Self> {
        let (_, cert) = x509_parser::parse_x509_certificate(der).ok()?;
        let subject = cert.subject();
        let name = subject
            .iter_common_name()
            .next()?
            .as_str()
            .ok()?
            .to_string();
        let mut groups: Vec<String> = subject
            .iter_organization()
            .filter_map(|o| o.as_str().ok().map(str::to_string))
            .collect();
        groups.push("system:authenticated".to_string());
        Some(UserInfo {
            name,
            uid: String::new(),
            groups,
        })
    }
}

/// Claims the emulator puts in and checks on a ServiceAccount token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenClaims {
    pub namespace: String,
    pub service_account: String,
    pub service_account_uid: String,
    /// Unix seconds; `None` for legacy Secret-based tokens.
    pub expires: Option<i64>,
    /// The legacy token Secret the token belongs to, if any.
    pub secret_name: Option<String>,
    /// The token's audiences (`aud`), empty for legacy tokens.
    pub audiences: Vec<String>,
}

/// Signs and verifies ServiceAccount tokens.
pub struct TokenSigner {
    key: hmac::Key,
    issuer: String,
}

impl TokenSigner {
    /// A signer with the HMAC key from the PKI directory.
    pub fn new(key: &[u8], issuer: String) -> Self {
        TokenSigner {
            key: hmac::Key::new(hmac::HMAC_SHA256, key),
            issuer,
        }
    }

    /// A JWT for the ServiceAccount.
    pub fn sign(&self, c: &TokenClaims, now: i64) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let mut claims = json!({
            "iss": self.issuer,
            "sub": format!("system:serviceaccount:{}:{}", c.namespace, c.service_account),
            "aud": c.audiences,
            "iat": now,
            "nbf": now,
            "kubernetes.io": {
                "namespace": c.namespace,
                "serviceaccount": {"name": c.service_account, "uid": c.service_account_uid},
            },
        });
        if let Some(exp) = c.expires {
            claims["exp"] = json!(exp);
        }
        if let Some(s) = &c.secret_name {
            claims["kubernetes.io"]["secret"] = json!({"name": s});
        }
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{payload}");
        let sig = hmac::sign(&self.key, signing_input.as_bytes());
        format!("{signing_input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }

    /// The claims of a token whose signature is valid and which has not expired.
    pub fn verify(&self, token: &str, now: i64) -> Option<TokenClaims> {
        let mut parts = token.split('.');
        let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let sig = URL_SAFE_NO_PAD.decode(s).ok()?;
        hmac::verify(&self.key, format!("{h}.{p}").as_bytes(), &sig).ok()?;
        let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(p).ok()?).ok()?;
        if claims.get("iss").and_then(Value::as_str) != Some(self.issuer.as_str()) {
            return None;
        }
        let expires = claims.get("exp").and_then(Value::as_i64);
        if expires.is_some_and(|exp| exp <= now) {
            return None;
        }
        let k = claims.get("kubernetes.io")?;
        Some(TokenClaims {
            namespace: k.get("namespace")?.as_str()?.to_string(),
            service_account: k.pointer("/serviceaccount/name")?.as_str()?.to_string(),
            service_account_uid: k.pointer("/serviceaccount/uid")?.as_str()?.to_string(),
            expires,
            secret_name: k
                .pointer("/secret/name")
                .and_then(Value::as_str)
                .map(str::to_string),
            audiences: match claims.get("aud") {
                Some(Value::String(a)) => vec![a.clone()],
                Some(Value::Array(a)) => a
                    .iter()
                    .filter_map(Value::as_str)
                    .map(str::to_string)
                    .collect(),
                _ => Vec::new(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(expires: Option<i64>) -> TokenClaims {
        TokenClaims {
            namespace: "ns".into(),
            service_account: "sa".into(),
            service_account_uid: "u1".into(),
            expires,
            secret_name: None,
            audiences: vec!["api".into()],
        }
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let s = TokenSigner::new(b"k", "iss".into());
        let t = s.sign(&claims(Some(100)), 0);
        assert_eq!(s.verify(&t, 99), Some(claims(Some(100))));
        assert_eq!(s.verify(&t, 100), None);
    }

    #[test]
    fn a_token_from_another_key_is_refused() {
        let t = TokenSigner::new(b"k1", "iss".into()).sign(&claims(None), 0);
        assert_eq!(TokenSigner::new(b"k2", "iss".into()).verify(&t, 0), None);
    }
}
