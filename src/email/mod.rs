//! Outgoing email: written to the outbox in the transaction that causes it, sealed
//! (encrypted) because bodies carry one-time tokens, and delivered afterwards by
//! [`sender::run`] over SMTP (`SMTP_URL`) or, without SMTP, to the log.

pub mod sender;

use chacha20poly1305::{
    ChaCha20Poly1305, KeyInit, Nonce,
    aead::{Aead, AeadCore, OsRng},
};
use hkdf::Hkdf;
use secrecy::{ExposeSecret, SecretString};
use sha2::Sha256;
use uuid::Uuid;

use crate::db::{DbError, Tx};

/// Encrypts and decrypts outbox bodies with a key derived from the master key.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

#[derive(Debug, thiserror::Error)]
#[error("a sealed email body could not be opened (wrong key or corrupted)")]
pub struct OpenError;

impl Sealer {
    pub fn new(master_key: &SecretString) -> Self {
        let hk = Hkdf::<Sha256>::new(Some(b"palisade"), master_key.expose_secret().as_bytes());
        let mut key = [0u8; 32];
        hk.expand(b"email outbox v1", &mut key)
            .expect("32 bytes is a valid HKDF-SHA256 output length");
        Self {
            cipher: ChaCha20Poly1305::new(&key.into()),
        }
    }

    /// nonce (12 bytes) || ciphertext+tag
    pub fn seal(&self, plaintext: &str) -> Vec<u8> {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let mut out = nonce.to_vec();
        out.extend(
            self.cipher
                .encrypt(&nonce, plaintext.as_bytes())
                .expect("ChaCha20-Poly1305 encryption of a byte string cannot fail"),
        );
        out
    }

    pub fn open(&self, sealed: &[u8]) -> Result<String, OpenError> {
        if sealed.len() < 12 {
            return Err(OpenError);
        }
        let (nonce, ciphertext) = sealed.split_at(12);
        let nonce: [u8; 12] = nonce.try_into().map_err(|_| OpenError)?;
        let plain = self
            .cipher
            .decrypt(&Nonce::from(nonce), ciphertext)
            .map_err(|_| OpenError)?;
        String::from_utf8(plain).map_err(|_| OpenError)
    }
}

/// An email to enqueue.
#[derive(Debug, Clone)]
pub struct OutgoingEmail {
    pub to: String,
    /// The recipient's account, if they have one (deleted with it).
    pub user_id: Option<Uuid>,
    /// The organization it concerns, if any (deleted with it).
    pub org_id: Option<Uuid>,
    /// Short machine name: `verify_email`, `password_reset`, `invitation`, ...
    pub template: &'static str,
    pub subject: String,
    /// Plain-text body; may contain one-time tokens (it is sealed before storing).
    pub body: String,
}

/// Writes `email` to the outbox inside `tx`: it is sent if and only if `tx` commits.
pub async fn enqueue(tx: &Tx, sealer: &Sealer, email: &OutgoingEmail) -> Result<Uuid, DbError> {
    let sealed = sealer.seal(&email.body);
    let row = tx
        .query_one(
            "select app.enqueue_email($1, $2, $3, $4, $5, $6)",
            &[
                &email.to,
                &email.user_id,
                &email.org_id,
                &email.template,
                &email.subject,
                &sealed,
            ],
        )
        .await?;
    Ok(row.get(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_round_trip_and_tamper_detection() {
        let sealer = Sealer::new(&"master-key-master-key-master-key-1".to_owned().into());
        let sealed = sealer.seal("token: abc");
        assert!(
            !sealed.windows(3).any(|w| w == b"abc"),
            "ciphertext hides the token"
        );
        assert_eq!(sealer.open(&sealed).unwrap(), "token: abc");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(sealer.open(&tampered).is_err());
        let other = Sealer::new(&"another-key-another-key-another-key".to_owned().into());
        assert!(other.open(&sealed).is_err());
    }
}
