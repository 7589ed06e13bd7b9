//! Stripe's webhook signature: the `Stripe-Signature` header `t=<unix time>,v1=<hex>,...`
//! where each `v1` is HMAC-SHA256 of `"{t}.{raw body}"` under an endpoint secret. Any
//! `v1` may match any configured secret (so secrets rotate without a gap); the
//! timestamp must be within the tolerance of now (replays of old deliveries fail).

use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;

/// Stripe's default tolerance.
pub const TOLERANCE_SECONDS: i64 = 300;

/// Why a signature was refused (the 400's detail).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureError {
    /// No `Stripe-Signature` header.
    Missing,
    /// No `t=` or no `v1=` in it.
    Malformed,
    /// The timestamp is further than the tolerance from now.
    OutsideTolerance,
    /// No `v1` matches any secret.
    NoMatch,
}

impl SignatureError {
    pub fn detail(self) -> &'static str {
        match self {
            Self::Missing => "the Stripe-Signature header is missing",
            Self::Malformed => {
                "the Stripe-Signature header has no t= timestamp or no v1= signature"
            }
            Self::OutsideTolerance => {
                "the Stripe-Signature timestamp is more than 300 seconds from now (a replay?)"
            }
            Self::NoMatch => "no v1 signature matches the body under any configured webhook secret",
        }
    }
}

fn mac(secret: &[u8], timestamp: &str, payload: &[u8]) -> Hmac<Sha256> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(payload);
    mac
}

/// The `v1` signature Stripe computes for `payload` at `timestamp` (hex).
pub fn sign(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    hex::encode(
        mac(secret.as_bytes(), &timestamp.to_string(), payload)
            .finalize()
            .into_bytes(),
    )
}

/// A whole `Stripe-Signature` header value, as Stripe sends it.
pub fn header(secret: &str, timestamp: i64, payload: &[u8]) -> String {
    format!("t={timestamp},v1={}", sign(secret, timestamp, payload))
}

/// Verifies `header` over the raw `payload` at `now` (unix seconds); returns the signed
/// timestamp. Each comparison is constant-time (`Mac::verify_slice`).
pub fn verify(
    header: Option<&str>,
    payload: &[u8],
    secrets: &[SecretString],
    now: i64,
) -> Result<i64, SignatureError> {
    let header = header.ok_or(SignatureError::Missing)?;
    let mut timestamp = None;
    let mut signatures = Vec::new();
    for part in header.split(',') {
        match part.trim().split_once('=') {
            Some(("t", t)) => timestamp = Some(t),
            Some(("v1", v)) => {
                if let Ok(bytes) = hex::decode(v) {
                    signatures.push(bytes);
                }
            }
            _ => {}
        }
    }
    let t = timestamp.ok_or(SignatureError::Malformed)?;
    let at: i64 = t.parse().map_err(|_| SignatureError::Malformed)?;
    if signatures.is_empty() {
        return Err(SignatureError::Malformed);
    }
    if (now - at).abs() > TOLERANCE_SECONDS {
        return Err(SignatureError::OutsideTolerance);
    }
    let mut matched = false;
    for secret in secrets {
        let expected = mac(secret.expose_secret().as_bytes(), t, payload);
        for signature in &signatures {
            // Every pair is compared (no early exit on the secret that matched).
            matched |= expected.clone().verify_slice(signature).is_ok();
        }
    }
    if matched {
        Ok(at)
    } else {
        Err(SignatureError::NoMatch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secrets(list: &[&str]) -> Vec<SecretString> {
        list.iter()
            .map(|s| SecretString::from(s.to_string()))
            .collect()
    }

    #[test]
    fn stripe_signatures_verify_as_stripe_computes_them() {
        let body = br#"{"id":"evt_1","object":"event"}"#;
        let now = 1_700_000_000;
        let good = header("whsec_a", now, body);
        assert_eq!(
            verify(Some(&good), body, &secrets(&["whsec_a"]), now),
            Ok(now)
        );
        // Rotation: the old and the new secret are both configured.
        assert_eq!(
            verify(
                Some(&good),
                body,
                &secrets(&["whsec_new", "whsec_a"]),
                now + 10
            ),
            Ok(now)
        );
        // Several v1 values (Stripe signs with each active secret): any may match.
        let several = format!(
            "t={now},v1={},v1={}",
            sign("whsec_x", now, body),
            sign("whsec_a", now, body)
        );
        assert_eq!(
            verify(Some(&several), body, &secrets(&["whsec_a"]), now),
            Ok(now)
        );
        assert_eq!(
            verify(Some(&good), body, &secrets(&["whsec_b"]), now),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(Some(&good), b"{}", &secrets(&["whsec_a"]), now),
            Err(SignatureError::NoMatch)
        );
        assert_eq!(
            verify(Some(&good), body, &secrets(&["whsec_a"]), now + 301),
            Err(SignatureError::OutsideTolerance)
        );
        assert_eq!(
            verify(Some("v1=00"), body, &secrets(&["whsec_a"]), now),
            Err(SignatureError::Malformed)
        );
        assert_eq!(
            verify(None, body, &secrets(&["whsec_a"]), now),
            Err(SignatureError::Missing)
        );
        // A v0 (Stripe's test scheme) is never accepted.
        let v0 = format!("t={now},v0={}", sign("whsec_a", now, body));
        assert_eq!(
            verify(Some(&v0), body, &secrets(&["whsec_a"]), now),
            Err(SignatureError::Malformed)
        );
    }
}
