//! Keys and secrets derived from the master key, one per purpose, and opaque tokens.
//!
//! Every key here is HKDF-SHA256 of `PALISADE_MASTER_KEY` under its own label
//! ([`Purpose`]), so no key ever serves two purposes: a ciphertext sealed for the email
//! outbox cannot be opened as a refresh-token successor, and neither key is the one
//! that proves sessions to the database.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chacha20poly1305::{
    ChaCha20Poly1305, KeyInit, Nonce,
    aead::{Aead, AeadCore, OsRng},
};
use hkdf::Hkdf;
use hmac::{Hmac, Mac};
use rand::RngCore;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256};
use uuid::Uuid;

/// What a derived key is for; the HKDF label of each is fixed forever (changing one
/// makes everything sealed under it unreadable).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Bodies of queued emails (they carry one-time tokens).
    EmailOutbox,
    /// A rotated refresh token's successor, kept for its short grace window.
    RefreshSuccessor,
    /// The HMAC that proves a session to `app.set_request_context()`.
    SessionProof,
    /// Wrapping the orgs' data keys (envelope encryption of secrets: `secrets.rs`).
    DataKeyWrap,
}

impl Purpose {
    fn label(self) -> &'static [u8] {
        match self {
            // The outbox's label predates the others; kept so queued emails stay readable.
            Purpose::EmailOutbox => b"email outbox v1",
            Purpose::RefreshSuccessor => b"refresh successor v1",
            Purpose::SessionProof => b"session proof v1",
            Purpose::DataKeyWrap => b"data key wrap v1",
        }
    }
}

/// The 256-bit key of `purpose`: HKDF-SHA256 of the master key under the purpose's label.
pub fn derive(master_key: &SecretString, purpose: Purpose) -> [u8; 32] {
    let hk = Hkdf::<Sha256>::new(Some(b"palisade"), master_key.expose_secret().as_bytes());
    let mut key = [0u8; 32];
    hk.expand(purpose.label(), &mut key)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    key
}

/// Authenticated encryption (ChaCha20-Poly1305) under one purpose's key.
#[derive(Clone)]
pub struct Sealer {
    cipher: ChaCha20Poly1305,
}

#[derive(Debug, thiserror::Error)]
#[error("sealed data could not be opened (wrong key or purpose, or corrupted)")]
pub struct OpenError;

impl Sealer {
    pub fn new(master_key: &SecretString, purpose: Purpose) -> Self {
        Self {
            cipher: ChaCha20Poly1305::new(&derive(master_key, purpose).into()),
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

/// Session proofs: HMAC-SHA256 of a session id under a key only the server holds. The
/// database stores the proof's SHA-256 when the session starts and checks it in
/// `app.set_request_context()`, so SQL that knows a session id still cannot act as it.
#[derive(Clone)]
pub struct SessionProofs {
    key: [u8; 32],
}

impl SessionProofs {
    pub fn new(master_key: &SecretString) -> Self {
        Self {
            key: derive(master_key, Purpose::SessionProof),
        }
    }

    pub fn proof(&self, session_id: Uuid) -> [u8; 32] {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.key).expect("HMAC takes any key length");
        mac.update(session_id.as_bytes());
        mac.finalize().into_bytes().into()
    }

    /// What the database keeps: SHA-256 of the proof.
    pub fn proof_hash(&self, session_id: Uuid) -> Vec<u8> {
        Sha256::digest(self.proof(session_id)).to_vec()
    }
}

/// Opaque random tokens (refresh, invitation, verification, reset): 256 random bits,
/// shown once, stored only as SHA-256 and looked up by that hash.
pub mod tokens {
    use super::*;

    /// A new token: 32 random bytes from the OS CSPRNG, base64url without padding.
    pub fn generate() -> String {
        let mut bytes = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut bytes);
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// What the database stores: SHA-256 of the token text.
    pub fn hash(token: &str) -> Vec<u8> {
        Sha256::digest(token.as_bytes()).to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(text: &str) -> SecretString {
        text.to_owned().into()
    }

    #[test]
    fn seal_round_trip_and_tamper_detection() {
        let sealer = Sealer::new(
            &key("master-key-master-key-master-key-1"),
            Purpose::EmailOutbox,
        );
        let sealed = sealer.seal("token: abc");
        assert!(
            !sealed.windows(3).any(|w| w == b"abc"),
            "ciphertext hides the token"
        );
        assert_eq!(sealer.open(&sealed).unwrap(), "token: abc");
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(sealer.open(&tampered).is_err());
        let other = Sealer::new(
            &key("another-key-another-key-another-key"),
            Purpose::EmailOutbox,
        );
        assert!(other.open(&sealed).is_err());
    }

    #[test]
    fn each_purpose_has_its_own_key() {
        let master = key("master-key-master-key-master-key-1");
        let outbox = Sealer::new(&master, Purpose::EmailOutbox);
        let refresh = Sealer::new(&master, Purpose::RefreshSuccessor);
        assert!(refresh.open(&outbox.seal("x")).is_err());
        assert!(outbox.open(&refresh.seal("x")).is_err());
        let proofs = SessionProofs::new(&master);
        assert_ne!(proofs.key, derive(&master, Purpose::EmailOutbox));
        assert_ne!(proofs.key, derive(&master, Purpose::RefreshSuccessor));
    }

    #[test]
    fn session_proofs_are_stable_per_id_and_key() {
        let proofs = SessionProofs::new(&key("master-key-master-key-master-key-1"));
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        assert_eq!(proofs.proof(a), proofs.proof(a));
        assert_ne!(proofs.proof(a), proofs.proof(b));
        assert_eq!(
            proofs.proof_hash(a),
            Sha256::digest(proofs.proof(a)).to_vec()
        );
        let other = SessionProofs::new(&key("master-key-master-key-master-key-2"));
        assert_ne!(proofs.proof(a), other.proof(a));
    }

    #[test]
    fn tokens_are_long_random_and_hash_stably() {
        let (a, b) = (tokens::generate(), tokens::generate());
        assert_ne!(a, b);
        assert_eq!(a.len(), 43, "32 bytes in base64url without padding");
        assert_eq!(tokens::hash(&a), tokens::hash(&a));
        assert_ne!(tokens::hash(&a), tokens::hash(&b));
    }
}
