//! The development store: one file per object under a directory (`<data_dir>/objects`).
//! Writes go to a temporary file renamed into place, so a reader never sees half an
//! object. Not for production (no replication, one machine): config.rs refuses it there.

use std::path::{Path, PathBuf};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncSeekExt, AsyncWriteExt};
use tokio_util::io::ReaderStream;

use super::{
    ByteRange, ByteStream, ListedObject, Metered, ObjectKey, ObjectStore, OverCap, StorageError,
    Stored,
};

pub struct LocalStore {
    root: PathBuf,
}

fn io_error(e: std::io::Error) -> StorageError {
    StorageError::Backend(e.to_string())
}

impl LocalStore {
    pub fn new(root: PathBuf) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&root)?;
        Ok(Self { root })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    fn path(&self, key: &ObjectKey) -> PathBuf {
        self.root.join(key.as_str())
    }

    fn temp_path(&self, key: &ObjectKey) -> PathBuf {
        let mut name = self.path(key).into_os_string();
        name.push(format!(".tmp-{}", uuid::Uuid::new_v4().simple()));
        PathBuf::from(name)
    }

    async fn open(&self, key: &ObjectKey) -> Result<tokio::fs::File, StorageError> {
        tokio::fs::File::open(self.path(key)).await.map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                StorageError::NotFound(key.to_string())
            } else {
                io_error(e)
            }
        })
    }

    async fn parent_dir(&self, key: &ObjectKey) -> Result<(), StorageError> {
        if let Some(parent) = self.path(key).parent() {
            tokio::fs::create_dir_all(parent).await.map_err(io_error)?;
        }
        Ok(())
    }
}

impl ObjectStore for LocalStore {
    async fn put(
        &self,
        key: &ObjectKey,
        body: Bytes,
        _content_type: &str,
    ) -> Result<(), StorageError> {
        self.parent_dir(key).await?;
        let temp = self.temp_path(key);
        tokio::fs::write(&temp, &body).await.map_err(io_error)?;
        tokio::fs::rename(&temp, self.path(key))
            .await
            .map_err(io_error)
    }

    async fn put_stream(
        &self,
        key: &ObjectKey,
        reader: &mut (dyn AsyncRead + Send + Unpin),
        _content_type: &str,
        max: u64,
    ) -> Result<Stored, StorageError> {
        self.parent_dir(key).await?;
        let temp = self.temp_path(key);
        let mut file = tokio::fs::File::create(&temp).await.map_err(io_error)?;
        let mut metered = Metered::new(reader, max);
        let copied = tokio::io::copy(&mut metered, &mut file).await;
        let flushed = match copied {
            Ok(_) => file.flush().await,
            Err(e) => Err(e),
        };
        drop(file);
        if let Err(e) = flushed {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(
                if metered.over() || e.get_ref().is_some_and(|i| i.is::<OverCap>()) {
                    StorageError::TooLarge { max }
                } else {
                    io_error(e)
                },
            );
        }
        tokio::fs::rename(&temp, self.path(key))
            .await
            .map_err(io_error)?;
        Ok(metered.finish())
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StorageError> {
        let mut file = self.open(key).await?;
        let mut buf = Vec::new();
        file.read_to_end(&mut buf).await.map_err(io_error)?;
        Ok(buf.into())
    }

    async fn get_stream(
        &self,
        key: &ObjectKey,
        range: Option<ByteRange>,
    ) -> Result<ByteStream, StorageError> {
        let mut file = self.open(key).await?;
        let stream = match range {
            None => ReaderStream::new(file).boxed(),
            Some(r) => {
                let size = file.metadata().await.map_err(io_error)?.len();
                if r.start >= size {
                    return Err(StorageError::RangeNotSatisfiable { size });
                }
                file.seek(std::io::SeekFrom::Start(r.start))
                    .await
                    .map_err(io_error)?;
                ReaderStream::new(file.take(r.len())).boxed()
            }
        };
        Ok(stream.map(|chunk| chunk.map_err(io_error)).boxed())
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        match tokio::fs::remove_file(self.path(key)).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_error(e)),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ListedObject>, StorageError> {
        let root = self.root.clone();
        let prefix = prefix.to_owned();
        tokio::task::spawn_blocking(move || {
            let mut out = Vec::new();
            let mut stack = vec![root.clone()];
            while let Some(dir) = stack.pop() {
                let entries = match std::fs::read_dir(&dir) {
                    Ok(e) => e,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                    Err(e) => return Err(io_error(e)),
                };
                for entry in entries {
                    let entry = entry.map_err(io_error)?;
                    let meta = entry.metadata().map_err(io_error)?;
                    if meta.is_dir() {
                        stack.push(entry.path());
                        continue;
                    }
                    let Ok(rel) = entry.path().strip_prefix(&root).map(Path::to_path_buf) else {
                        continue;
                    };
                    let key = rel.to_string_lossy().into_owned();
                    // Temporary files of writes in flight are not objects.
                    if key.starts_with(&prefix) && !key.contains(".tmp-") {
                        out.push(ListedObject {
                            key,
                            size: meta.len(),
                            last_modified: meta.modified().ok(),
                        });
                    }
                }
            }
            out.sort_by(|a, b| a.key.cmp(&b.key));
            Ok(out)
        })
        .await
        .map_err(|e| StorageError::Backend(e.to_string()))?
    }
}
