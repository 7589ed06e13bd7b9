//! Envelope encryption of tenant secrets (no HTTP here).
//!
//! Key hierarchy: the **master key** (`PALISADE_MASTER_KEY`, never in the database)
//! derives a key-wrapping key ([`Purpose::DataKeyWrap`]); each org has **data keys**
//! (random 256-bit, `app.org_data_keys`), stored only wrapped by it, each wrap
//! labelled with the wrapping key's id so `palisade keys rotate-master` knows what to
//! rewrap; every **secret** (`app.secrets`) is sealed under its org's current data key.
//!
//! One AEAD everywhere: ChaCha20-Poly1305, the cipher the outbox already uses (one
//! primitive to review; constant-time in software on every CPU, where AES-GCM needs
//! AES-NI to be). A sealed secret is `version (u32, big endian) || nonce (12) ||
//! ciphertext+tag`, and its associated data binds it to its row -- org, owner, kind,
//! name and key version -- so a ciphertext copied to another row, scope or org does not
//! open. A wrapped data key's associated data binds it to its org and version.

use chacha20poly1305::{
    ChaCha20Poly1305, KeyInit, Nonce,
    aead::{Aead, AeadCore, OsRng, Payload},
};
use rand::RngCore;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::{
    crypto::{OpenError, Purpose, derive},
    db::{DbError, Tx},
};

const NONCE: usize = 12;

/// A key-wrapping key derived from one master key.
#[derive(Clone)]
struct Kek {
    id: String,
    cipher: ChaCha20Poly1305,
}

impl Kek {
    fn new(master_key: &SecretString) -> Self {
        let key = derive(master_key, Purpose::DataKeyWrap);
        let id = hex::encode(&Sha256::digest(key)[..8]);
        Self {
            id,
            cipher: ChaCha20Poly1305::new(&key.into()),
        }
    }
}

/// The master keys: the current one wraps, previous ones (`PALISADE_MASTER_KEY_PREVIOUS`)
/// still unwrap until `palisade keys rotate-master` has rewrapped everything.
#[derive(Clone)]
pub struct MasterKeys {
    current: Kek,
    previous: Vec<Kek>,
}

fn data_key_aad(org_id: Uuid, version: i32) -> Vec<u8> {
    let mut aad = b"palisade data key v1\0".to_vec();
    aad.extend_from_slice(org_id.as_bytes());
    aad.extend_from_slice(&version.to_be_bytes());
    aad
}

impl MasterKeys {
    pub fn new(current: &SecretString, previous: &[SecretString]) -> Self {
        Self {
            current: Kek::new(current),
            previous: previous.iter().map(Kek::new).collect(),
        }
    }

    /// The current master key's id (not secret): what `master_key_id` says of its wraps.
    pub fn current_id(&self) -> &str {
        &self.current.id
    }

    /// Whether a wrap made under `master_key_id` can be opened with the keys configured.
    pub fn knows(&self, master_key_id: &str) -> bool {
        self.kek(master_key_id).is_some()
    }

    fn kek(&self, id: &str) -> Option<&Kek> {
        std::iter::once(&self.current)
            .chain(&self.previous)
            .find(|k| k.id == id)
    }

    /// `nonce || ChaCha20-Poly1305(key)` under the current master key.
    pub fn wrap(&self, org_id: Uuid, version: i32, key: &[u8; 32]) -> Vec<u8> {
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = data_key_aad(org_id, version);
        let mut out = nonce.to_vec();
        out.extend(
            self.current
                .cipher
                .encrypt(
                    &nonce,
                    Payload {
                        msg: key,
                        aad: &aad,
                    },
                )
                .expect("ChaCha20-Poly1305 encryption of 32 bytes cannot fail"),
        );
        out
    }

    /// Opens a wrapped data key of `org_id`, version `version`.
    pub fn unwrap(
        &self,
        master_key_id: &str,
        org_id: Uuid,
        version: i32,
        wrapped: &[u8],
    ) -> Result<DataKey, OpenError> {
        let key = self.unwrap_bytes(master_key_id, org_id, version, wrapped)?;
        Ok(DataKey::from_bytes(org_id, version, &key))
    }

    /// The raw data key of a wrap (for rewrapping it; never leaves this module).
    fn unwrap_bytes(
        &self,
        master_key_id: &str,
        org_id: Uuid,
        version: i32,
        wrapped: &[u8],
    ) -> Result<[u8; 32], OpenError> {
        let kek = self.kek(master_key_id).ok_or(OpenError)?;
        if wrapped.len() < NONCE {
            return Err(OpenError);
        }
        let (nonce, ct) = wrapped.split_at(NONCE);
        let aad = data_key_aad(org_id, version);
        let key = kek
            .cipher
            .decrypt(&nonce_of(nonce)?, Payload { msg: ct, aad: &aad })
            .map_err(|_| OpenError)?;
        key.try_into().map_err(|_| OpenError)
    }
}

fn nonce_of(bytes: &[u8]) -> Result<Nonce, OpenError> {
    let bytes: [u8; NONCE] = bytes.try_into().map_err(|_| OpenError)?;
    Ok(Nonce::from(bytes))
}

/// A fresh random data key.
pub fn new_data_key() -> [u8; 32] {
    let mut key = [0u8; 32];
    OsRng.fill_bytes(&mut key);
    key
}

/// Where a secret lives: what its associated data binds it to.
#[derive(Debug, Clone, Copy)]
pub struct SecretSlot<'a> {
    pub org_id: Uuid,
    /// The member it belongs to; `None`: org-wide.
    pub user_id: Option<Uuid>,
    /// `secret` or `setting`.
    pub kind: &'a str,
    pub name: &'a str,
}

impl SecretSlot<'_> {
    fn aad(&self, version: i32) -> Vec<u8> {
        let mut aad = b"palisade secret v1\0".to_vec();
        aad.extend_from_slice(self.org_id.as_bytes());
        match self.user_id {
            Some(u) => aad.extend_from_slice(u.as_bytes()),
            None => aad.extend_from_slice(b"org"),
        }
        aad.push(0);
        aad.extend_from_slice(self.kind.as_bytes());
        aad.push(0);
        aad.extend_from_slice(self.name.as_bytes());
        aad.push(0);
        aad.extend_from_slice(&version.to_be_bytes());
        aad
    }
}

/// One org's data key, opened.
#[derive(Clone)]
pub struct DataKey {
    org_id: Uuid,
    version: i32,
    cipher: ChaCha20Poly1305,
}

impl DataKey {
    fn from_bytes(org_id: Uuid, version: i32, key: &[u8; 32]) -> Self {
        Self {
            org_id,
            version,
            cipher: ChaCha20Poly1305::new(key.into()),
        }
    }

    pub fn version(&self) -> i32 {
        self.version
    }

    /// `version || nonce || ciphertext+tag`, bound to `slot`.
    pub fn seal(&self, slot: &SecretSlot<'_>, plaintext: &str) -> Vec<u8> {
        debug_assert_eq!(slot.org_id, self.org_id);
        let nonce = ChaCha20Poly1305::generate_nonce(&mut OsRng);
        let aad = slot.aad(self.version);
        let mut out = (self.version as u32).to_be_bytes().to_vec();
        out.extend_from_slice(&nonce);
        out.extend(
            self.cipher
                .encrypt(
                    &nonce,
                    Payload {
                        msg: plaintext.as_bytes(),
                        aad: &aad,
                    },
                )
                .expect("ChaCha20-Poly1305 encryption of a byte string cannot fail"),
        );
        out
    }

    /// Opens a secret sealed for `slot`; fails for another slot, org or key version.
    pub fn open(&self, slot: &SecretSlot<'_>, sealed: &[u8]) -> Result<String, OpenError> {
        if slot.org_id != self.org_id || sealed_version(sealed) != Some(self.version) {
            return Err(OpenError);
        }
        let (nonce, ct) = sealed[4..].split_at(NONCE);
        let aad = slot.aad(self.version);
        let plain = self
            .cipher
            .decrypt(&nonce_of(nonce)?, Payload { msg: ct, aad: &aad })
            .map_err(|_| OpenError)?;
        String::from_utf8(plain).map_err(|_| OpenError)
    }
}

/// The data key version a sealed secret names, if it is long enough to be one.
pub fn sealed_version(sealed: &[u8]) -> Option<i32> {
    if sealed.len() < 4 + NONCE + 16 {
        return None;
    }
    let v = u32::from_be_bytes(sealed[..4].try_into().ok()?);
    i32::try_from(v).ok()
}

/// Why a data key could not be had.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    Db(#[from] DbError),
    /// The configured master keys cannot open the org's data key: a deployment error
    /// (the master key changed without `PALISADE_MASTER_KEY_PREVIOUS`).
    #[error(
        "the configured master keys cannot open data key v{version} of org {org_id} \
         (wrapped by master key {master_key_id}): set PALISADE_MASTER_KEY_PREVIOUS to the \
         key it was wrapped with, then run `palisade keys rotate-master`"
    )]
    Unopenable {
        org_id: Uuid,
        version: i32,
        master_key_id: String,
    },
    /// A stored ciphertext does not open in its own row: moved or altered in the database.
    #[error("secret {name:?} of org {org_id} does not open in its row: moved or altered")]
    Tampered { org_id: Uuid, name: String },
    /// `palisade keys rotate-org` of an org that does not exist.
    #[error("no organization {0}")]
    NoSuchOrg(Uuid),
}

impl From<KeyError> for crate::http::problem::ApiError {
    fn from(e: KeyError) -> Self {
        match e {
            KeyError::Db(e) => e.into(),
            KeyError::Unopenable { .. } | KeyError::Tampered { .. } | KeyError::NoSuchOrg(_) => {
                crate::http::problem::ApiError::internal(&e)
            }
        }
    }
}

/// The org in context's data key `version`, opened (RLS: the caller's own org only).
pub async fn data_key(
    tx: &Tx,
    keys: &MasterKeys,
    org_id: Uuid,
    version: i32,
) -> Result<Option<DataKey>, KeyError> {
    let row = tx
        .query_opt(
            "select wrapped_key, master_key_id from app.org_data_keys where org_id = $1 and version = $2",
            &[&org_id, &version],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let (wrapped, mk): (Vec<u8>, String) = (row.get(0), row.get(1));
    keys.unwrap(&mk, org_id, version, &wrapped)
        .map(Some)
        .map_err(|_| KeyError::Unopenable {
            org_id,
            version,
            master_key_id: mk,
        })
}

/// The data key new secrets of the org in context are sealed with: its newest unretired
/// version, created (version 1) on first use. Race-safe: concurrent first uses insert
/// once and all read the winner's.
pub async fn current_data_key(
    tx: &Tx,
    keys: &MasterKeys,
    org_id: Uuid,
) -> Result<DataKey, KeyError> {
    let newest = "select version from app.org_data_keys
                   where org_id = $1 and retired_at is null order by version desc limit 1";
    let version: Option<i32> = match tx.query_opt(newest, &[&org_id]).await? {
        Some(row) => Some(row.get(0)),
        None => {
            let wrapped = keys.wrap(org_id, 1, &new_data_key());
            tx.execute(
                "insert into app.org_data_keys (version, wrapped_key, master_key_id)
                 values (1, $1, $2) on conflict do nothing",
                &[&wrapped, &keys.current_id()],
            )
            .await?;
            tx.query_opt(newest, &[&org_id]).await?.map(|r| r.get(0))
        }
    };
    let version = version.ok_or(KeyError::Unopenable {
        org_id,
        version: 1,
        master_key_id: "none".into(),
    })?;
    data_key(tx, keys, org_id, version)
        .await?
        .ok_or(KeyError::Unopenable {
            org_id,
            version,
            master_key_id: "none".into(),
        })
}

/// Seals `value` for `slot` under the org's current data key: `(ciphertext, version)`.
pub async fn seal(
    tx: &Tx,
    keys: &MasterKeys,
    slot: &SecretSlot<'_>,
    value: &str,
) -> Result<(Vec<u8>, i32), KeyError> {
    let key = current_data_key(tx, keys, slot.org_id).await?;
    Ok((key.seal(slot, value), key.version()))
}

/// Opens the secret stored in `slot` (RLS decides whether the caller sees its row):
/// `None` when there is none. A row whose ciphertext does not open -- copied from
/// another row or org, or altered -- is an integrity failure, never a value.
pub async fn open(
    tx: &Tx,
    keys: &MasterKeys,
    slot: &SecretSlot<'_>,
) -> Result<Option<String>, KeyError> {
    let row = tx
        .query_opt(
            "select ciphertext, key_version from app.secrets
              where org_id = $1 and kind = $2 and user_id is not distinct from $3 and name = $4",
            &[&slot.org_id, &slot.kind, &slot.user_id, &slot.name],
        )
        .await?;
    let Some(row) = row else { return Ok(None) };
    let (sealed, version): (Vec<u8>, i32) = (row.get(0), row.get(1));
    let tampered = || KeyError::Tampered {
        org_id: slot.org_id,
        name: slot.name.to_owned(),
    };
    let key = data_key(tx, keys, slot.org_id, version)
        .await?
        .ok_or_else(tampered)?;
    key.open(slot, &sealed).map(Some).map_err(|_| tampered())
}

/// Runs `f` in one transaction on `client` (the operator's connection, as the schema
/// owner): committed on `Ok`, rolled back otherwise.
async fn in_transaction<T>(
    client: &tokio_postgres::Client,
    f: impl AsyncFnOnce(&tokio_postgres::Client) -> Result<T, KeyError>,
) -> Result<T, KeyError> {
    client.batch_execute("begin").await.map_err(DbError::from)?;
    match f(client).await {
        Ok(v) => {
            client
                .batch_execute("commit")
                .await
                .map_err(DbError::from)?;
            Ok(v)
        }
        Err(e) => {
            let _ = client.batch_execute("rollback").await;
            Err(e)
        }
    }
}

fn db(e: tokio_postgres::Error) -> KeyError {
    KeyError::Db(DbError::from(e))
}

/// What `palisade keys rotate-master` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RewrapReport {
    /// The current master key's id: every data key is wrapped by it now.
    pub master_key_id: String,
    /// Data keys rewrapped from a previous master key.
    pub rewrapped: u64,
    /// Data keys that already were wrapped by the current one.
    pub unchanged: u64,
}

/// `palisade keys rotate-master`: in one transaction, rewraps every data key that a
/// previous master key (`PALISADE_MASTER_KEY_PREVIOUS`) wrapped under the current one and
/// sets its `rewrapped_at`. The secrets themselves are not touched (their data keys do
/// not change). A wrap that no configured master key opens fails the whole command,
/// naming the org and version. Runs as the schema owner (RLS: every org).
pub async fn rotate_master(
    client: &tokio_postgres::Client,
    keys: &MasterKeys,
) -> Result<RewrapReport, KeyError> {
    in_transaction(client, async |client| {
        let stale = client
            .query(
                "select org_id, version, wrapped_key, master_key_id from app.org_data_keys
                  where master_key_id <> $1 order by org_id, version for update",
                &[&keys.current_id()],
            )
            .await
            .map_err(db)?;
        for row in &stale {
            let (org_id, version, wrapped, mk): (Uuid, i32, Vec<u8>, String) =
                (row.get(0), row.get(1), row.get(2), row.get(3));
            let raw = keys
                .unwrap_bytes(&mk, org_id, version, &wrapped)
                .map_err(|_| KeyError::Unopenable {
                    org_id,
                    version,
                    master_key_id: mk.clone(),
                })?;
            client
                .execute(
                    "update app.org_data_keys
                        set wrapped_key = $3, master_key_id = $4, rewrapped_at = now()
                      where org_id = $1 and version = $2",
                    &[
                        &org_id,
                        &version,
                        &keys.wrap(org_id, version, &raw),
                        &keys.current_id(),
                    ],
                )
                .await
                .map_err(db)?;
        }
        let total: i64 = client
            .query_one("select count(*) from app.org_data_keys", &[])
            .await
            .map_err(db)?
            .get(0);
        Ok(RewrapReport {
            master_key_id: keys.current_id().to_owned(),
            rewrapped: stale.len() as u64,
            unchanged: total.unsigned_abs() - stale.len() as u64,
        })
    })
    .await
}

/// What `palisade keys rotate-org` did.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RotateOrgReport {
    pub org_id: Uuid,
    /// The new data key version, which now seals every secret of the org.
    pub version: i32,
    /// Secrets opened and sealed again under it.
    pub resealed: u64,
    /// Older versions retired by this run.
    pub retired: u64,
}

/// `palisade keys rotate-org <org_id>`: in one transaction, a new data key version
/// (newest + 1) wrapped by the current master key; every secret of the org opened with its
/// version and sealed again under the new one; older versions retired. A secret that does
/// not open in its row fails the whole command (`Tampered`), changing nothing. The org's
/// data keys are locked for the run, so a concurrent first seal waits; a secret sealed
/// under an old version by a request that read it before the lock is left on it (`keys
/// status` counts such secrets; running rotate-org again reseals them).
pub async fn rotate_org(
    client: &tokio_postgres::Client,
    keys: &MasterKeys,
    org_id: Uuid,
) -> Result<RotateOrgReport, KeyError> {
    in_transaction(client, async |client| {
        let exists = client
            .query_opt(
                "select 1 from app.orgs where id = $1 for key share",
                &[&org_id],
            )
            .await
            .map_err(db)?;
        if exists.is_none() {
            return Err(KeyError::NoSuchOrg(org_id));
        }
        let existing = client
            .query(
                "select version, wrapped_key, master_key_id from app.org_data_keys
                  where org_id = $1 order by version for update",
                &[&org_id],
            )
            .await
            .map_err(db)?;
        let mut opened = std::collections::HashMap::new();
        for row in &existing {
            let (version, wrapped, mk): (i32, Vec<u8>, String) =
                (row.get(0), row.get(1), row.get(2));
            let key =
                keys.unwrap(&mk, org_id, version, &wrapped)
                    .map_err(|_| KeyError::Unopenable {
                        org_id,
                        version,
                        master_key_id: mk.clone(),
                    })?;
            opened.insert(version, key);
        }
        let version = opened.keys().max().map_or(1, |v| v + 1);
        let raw = new_data_key();
        client
            .execute(
                "insert into app.org_data_keys (org_id, version, wrapped_key, master_key_id)
                 values ($1, $2, $3, $4)",
                &[
                    &org_id,
                    &version,
                    &keys.wrap(org_id, version, &raw),
                    &keys.current_id(),
                ],
            )
            .await
            .map_err(db)?;
        let new_key = DataKey::from_bytes(org_id, version, &raw);
        let rows = client
            .query(
                "select id, user_id, kind, name, ciphertext, key_version from app.secrets
                  where org_id = $1 order by id for update",
                &[&org_id],
            )
            .await
            .map_err(db)?;
        for row in &rows {
            let (id, user_id, kind, name, sealed, old): (
                Uuid,
                Option<Uuid>,
                String,
                String,
                Vec<u8>,
                i32,
            ) = (
                row.get(0),
                row.get(1),
                row.get(2),
                row.get(3),
                row.get(4),
                row.get(5),
            );
            let slot = SecretSlot {
                org_id,
                user_id,
                kind: &kind,
                name: &name,
            };
            let tampered = || KeyError::Tampered {
                org_id,
                name: name.clone(),
            };
            let value = opened
                .get(&old)
                .ok_or_else(tampered)?
                .open(&slot, &sealed)
                .map_err(|_| tampered())?;
            client
                .execute(
                    "update app.secrets set ciphertext = $2, key_version = $3 where id = $1",
                    &[&id, &new_key.seal(&slot, &value), &version],
                )
                .await
                .map_err(db)?;
        }
        let retired = client
            .execute(
                "update app.org_data_keys set retired_at = now()
                  where org_id = $1 and version < $2 and retired_at is null",
                &[&org_id, &version],
            )
            .await
            .map_err(db)?;
        Ok(RotateOrgReport {
            org_id,
            version,
            resealed: rows.len() as u64,
            retired,
        })
    })
    .await
}

/// Data keys wrapped by one master key (`palisade keys status`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct MasterKeyStatus {
    pub master_key_id: String,
    /// `current`, `previous` (configured, still opens) or `unknown` (no configured key
    /// opens these: set it in PALISADE_MASTER_KEY_PREVIOUS).
    pub configured: &'static str,
    pub data_keys: i64,
    pub orgs: i64,
}

/// An org with secrets still sealed under a retired data key version.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RetiredUse {
    pub org_id: Uuid,
    pub secrets: i64,
}

/// `palisade keys status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyStatus {
    pub current_master_key_id: String,
    pub master_keys: Vec<MasterKeyStatus>,
    pub secrets_on_retired_versions: Vec<RetiredUse>,
}

/// `palisade keys status`: per master key id, the data keys it wraps; per org, the
/// secrets still on retired versions (run `keys rotate-org` for those).
pub async fn key_status(
    client: &tokio_postgres::Client,
    keys: &MasterKeys,
) -> Result<KeyStatus, KeyError> {
    let rows = client
        .query(
            "select master_key_id, count(*), count(distinct org_id) from app.org_data_keys
              group by master_key_id order by master_key_id",
            &[],
        )
        .await
        .map_err(db)?;
    let master_keys = rows
        .iter()
        .map(|r| {
            let id: String = r.get(0);
            let configured = if id == keys.current_id() {
                "current"
            } else if keys.knows(&id) {
                "previous"
            } else {
                "unknown"
            };
            MasterKeyStatus {
                master_key_id: id,
                configured,
                data_keys: r.get(1),
                orgs: r.get(2),
            }
        })
        .collect();
    let rows = client
        .query(
            "select s.org_id, count(*) from app.secrets s
               join app.org_data_keys k on k.org_id = s.org_id and k.version = s.key_version
              where k.retired_at is not null group by s.org_id order by s.org_id",
            &[],
        )
        .await
        .map_err(db)?;
    Ok(KeyStatus {
        current_master_key_id: keys.current_id().to_owned(),
        master_keys,
        secrets_on_retired_versions: rows
            .iter()
            .map(|r| RetiredUse {
                org_id: r.get(0),
                secrets: r.get(1),
            })
            .collect(),
    })
}

/// The last four characters of a setting's value (its hint); fewer for short values.
pub fn hint(value: &str) -> String {
    let chars: Vec<char> = value.chars().collect();
    chars[chars.len().saturating_sub(4)..].iter().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keys(k: &str) -> MasterKeys {
        MasterKeys::new(&SecretString::from(k.to_owned()), &[])
    }

    #[test]
    fn a_secret_opens_only_in_its_own_slot() {
        let org = Uuid::new_v4();
        let dk = DataKey::from_bytes(org, 1, &new_data_key());
        let slot = SecretSlot {
            org_id: org,
            user_id: None,
            kind: "secret",
            name: "TOKEN",
        };
        let sealed = dk.seal(&slot, "canary");
        assert_eq!(dk.open(&slot, &sealed).unwrap(), "canary");
        assert_eq!(sealed_version(&sealed), Some(1));
        let other_name = SecretSlot {
            name: "OTHER",
            ..slot
        };
        assert!(dk.open(&other_name, &sealed).is_err());
        let other_owner = SecretSlot {
            user_id: Some(Uuid::new_v4()),
            ..slot
        };
        assert!(dk.open(&other_owner, &sealed).is_err());
        let other_kind = SecretSlot {
            kind: "setting",
            ..slot
        };
        assert!(dk.open(&other_kind, &sealed).is_err());
        let mut flipped = sealed.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(dk.open(&slot, &flipped).is_err());
    }

    #[test]
    fn data_keys_unwrap_under_their_master_key_org_and_version_only() {
        let old = keys("an old master key of at least 32 bytes....");
        let org = Uuid::new_v4();
        let raw = new_data_key();
        let wrapped = old.wrap(org, 1, &raw);
        assert!(old.unwrap(old.current_id(), org, 1, &wrapped).is_ok());
        assert!(old.unwrap(old.current_id(), org, 2, &wrapped).is_err());
        assert!(
            old.unwrap(old.current_id(), Uuid::new_v4(), 1, &wrapped)
                .is_err()
        );
        let new = keys("a new master key of at least 32 bytes......");
        assert_ne!(new.current_id(), old.current_id());
        assert!(new.unwrap(old.current_id(), org, 1, &wrapped).is_err());
        let both = MasterKeys::new(
            &SecretString::from("a new master key of at least 32 bytes......".to_owned()),
            &[SecretString::from(
                "an old master key of at least 32 bytes....".to_owned(),
            )],
        );
        assert!(both.knows(old.current_id()));
        let dk = both.unwrap(old.current_id(), org, 1, &wrapped).unwrap();
        let slot = SecretSlot {
            org_id: org,
            user_id: None,
            kind: "secret",
            name: "X",
        };
        let sealed = DataKey::from_bytes(org, 1, &raw).seal(&slot, "v");
        assert_eq!(dk.open(&slot, &sealed).unwrap(), "v");
    }

    #[test]
    fn hints_are_the_last_four_characters() {
        assert_eq!(hint("sk-abcdef1234"), "1234");
        assert_eq!(hint("ab"), "ab");
        assert_eq!(hint("ééééé"), "éééé");
    }
}
