//! Passwords: argon2id with OWASP's minimum parameters (m = 19456 KiB, t = 2, p = 1),
//! computed on the blocking pool behind a semaphore so logins can never starve the
//! async runtime; when every slot is busy for too long, callers get [`HashError::Busy`]
//! (HTTP 503 with Retry-After) instead of an unbounded queue.

use std::{sync::Arc, time::Duration};

use argon2::{
    Algorithm, Argon2, Params, PasswordHash, PasswordHasher as _, PasswordVerifier, Version,
    password_hash::SaltString,
};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::Semaphore;

#[derive(Debug, thiserror::Error)]
pub enum HashError {
    #[error("password hashing is saturated; retry shortly")]
    Busy,
    #[error("password hashing failed: {0}")]
    Internal(String),
}

fn argon2() -> Argon2<'static> {
    let params = Params::new(19_456, 2, 1, None).expect("valid argon2 parameters");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

#[derive(Clone)]
pub struct Passwords {
    slots: Arc<Semaphore>,
    max: usize,
    wait: Duration,
    /// A real hash of a random password: unknown emails verify against it, so a
    /// login for a missing account costs the same time as a wrong password.
    dummy_hash: Arc<String>,
}

impl Passwords {
    pub fn new(concurrency: usize, wait: Duration) -> Self {
        let dummy = hash_blocking(&crate::crypto::tokens::generate()).expect("hashing works");
        Self {
            slots: Arc::new(Semaphore::new(concurrency.max(1))),
            max: concurrency.max(1),
            wait,
            dummy_hash: Arc::new(dummy),
        }
    }

    /// Hashes running now, and how many may run at once.
    pub fn permits(&self) -> (usize, usize) {
        let max = self.max;
        (max.saturating_sub(self.slots.available_permits()), max)
    }

    async fn run<T: Send + 'static>(
        &self,
        job: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        let permit = tokio::time::timeout(self.wait, self.slots.clone().acquire_owned())
            .await
            .map_err(|_| HashError::Busy)?
            .map_err(|_| HashError::Busy)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            job()
        })
        .await
        .map_err(|e| HashError::Internal(e.to_string()))
    }

    /// PHC-format argon2id hash of `password`.
    pub async fn hash(&self, password: SecretString) -> Result<String, HashError> {
        self.run(move || hash_blocking(password.expose_secret()))
            .await?
            .map_err(HashError::Internal)
    }

    /// Verifies `password` against `stored`, or against the dummy hash when there is
    /// no stored hash (unknown account) -- returning false after the same work.
    pub async fn verify(
        &self,
        password: SecretString,
        stored: Option<String>,
    ) -> Result<bool, HashError> {
        let known = stored.is_some();
        let stored = stored.unwrap_or_else(|| self.dummy_hash.as_ref().clone());
        let ok = self
            .run(move || {
                PasswordHash::new(&stored).is_ok_and(|parsed| {
                    argon2()
                        .verify_password(password.expose_secret().as_bytes(), &parsed)
                        .is_ok()
                })
            })
            .await?;
        Ok(ok && known)
    }
}

fn hash_blocking(password: &str) -> Result<String, String> {
    let salt = SaltString::generate(&mut rand::rngs::OsRng);
    argon2()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn hash_verify_and_dummy() {
        let pw = Passwords::new(2, Duration::from_secs(5));
        let hash = pw
            .hash("correct horse battery".to_owned().into())
            .await
            .unwrap();
        assert!(hash.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"));
        assert!(
            pw.verify(
                "correct horse battery".to_owned().into(),
                Some(hash.clone())
            )
            .await
            .unwrap()
        );
        assert!(
            !pw.verify("wrong".to_owned().into(), Some(hash))
                .await
                .unwrap()
        );
        assert!(!pw.verify("anything".to_owned().into(), None).await.unwrap());
    }

    #[tokio::test]
    async fn saturated_pool_answers_busy() {
        let pw = Passwords::new(1, Duration::from_millis(1));
        let held = pw.slots.clone().acquire_owned().await.unwrap();
        let err = pw
            .hash("whatever-password".to_owned().into())
            .await
            .unwrap_err();
        assert!(matches!(err, HashError::Busy));
        drop(held);
        assert!(pw.hash("whatever-password".to_owned().into()).await.is_ok());
    }
}
