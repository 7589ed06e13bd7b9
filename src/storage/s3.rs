//! Any S3-compatible server (AWS S3, MinIO, s3s-fs in tests) through `rust-s3`.
//! Path-style addressing by default (MinIO and most self-hosted servers want it).

use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use s3::{Bucket, BucketConfiguration, Region, creds::Credentials};
use secrecy::{ExposeSecret, SecretString};
use tokio::io::AsyncRead;

use super::{
    ByteRange, ByteStream, ListedObject, Metered, ObjectKey, ObjectStore, StorageError, Stored,
};

/// `S3_ENDPOINT`, `S3_BUCKET`, `S3_REGION`, `S3_ACCESS_KEY_ID`, `S3_SECRET_ACCESS_KEY`,
/// `S3_PATH_STYLE`.
#[derive(Debug, Clone)]
pub struct S3Settings {
    /// e.g. `http://127.0.0.1:9000`; `None` for AWS itself (the region's endpoint).
    pub endpoint: Option<String>,
    pub bucket: String,
    pub region: String,
    pub access_key_id: SecretString,
    pub secret_access_key: SecretString,
    pub path_style: bool,
    /// Each request's limit: a hung object store fails the request, it does not hold it.
    pub request_timeout: Duration,
}

pub struct S3Store {
    bucket: Box<Bucket>,
    settings: S3Settings,
    description: String,
}

fn backend(e: impl std::fmt::Display) -> StorageError {
    StorageError::Backend(e.to_string())
}

fn status_error(what: &str, key: &str, status: u16, body: &[u8]) -> StorageError {
    let body = String::from_utf8_lossy(&body[..body.len().min(300)]).into_owned();
    StorageError::Backend(format!("{what} {key}: HTTP {status}: {body}"))
}

impl S3Store {
    fn region(settings: &S3Settings) -> anyhow::Result<Region> {
        Ok(match &settings.endpoint {
            Some(endpoint) => Region::Custom {
                region: settings.region.clone(),
                endpoint: endpoint.clone(),
            },
            None => settings.region.parse()?,
        })
    }

    fn credentials(settings: &S3Settings) -> anyhow::Result<Credentials> {
        Ok(Credentials::new(
            Some(settings.access_key_id.expose_secret()),
            Some(settings.secret_access_key.expose_secret()),
            None,
            None,
            None,
        )?)
    }

    pub fn new(settings: &S3Settings) -> anyhow::Result<Self> {
        let mut bucket = Bucket::new(
            &settings.bucket,
            Self::region(settings)?,
            Self::credentials(settings)?,
        )?;
        if settings.path_style {
            bucket = bucket.with_path_style();
        }
        bucket.set_request_timeout(Some(settings.request_timeout));
        Ok(Self {
            bucket,
            settings: settings.clone(),
            description: format!(
                "S3 bucket {} at {}",
                settings.bucket,
                settings.endpoint.as_deref().unwrap_or("AWS")
            ),
        })
    }

    /// Checks the bucket answers, creating it when it does not exist.
    pub async fn ensure_bucket(&self) -> anyhow::Result<()> {
        let settings = &self.settings;
        let (region, credentials) = (Self::region(settings)?, Self::credentials(settings)?);
        // A missing bucket answers the listing with an error document (404), which
        // rust-s3 reports as a parse failure: either way, try to create it.
        let listing = self
            .bucket
            .list_page(String::new(), None, None, None, Some(1))
            .await;
        let problem = match listing {
            Ok((_, status)) if (200..300).contains(&status) => return Ok(()),
            Ok((_, status)) => format!("HTTP {status}"),
            Err(e) => e.to_string(),
        };
        let config = BucketConfiguration::default();
        let created = if settings.path_style {
            Bucket::create_with_path_style(&settings.bucket, region, credentials, config).await
        } else {
            Bucket::create(&settings.bucket, region, credentials, config).await
        }
        .map_err(|e| anyhow::anyhow!("object store unreachable: {e} (listing: {problem})"))?;
        anyhow::ensure!(
            created.success(),
            "object store: bucket {} cannot be listed ({problem}) nor created (HTTP {} {})",
            settings.bucket,
            created.response_code,
            created.response_text
        );
        tracing::info!(bucket = %settings.bucket, "object store: bucket created");
        Ok(())
    }

    pub fn describe(&self) -> String {
        self.description.clone()
    }
}

impl ObjectStore for S3Store {
    async fn put(
        &self,
        key: &ObjectKey,
        body: Bytes,
        content_type: &str,
    ) -> Result<(), StorageError> {
        let response = self
            .bucket
            .put_object_with_content_type(key.as_str(), &body, content_type)
            .await
            .map_err(backend)?;
        match response.status_code() {
            200..=299 => Ok(()),
            status => Err(status_error(
                "PUT",
                key.as_str(),
                status,
                response.as_slice(),
            )),
        }
    }

    async fn put_stream(
        &self,
        key: &ObjectKey,
        reader: &mut (dyn AsyncRead + Send + Unpin),
        content_type: &str,
        max: u64,
    ) -> Result<Stored, StorageError> {
        let mut metered = Metered::new(reader, max);
        let result = self
            .bucket
            .put_object_stream_builder(key.as_str())
            .with_content_type(content_type)
            .with_max_concurrent_chunks(1)
            .execute_stream(&mut metered)
            .await;
        let over = metered.over();
        match result {
            Ok(r) if (200..300).contains(&r.status_code()) && !over => Ok(metered.finish()),
            other => {
                // Nothing half-written stays behind (a part-written multipart upload is
                // aborted by the server's lifecycle rules; a completed one is deleted).
                let _ = self.delete(key).await;
                Err(match other {
                    _ if over => StorageError::TooLarge { max },
                    Ok(r) => status_error("PUT", key.as_str(), r.status_code(), &[]),
                    Err(e) => backend(e),
                })
            }
        }
    }

    async fn get(&self, key: &ObjectKey) -> Result<Bytes, StorageError> {
        let response = self
            .bucket
            .get_object(key.as_str())
            .await
            .map_err(backend)?;
        match response.status_code() {
            200..=299 => Ok(response.into_bytes()),
            404 => Err(StorageError::NotFound(key.to_string())),
            status => Err(status_error(
                "GET",
                key.as_str(),
                status,
                response.as_slice(),
            )),
        }
    }

    async fn get_stream(
        &self,
        key: &ObjectKey,
        range: Option<ByteRange>,
    ) -> Result<ByteStream, StorageError> {
        match range {
            None => {
                let mut response = self
                    .bucket
                    .get_object_stream(key.as_str())
                    .await
                    .map_err(backend)?;
                match response.status_code {
                    200..=299 => {}
                    404 => return Err(StorageError::NotFound(key.to_string())),
                    status => return Err(status_error("GET", key.as_str(), status, &[])),
                }
                let stream =
                    std::mem::replace(response.bytes(), Box::pin(futures_util::stream::empty()));
                Ok(stream.map(|chunk| chunk.map_err(backend)).boxed())
            }
            // A ranged read is bounded by the document size cap; it is fetched whole.
            Some(r) => {
                let response = self
                    .bucket
                    .get_object_range(key.as_str(), r.start, Some(r.end))
                    .await
                    .map_err(backend)?;
                match response.status_code() {
                    200..=299 => {
                        let body = response.into_bytes();
                        Ok(futures_util::stream::once(async move { Ok(body) }).boxed())
                    }
                    404 => Err(StorageError::NotFound(key.to_string())),
                    416 => Err(StorageError::RangeNotSatisfiable { size: 0 }),
                    status => Err(status_error(
                        "GET",
                        key.as_str(),
                        status,
                        response.as_slice(),
                    )),
                }
            }
        }
    }

    async fn delete(&self, key: &ObjectKey) -> Result<(), StorageError> {
        let response = self
            .bucket
            .delete_object(key.as_str())
            .await
            .map_err(backend)?;
        match response.status_code() {
            200..=299 | 404 => Ok(()),
            status => Err(status_error(
                "DELETE",
                key.as_str(),
                status,
                response.as_slice(),
            )),
        }
    }

    async fn list(&self, prefix: &str) -> Result<Vec<ListedObject>, StorageError> {
        let pages = self
            .bucket
            .list(prefix.to_owned(), None)
            .await
            .map_err(backend)?;
        Ok(pages
            .into_iter()
            .flat_map(|p| p.contents)
            .map(|o| ListedObject {
                last_modified: chrono::DateTime::parse_from_rfc3339(&o.last_modified)
                    .ok()
                    .map(std::time::SystemTime::from),
                key: o.key,
                size: o.size,
            })
            .collect())
    }
}
