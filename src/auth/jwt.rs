//! Access tokens: HS256 JWTs with a key id, algorithm pinned on decode, and
//! `exp`/`nbf`/`iat`/`iss`/`aud` checked with a small leeway (a token issued in the
//! future, or not valid yet, is refused like a forged one).

use std::{collections::HashMap, sync::Mutex};

use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::config::JwtSettings;

/// Seconds of clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY_SECS: u64 = 30;

/// The only token type accepted as an access token.
pub const ACCESS_TOKEN_TYPE: &str = "access";

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct AccessClaims {
    /// User id.
    pub sub: Uuid,
    /// Session id: revoking the session rejects the token on its next request.
    pub sid: Uuid,
    pub iss: String,
    pub aud: String,
    pub iat: i64,
    pub exp: i64,
    /// Not before; absent in the tokens Palisade issues, checked when present.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<i64>,
    /// Token type; must be `access`.
    pub typ: String,
    /// Unique per token (RFC 7519 `jti`), so two tokens issued in the same second for the
    /// same session still differ. Optional when verifying.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub jti: Option<Uuid>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TokenError {
    #[error("the access token has expired")]
    Expired,
    #[error("the access token is not valid")]
    Invalid,
}

pub struct JwtKeys {
    kid: String,
    encoding: EncodingKey,
    decoding: HashMap<String, DecodingKey>,
    validation: Validation,
    issuer: String,
    audience: String,
    ttl_secs: i64,
    verified: VerifiedTokens,
}

/// Tokens that passed [`JwtKeys::verify`], by their exact text. A client sends the same
/// token on every request for its lifetime, and decoding it (base64, two JSON parses,
/// HMAC) was ~6% of the server's CPU per request. The claims of a given text under
/// fixed keys never change, so a hit only re-checks expiry. Bounded: emptied when full.
/// Only verified tokens enter, so it cannot be filled with garbage.
#[derive(Default)]
struct VerifiedTokens(Mutex<HashMap<Box<str>, AccessClaims>>);

/// Entries kept before the cache is emptied (~5 MB at most).
const VERIFIED_TOKENS_MAX: usize = 16 * 1024;

impl VerifiedTokens {
    fn get(&self, token: &str) -> Option<AccessClaims> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(token)
            .cloned()
    }

    fn insert(&self, token: &str, claims: &AccessClaims) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= VERIFIED_TOKENS_MAX {
            map.clear();
        }
        map.insert(token.into(), claims.clone());
    }
}

impl JwtKeys {
    pub fn new(settings: &JwtSettings) -> Self {
        let mut decoding = HashMap::new();
        for key in std::iter::once(&settings.signing).chain(&settings.previous) {
            decoding.insert(
                key.kid.clone(),
                DecodingKey::from_secret(key.secret.expose_secret().as_bytes()),
            );
        }
        let mut validation = Validation::new(Algorithm::HS256);
        validation.algorithms = vec![Algorithm::HS256];
        validation.leeway = LEEWAY_SECS;
        validation.set_issuer(&[&settings.issuer]);
        validation.set_audience(&[&settings.audience]);
        validation.set_required_spec_claims(&["exp", "iat", "iss", "aud", "sub"]);
        validation.validate_exp = true;
        validation.validate_nbf = true;
        Self {
            kid: settings.signing.kid.clone(),
            encoding: EncodingKey::from_secret(settings.signing.secret.expose_secret().as_bytes()),
            decoding,
            validation,
            issuer: settings.issuer.clone(),
            audience: settings.audience.clone(),
            ttl_secs: settings.access_ttl.as_secs() as i64,
            verified: VerifiedTokens::default(),
        }
    }

    /// Lifetime of new access tokens, in seconds.
    pub fn ttl_secs(&self) -> i64 {
        self.ttl_secs
    }

    pub fn issue(&self, user_id: Uuid, session_id: Uuid) -> String {
        // (Each token carries a fresh `jti`: a refresh in the same second still yields a
        // new token.)
        let now = chrono::Utc::now().timestamp();
        self.issue_at(user_id, session_id, now)
    }

    /// Issues a token as if the clock read `now` (tests use it to mint expired tokens).
    pub fn issue_at(&self, user_id: Uuid, session_id: Uuid, now: i64) -> String {
        let claims = AccessClaims {
            sub: user_id,
            sid: session_id,
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            iat: now,
            exp: now + self.ttl_secs,
            nbf: None,
            typ: ACCESS_TOKEN_TYPE.to_owned(),
            jti: Some(Uuid::new_v4()),
        };
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.encoding)
            .expect("HS256 encoding of plain claims cannot fail")
    }

    /// Verifies signature (by `kid`), algorithm, expiry, issuer, audience and type.
    /// A token verified before is only checked for expiry again (see [`VerifiedTokens`]).
    pub fn verify(&self, token: &str) -> Result<AccessClaims, TokenError> {
        if let Some(claims) = self.verified.get(token) {
            // The same rule as jsonwebtoken's `validate_exp` with our leeway.
            if claims.exp < chrono::Utc::now().timestamp() - LEEWAY_SECS as i64 {
                return Err(TokenError::Expired);
            }
            return Ok(claims);
        }
        let claims = self.verify_uncached(token)?;
        self.verified.insert(token, &claims);
        Ok(claims)
    }

    fn verify_uncached(&self, token: &str) -> Result<AccessClaims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Invalid)?;
        if header.alg != Algorithm::HS256 {
            return Err(TokenError::Invalid);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.decoding.get(kid))
            .ok_or(TokenError::Invalid)?;
        let data = jsonwebtoken::decode::<AccessClaims>(token, key, &self.validation).map_err(
            |e| match e.kind() {
                jsonwebtoken::errors::ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            },
        )?;
        if data.claims.typ != ACCESS_TOKEN_TYPE {
            return Err(TokenError::Invalid);
        }
        // jsonwebtoken checks `exp` and `nbf`; an `iat` in the future means a clock or a
        // signer we do not trust.
        if data.claims.iat > chrono::Utc::now().timestamp() + LEEWAY_SECS as i64 {
            return Err(TokenError::Invalid);
        }
        Ok(data.claims)
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::config::JwtKey;

    fn settings(kid: &str, secret: &str) -> JwtSettings {
        JwtSettings {
            signing: JwtKey {
                kid: kid.into(),
                secret: secret.to_owned().into(),
            },
            previous: vec![],
            issuer: "palisade".into(),
            audience: "palisade-api".into(),
            access_ttl: Duration::from_secs(900),
        }
    }

    #[test]
    fn round_trip_and_rotation() {
        let old = JwtKeys::new(&settings("k1", "first-secret-first-secret-first-secret"));
        let (user, sid) = (Uuid::new_v4(), Uuid::new_v4());
        let token = old.issue(user, sid);
        assert_eq!(old.verify(&token).unwrap().sub, user);

        let mut rotated = settings("k2", "second-secret-second-secret-second-s");
        assert_eq!(
            JwtKeys::new(&rotated).verify(&token),
            Err(TokenError::Invalid)
        );
        rotated.previous.push(JwtKey {
            kid: "k1".into(),
            secret: "first-secret-first-secret-first-secret".to_owned().into(),
        });
        let keys = JwtKeys::new(&rotated);
        assert_eq!(
            keys.verify(&token).unwrap().sid,
            sid,
            "old kid still verifies"
        );
        let fresh = keys.issue(user, sid);
        assert_eq!(
            jsonwebtoken::decode_header(&fresh).unwrap().kid.as_deref(),
            Some("k2")
        );
    }

    #[test]
    fn expired_and_tampered_tokens_fail() {
        let keys = JwtKeys::new(&settings("k1", "first-secret-first-secret-first-secret"));
        let expired = keys.issue_at(Uuid::new_v4(), Uuid::new_v4(), 1_000_000);
        assert_eq!(keys.verify(&expired), Err(TokenError::Expired));
        let good = keys.issue(Uuid::new_v4(), Uuid::new_v4());
        let mut tampered = good.clone();
        tampered.pop();
        tampered.push(if good.ends_with('A') { 'B' } else { 'A' });
        assert_eq!(keys.verify(&tampered), Err(TokenError::Invalid));
        assert_eq!(keys.verify("garbage"), Err(TokenError::Invalid));
    }

    #[test]
    fn tokens_from_the_future_are_refused() {
        let keys = JwtKeys::new(&settings("k1", "first-secret-first-secret-first-secret"));
        let now = chrono::Utc::now().timestamp();
        let (user, sid) = (Uuid::new_v4(), Uuid::new_v4());
        let issued_later = keys.issue_at(user, sid, now + LEEWAY_SECS as i64 + 60);
        assert_eq!(keys.verify(&issued_later), Err(TokenError::Invalid));
        let within_leeway = keys.issue_at(user, sid, now + LEEWAY_SECS as i64 - 5);
        assert!(keys.verify(&within_leeway).is_ok());
        // A signed token with a `nbf` in the future.
        let mut header = Header::new(Algorithm::HS256);
        header.kid = Some("k1".into());
        let claims = |nbf: i64| AccessClaims {
            sub: user,
            sid,
            iss: "palisade".into(),
            aud: "palisade-api".into(),
            iat: now,
            exp: now + 900,
            nbf: Some(nbf),
            typ: ACCESS_TOKEN_TYPE.into(),
            jti: None,
        };
        let key = EncodingKey::from_secret(b"first-secret-first-secret-first-secret");
        let not_yet = jsonwebtoken::encode(&header, &claims(now + 3600), &key).unwrap();
        assert_eq!(keys.verify(&not_yet), Err(TokenError::Invalid));
        let already = jsonwebtoken::encode(&header, &claims(now - 10), &key).unwrap();
        assert!(keys.verify(&already).is_ok());
        // Two tokens for one session in the same second still differ (their `jti`).
        assert_ne!(keys.issue_at(user, sid, now), keys.issue_at(user, sid, now));
    }

    #[test]
    fn cached_tokens_still_expire_and_never_cross_keys() {
        let keys = JwtKeys::new(&settings("k1", "first-secret-first-secret-first-secret"));
        let now = chrono::Utc::now().timestamp();
        // Valid now (within the leeway), expired on the next check.
        let token = keys.issue_at(Uuid::new_v4(), Uuid::new_v4(), now - 900 - 29);
        assert!(keys.verify(&token).is_ok());
        assert!(keys.verify(&token).is_ok(), "served from the cache");
        let mut cached = keys.verified.get(&token).unwrap();
        cached.exp = now - LEEWAY_SECS as i64 - 1;
        keys.verified.insert(&token, &cached);
        assert_eq!(keys.verify(&token), Err(TokenError::Expired));
        // A cache belongs to one key set: other keys verify from scratch.
        let other = JwtKeys::new(&settings("k1", "other-secret-other-secret-other-secret"));
        assert_eq!(other.verify(&token), Err(TokenError::Invalid));
    }
}
