//! Object storage for workspace payloads (event segments, document bytes): any
//! S3-compatible server through `rust-s3`, or -- the zero-configuration development
//! default -- a directory on the local filesystem behind the same trait. Production
//! refuses the local store (config.rs), as it refuses the embedded database.
//!
//! Keys are [`ObjectKey`]s: built only from ids the server generated, always under
//! `orgs/{org_id}/`. Nothing here decides who may read what: every read starts from a row
//! that row-level security let the caller see, and the object store holds no access rules.

mod local;
mod s3;

use std::{fmt, path::PathBuf, pin::Pin, time::SystemTime};

use bytes::Bytes;
use futures_util::Stream;
use tokio::io::AsyncRead;
use uuid::Uuid;

pub use local::LocalStore;
pub use s3::{S3Settings, S3Store};

/// A key in the object store. Constructed only from server-generated ids, so no request
/// can name (or traverse to) an object of its choosing.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ObjectKey(String);

impl ObjectKey {
    /// One appended batch of a conversation's events (NDJSON, one event per line).
    pub fn segment(org_id: Uuid, conversation_id: Uuid, segment_id: Uuid) -> Self {
        Self(format!(
            "orgs/{org_id}/conversations/{conversation_id}/events/{segment_id}.ndjson"
        ))
    }

    /// A document's bytes, as uploaded.
    pub fn document(org_id: Uuid, document_id: Uuid) -> Self {
        Self(format!("orgs/{org_id}/documents/{document_id}"))
    }

    /// One day's audit chain heads (NDJSON: chain_id, scope, seq, hash), written by the
    /// worker: Palisade's own record, not an organization's data (reconcile never walks it).
    pub fn audit_heads(day: chrono::NaiveDate) -> Self {
        Self(format!("{}{day}.ndjson", Self::AUDIT_HEADS))
    }

    /// The prefix of the audit chain heads.
    pub const AUDIT_HEADS: &'static str = "audit/heads/";

    /// The prefix of every object: what reconcile walks.
    pub const ROOT: &'static str = "orgs/";

    /// A key the database returned (a generated `object_key` column, the purge queue, a
    /// listing during reconcile). Refuses anything outside `orgs/` or with a `..`.
    pub fn from_stored(key: &str) -> Result<Self, StorageError> {
        let ok = key.starts_with(Self::ROOT)
            && !key
                .split('/')
                .any(|part| part.is_empty() || part == "." || part == "..")
            && key.bytes().all(|b| b.is_ascii_graphic());
        if ok {
            Ok(Self(key.to_owned()))
        } else {
            Err(StorageError::Backend(format!(
                "refusing object key outside orgs/: {key:?}"
            )))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("object not found: {0}")]
    NotFound(String),
    #[error("range not satisfiable for an object of {size} bytes")]
    RangeNotSatisfiable { size: u64 },
    #[error("upload larger than {max} bytes")]
    TooLarge { max: u64 },
    #[error("object store: {0}")]
    Backend(String),
}

/// One listed object (reconcile only: serving never lists).
#[derive(Debug, Clone)]
pub struct ListedObject {
    pub key: String,
    pub size: u64,
    pub last_modified: Option<SystemTime>,
}

/// What a streamed upload stored.
#[derive(Debug, Clone)]
pub struct Stored {
    pub bytes: u64,
    pub sha256: [u8; 32],
}

pub type ByteStream = Pin<Box<dyn Stream<Item = Result<Bytes, StorageError>> + Send>>;

/// An inclusive byte range of an object.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ByteRange {
    pub start: u64,
    pub end: u64,
}

impl ByteRange {
    pub fn len(&self) -> u64 {
        self.end - self.start + 1
    }
    pub fn is_empty(&self) -> bool {
        false
    }
}

/// What every store does. Deleting a missing object succeeds (purges retry).
pub trait ObjectStore: Send + Sync {
    fn put(
        &self,
        key: &ObjectKey,
        body: Bytes,
        content_type: &str,
    ) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Streams `reader` into `key`, refusing (and leaving nothing) past `max` bytes.
    fn put_stream(
        &self,
        key: &ObjectKey,
        reader: &mut (dyn AsyncRead + Send + Unpin),
        content_type: &str,
        max: u64,
    ) -> impl Future<Output = Result<Stored, StorageError>> + Send;

    fn get(&self, key: &ObjectKey) -> impl Future<Output = Result<Bytes, StorageError>> + Send;

    /// The object's bytes in `range` (or all of it), as a stream.
    fn get_stream(
        &self,
        key: &ObjectKey,
        range: Option<ByteRange>,
    ) -> impl Future<Output = Result<ByteStream, StorageError>> + Send;

    fn delete(&self, key: &ObjectKey) -> impl Future<Output = Result<(), StorageError>> + Send;

    /// Every object under `prefix` (reconcile).
    fn list(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<ListedObject>, StorageError>> + Send;
}

/// Where the server keeps objects (`S3_*` settings, else the local directory).
#[derive(Debug, Clone)]
pub enum StorageSettings {
    /// No S3 configured: `<data_dir>/objects` (development only).
    Local(PathBuf),
    S3(S3Settings),
}

/// The configured store.
pub enum Storage {
    Local(LocalStore),
    S3(S3Store),
}

impl Storage {
    /// The store for `settings` (no I/O beyond creating the local directory).
    pub fn new(settings: &StorageSettings) -> anyhow::Result<Self> {
        Ok(match settings {
            StorageSettings::Local(dir) => Storage::Local(LocalStore::new(dir.clone())?),
            StorageSettings::S3(s3) => Storage::S3(S3Store::new(s3)?),
        })
    }

    /// Checks the store answers; an S3 bucket that does not exist yet is created.
    pub async fn ensure_ready(&self) -> anyhow::Result<()> {
        match self {
            Storage::Local(_) => Ok(()),
            Storage::S3(s3) => s3.ensure_bucket().await,
        }
    }

    /// A short description for the start-up log (no credentials).
    pub fn describe(&self) -> String {
        match self {
            Storage::Local(l) => format!("local directory {}", l.root().display()),
            Storage::S3(s) => s.describe(),
        }
    }
}

macro_rules! each {
    ($self:ident, $s:ident => $e:expr) => {
        match $self {
            Storage::Local($s) => $e,
            Storage::S3($s) => $e,
        }
    };
}

impl ObjectStore for Storage {
    async fn put(
        &self,
        key: &ObjectKey,
        body: Bytes,
        content_type: &str,
    ) -> Result<(), StorageError> {
        each!(self, s => s.put(key, body, content_type).await)
    }
    async fn put_stream(
        &self,
        key: &ObjectKey,
        reader: &mut (dyn AsyncRead + Send + Unpin),
        content_type: &str,
        max: u64,
    ) -> Result<Stored, StorageError> {
        each!(self, s => s.put_stream(key, reader, content_type, max).await)
    }
    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StorageError> {
        each!(self, s => s.get(key).await)
    }
    async fn get_stream(
        &self,
        key: &ObjectKey,
        range: Option<ByteRange>,
    ) -> Result<ByteStream, StorageError> {
        each!(self, s => s.get_stream(key, range).await)
    }
    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        each!(self, s => s.delete(key).await)
    }
    async fn list(&self, prefix: &str) -> Result<Vec<ListedObject>, StorageError> {
        each!(self, s => s.list(prefix).await)
    }
}

/// An `AsyncRead` that hashes what passes and fails past `max` bytes: uploads are
/// measured and capped as they stream, never held whole.
pub struct Metered<'r> {
    inner: &'r mut (dyn AsyncRead + Send + Unpin),
    hasher: sha2::Sha256,
    bytes: u64,
    max: u64,
}

impl<'r> Metered<'r> {
    pub fn new(inner: &'r mut (dyn AsyncRead + Send + Unpin), max: u64) -> Self {
        use sha2::Digest;
        Self {
            inner,
            hasher: sha2::Sha256::new(),
            bytes: 0,
            max,
        }
    }

    pub fn finish(self) -> Stored {
        use sha2::Digest;
        Stored {
            bytes: self.bytes,
            sha256: self.hasher.finalize().into(),
        }
    }

    /// True once more than `max` bytes were offered.
    pub fn over(&self) -> bool {
        self.bytes > self.max
    }
}

/// The marker error of [`Metered`] past its cap.
#[derive(Debug)]
pub struct OverCap;
impl fmt::Display for OverCap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("upload over its size cap")
    }
}
impl std::error::Error for OverCap {}

impl AsyncRead for Metered<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        use sha2::Digest;
        let before = buf.filled().len();
        let this = &mut *self;
        match Pin::new(&mut *this.inner).poll_read(cx, buf) {
            std::task::Poll::Ready(Ok(())) => {
                let new = &buf.filled()[before..];
                this.bytes += new.len() as u64;
                if this.bytes > this.max {
                    return std::task::Poll::Ready(Err(std::io::Error::other(OverCap)));
                }
                this.hasher.update(new);
                std::task::Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_built_from_ids_and_stored_keys_are_checked() {
        let (o, c, s) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let key = ObjectKey::segment(o, c, s);
        assert_eq!(
            key.as_str(),
            format!("orgs/{o}/conversations/{c}/events/{s}.ndjson")
        );
        assert!(ObjectKey::from_stored(key.as_str()).is_ok());
        for bad in [
            "orgs/../etc/passwd",
            "etc/passwd",
            "orgs//x",
            "orgs/a b",
            "/orgs/x",
            "orgs/x/",
        ] {
            assert!(ObjectKey::from_stored(bad).is_err(), "{bad}");
        }
    }
}
