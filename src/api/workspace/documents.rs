//! Documents: uploaded files whose bytes live in the object store and whose rows (status,
//! extracted text in chunks) live in PostgreSQL. policies/documents.sql decides who sees
//! and changes each one (a restricted project's only its members); no handler here
//! filters by tenant, project or role.
//!
//! Upload, in order: (1) when the file part arrives, the caller must be able to add data
//! to the organization (and to `project_id`, if it came first) -- a short read
//! transaction, so nothing is stored for a viewer or a stranger; (2) the file streams to
//! the object store under a fresh id, measured, hashed and capped as it passes (no
//! database connection is held meanwhile); (3) one transaction inserts the row, whose
//! policies check everything again and whose trigger counts the bytes against the plan.
//! A refusal or failure after (2) deletes the object; a crash leaves an orphan that no
//! row names -- never served, removed by `palisade storage reconcile`.

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
    registry::{MetaSchema, MetaSchemaRef},
    types::Type,
};
use sha2::Digest;
use tokio_postgres::Row;
use uuid::Uuid;

use super::{committed_object_error, storage_unavailable};
use crate::{
    api::ApiTags,
    db::Access,
    error_set,
    http::{
        download::{self, Download, Served},
        errors::{IN_ORG, JSON_BODY, KEY_OR_USER, PAGED, PLAN_LIMIT, Problems},
        json::{FastJson, rfc3339},
        pagination::{Cursor, page_params},
        problem::ApiError,
        security::OrgAuth,
        upload::{BodyCap, FormSchema, StreamedForm, Watched, text_part},
        validate::{LongLine, ValidJson, Validator},
    },
    page,
    state::State,
    storage::{ObjectKey, ObjectStore, StorageError},
};

pub struct DocumentsApi;

/// Where a document is in its processing.
#[derive(Enum, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum DocumentStatus {
    /// Stored; waiting for the worker.
    Uploaded,
    /// The worker is extracting its text.
    Processing,
    /// Its text is extracted and searchable (`chunk_count`, `text_bytes`).
    Ready,
    /// Its text could not be extracted (`error` says why); the file is still downloadable.
    Failed,
}

impl DocumentStatus {
    fn parse(s: &str) -> Self {
        match s {
            "processing" => Self::Processing,
            "ready" => Self::Ready,
            "failed" => Self::Failed,
            _ => Self::Uploaded,
        }
    }
    fn as_str(self) -> &'static str {
        match self {
            Self::Uploaded => "uploaded",
            Self::Processing => "processing",
            Self::Ready => "ready",
            Self::Failed => "failed",
        }
    }
}

/// An uploaded document.
#[derive(Object, serde::Serialize, Debug, Clone)]
pub struct Document {
    pub id: Uuid,
    pub org_id: Uuid,
    /// The project it belongs to, or null.
    pub project_id: Option<Uuid>,
    /// The user who uploaded it (null when an API key did, or the user was deleted).
    pub created_by: Option<Uuid>,
    /// The API key that uploaded it, or null.
    pub created_by_api_key: Option<Uuid>,
    pub title: String,
    /// The uploaded file's name.
    pub filename: String,
    /// The media type it was uploaded with (served back with its content).
    pub content_type: String,
    /// Its size in bytes.
    pub bytes: i64,
    /// SHA-256 of its bytes, hex (also its content's `ETag`).
    pub sha256: String,
    pub status: DocumentStatus,
    /// Why processing failed (status `failed`), else null.
    pub error: Option<String>,
    /// Chunks of extracted text (status `ready`), else null.
    pub chunk_count: Option<i32>,
    /// Bytes of extracted text (status `ready`), else null.
    pub text_bytes: Option<i64>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
    /// When processing ended (ready or failed), else null.
    pub processed_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, org_id, project_id, created_by, created_by_key, title, filename, \
     content_type, bytes, sha256, status, error, chunk_count, text_bytes, created_at, \
     updated_at, processed_at";

impl From<&Row> for Document {
    fn from(r: &Row) -> Self {
        let sha: Vec<u8> = r.get(9);
        Self {
            id: r.get(0),
            org_id: r.get(1),
            project_id: r.get(2),
            created_by: r.get(3),
            created_by_api_key: r.get(4),
            title: r.get(5),
            filename: r.get(6),
            content_type: r.get(7),
            bytes: r.get(8),
            sha256: hex::encode(sha),
            status: DocumentStatus::parse(r.get(10)),
            error: r.get(11),
            chunk_count: r.get(12),
            text_bytes: r.get(13),
            created_at: r.get(14),
            updated_at: r.get(15),
            processed_at: r.get(16),
        }
    }
}

page! {
    /// One page of documents, newest first.
    DocumentPage of Document
}

/// The upload form (`multipart/form-data`).
pub struct UploadForm;

impl FormSchema for UploadForm {
    fn schema() -> MetaSchema {
        let with = |schema: MetaSchemaRef, description: &'static str| match schema {
            MetaSchemaRef::Inline(s) => MetaSchemaRef::Inline(Box::new(MetaSchema {
                description: Some(description),
                ..*s
            })),
            other => other,
        };
        MetaSchema {
            required: vec!["file"],
            properties: vec![
                (
                    "file",
                    MetaSchemaRef::Inline(Box::new(MetaSchema {
                        format: Some("binary"),
                        min_length: Some(1),
                        description: Some(
                            "The file (at most `DOCUMENT_MAX_BYTES`, 25 MB by default; not \
                             empty). Its part's `Content-Type` and file name are kept.",
                        ),
                        ..MetaSchema::new("string")
                    })),
                ),
                (
                    "project_id",
                    with(
                        <Uuid as Type>::schema_ref(),
                        "A project of the organization the caller may write. Send it before \
                         `file` to be refused before the upload rather than after.",
                    ),
                ),
                (
                    "title",
                    with(
                        LongLine::schema_ref(),
                        "1-200 characters on one line (default: the file name).",
                    ),
                ),
            ],
            ..MetaSchema::new("object")
        }
    }
}

/// Fields to change.
#[derive(Object)]
pub struct UpdateDocument {
    pub title: Option<LongLine>,
}

#[derive(ApiResponse)]
pub enum UploadDocumentResponse {
    /// Stored; status `uploaded` (the worker extracts its text next).
    #[oai(status = 201)]
    Created(Json<Document>),
}

#[derive(ApiResponse)]
pub enum ListDocumentsResponse {
    /// Documents the caller may see, newest first.
    #[oai(status = 200)]
    Ok(FastJson<DocumentPage>),
}

#[derive(ApiResponse)]
pub enum DocumentResponse {
    /// The document.
    #[oai(status = 200)]
    Ok(Json<Document>),
}

#[derive(ApiResponse)]
pub enum DeleteDocumentResponse {
    /// Deleted (its object is purged in the background).
    #[oai(status = 204)]
    NoContent,
}

const NO_DOCUMENT: &str = "No such document for the caller: another organization's, or one in \
     a restricted project the caller is not in (`not_found`).";
const NOT_UPLOADER: &str = "A viewer, or a project viewer of a restricted project (`forbidden`).";
const NOT_WRITER: &str = "Neither its uploader nor an org admin, or a project viewer of a \
     restricted project (`forbidden`).";
const BAD_FORM: &str = "Not a valid multipart/form-data body (`invalid_body`).";
const TOO_LARGE: &str = "The file is larger than `DOCUMENT_MAX_BYTES` (`payload_too_large`).";
const NOT_FORM: &str = "The body is not `multipart/form-data` (`unsupported_media_type`).";
const BAD_FIELDS: &str = "No `file`, an empty one, an invalid `project_id` or `title`, or an \
     unknown field (`validation_failed`, with each in `errors`).";
const NO_PROJECT: &str = "No such organization, or `project_id` names no project the caller \
     can see (`not_found`).";

error_set! {
    pub UploadDocumentErrors: [KEY_OR_USER, PLAN_LIMIT] {
        400 => BAD_FORM, 403 => NOT_UPLOADER, 404 => NO_PROJECT, 413 => TOO_LARGE,
        415 => NOT_FORM, 422 => BAD_FIELDS
    }
    pub ListDocumentsErrors: [KEY_OR_USER, IN_ORG, PAGED] {}
    pub GetDocumentErrors: [KEY_OR_USER] { 404 => NO_DOCUMENT }
    pub UpdateDocumentErrors: [KEY_OR_USER, JSON_BODY] { 403 => NOT_WRITER, 404 => NO_DOCUMENT }
    pub DeleteDocumentErrors: [KEY_OR_USER] { 403 => NOT_WRITER, 404 => NO_DOCUMENT }
}

fn document_not_found() -> ApiError {
    ApiError::not_found("document")
}

fn bad_form(req: &poem::Request, max: u64) -> ApiError {
    if BodyCap::tripped(req) {
        too_large(max)
    } else {
        ApiError::new(
            poem::http::StatusCode::BAD_REQUEST,
            "invalid_body",
            "the multipart/form-data body is malformed or was cut short",
        )
    }
}

fn too_large(max: u64) -> ApiError {
    ApiError::new(
        poem::http::StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("a document is at most {max} bytes"),
    )
}

/// The media type to keep for an upload: the part's own, when well-formed and specific,
/// else one guessed from the file name's extension, else `application/octet-stream`.
pub fn media_type(declared: Option<&str>, filename: &str) -> String {
    let declared = declared
        .and_then(|d| d.parse::<mime::Mime>().ok())
        .filter(|m| m.essence_str() != "application/octet-stream")
        .map(|m| m.to_string())
        .filter(|m| m.len() <= 255);
    if let Some(d) = declared {
        return d;
    }
    let ext = filename
        .rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase());
    match ext.as_deref() {
        Some("txt" | "text" | "log") => "text/plain",
        Some("md" | "markdown") => "text/markdown",
        Some("html" | "htm") => "text/html",
        Some("json") => "application/json",
        Some("csv") => "text/csv",
        Some("pdf") => "application/pdf",
        _ => "application/octet-stream",
    }
    .to_owned()
}

/// The file name to keep: its last path component, without control characters, at most
/// 255 characters; `upload` when nothing is left.
pub fn clean_filename(name: Option<&str>) -> String {
    let base = name.unwrap_or("").rsplit(['/', '\\']).next().unwrap_or("");
    let cleaned: String = base.chars().filter(|c| !c.is_control()).take(255).collect();
    let cleaned = cleaned.trim();
    if cleaned.is_empty() || cleaned == "." || cleaned == ".." {
        "upload".to_owned()
    } else {
        cleaned.to_owned()
    }
}

/// Up to 200 characters of the file name: the default title.
fn title_from(filename: &str) -> String {
    filename.chars().take(200).collect()
}

/// The caller may add a document (to `project_id`): PT404 / 42501 otherwise.
async fn check_writer(
    state: &State,
    auth: &OrgAuth,
    org_id: Uuid,
    project_id: Option<Uuid>,
) -> Result<(), ApiError> {
    // in_org, not read_in_org: a stranger gets 404 before the function can answer 403.
    state
        .in_org(auth.principal(), org_id, Access::ReadOnly, async |tx| {
            tx.execute("select app.require_project_writer($1)", &[&project_id])
                .await?;
            Ok(())
        })
        .await
}

/// What the upload form carried.
#[derive(Default)]
struct Upload {
    project_id: Option<Uuid>,
    title: Option<String>,
    filename: String,
    content_type: String,
    stored: Option<crate::storage::Stored>,
}

#[OpenApi(tag = "ApiTags::Documents")]
impl DocumentsApi {
    /// Upload a document
    ///
    /// `multipart/form-data` with a `file` part, and optionally `project_id` and `title`.
    /// The file streams to the object store (never held whole in memory); it may be at
    /// most `DOCUMENT_MAX_BYTES` (25 MB by default), and its bytes count against the
    /// plan's storage (402 past it). Members and up; in a restricted project, its editors
    /// and admins and org admins. The worker then extracts its text (status `processing`,
    /// then `ready` or `failed`).
    #[oai(
        path = "/v1/orgs/:org_id/documents",
        method = "post",
        operation_id = "upload_document"
    )]
    async fn upload(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        form: StreamedForm<UploadForm>,
        req: &poem::Request,
    ) -> Result<UploadDocumentResponse, Problems<UploadDocumentErrors>> {
        let max = state.document_max_bytes;
        let document_id = Uuid::new_v4();
        let key = ObjectKey::document(org_id.0, document_id);
        let mut parts = form.parts;
        let mut upload = Upload::default();
        let mut v = Validator::new();
        let read = async {
            while let Some(field) = parts.next_field().await.map_err(|_| bad_form(req, max))? {
                let name = field.name().unwrap_or("").to_owned();
                match name.as_str() {
                    "project_id" => match text_part(field, 64).await {
                        Ok(t) => match t.trim().parse::<Uuid>() {
                            Ok(id) => upload.project_id = Some(id),
                            Err(_) => v.add("project_id", "invalid_format", "not a UUID"),
                        },
                        Err(true) => v.add("project_id", "invalid_format", "not a UUID"),
                        Err(false) => return Err(bad_form(req, max)),
                    },
                    "title" => match text_part(field, 1024).await {
                        Ok(t) if LongLine::accepts(&t) => upload.title = Some(t.trim().to_owned()),
                        Ok(_) | Err(true) => v.add(
                            "title",
                            "invalid_format",
                            "1-200 characters on one line, not blank",
                        ),
                        Err(false) => return Err(bad_form(req, max)),
                    },
                    "file" if upload.stored.is_some() => {
                        v.add("file", "duplicate", "send one file per upload");
                    }
                    "file" => {
                        // Refused before a byte is stored: a stranger, a viewer, a
                        // project the caller cannot write (when named before the file).
                        check_writer(&state, &auth, org_id.0, upload.project_id).await?;
                        upload.filename = clean_filename(field.file_name());
                        upload.content_type = media_type(field.content_type(), &upload.filename);
                        let mut reader = Watched::new(Box::pin(field.into_async_read()));
                        let stored = state
                            .storage
                            .put_stream(&key, &mut reader, &upload.content_type, max)
                            .await;
                        let stored = stored.map_err(|e| match e {
                            StorageError::TooLarge { .. } => too_large(max),
                            // The client's body failed (cut short, or over the form's cap).
                            _ if reader.failed() => bad_form(req, max),
                            other => storage_unavailable(other),
                        })?;
                        upload.stored = Some(stored);
                    }
                    other => v.add(
                        if other.is_empty() { "(unnamed)" } else { other },
                        "unknown_field",
                        "the form takes `file`, `project_id` and `title`",
                    ),
                }
            }
            Ok::<_, ApiError>(())
        }
        .await;
        let stored = upload.stored.clone();
        let result = async {
            read?;
            match &stored {
                None => v.add("file", "required", "send the document as a `file` part"),
                Some(s) if s.bytes == 0 => v.add("file", "empty", "the file is empty"),
                Some(_) => {}
            }
            v.finish()?;
            let stored = stored.as_ref().expect("checked above");
            let title = upload
                .title
                .clone()
                .unwrap_or_else(|| title_from(&upload.filename));
            state
                .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                    let row = tx
                        .query_one(
                            &format!(
                                "insert into app.documents (id, project_id, title, filename,
                                     content_type, bytes, sha256)
                                 values ($1, $2, $3, $4, $5, $6, $7) returning {COLUMNS}"
                            ),
                            &[
                                &document_id,
                                &upload.project_id,
                                &title,
                                &upload.filename,
                                &upload.content_type,
                                &(stored.bytes as i64),
                                &stored.sha256.as_slice(),
                            ],
                        )
                        .await?;
                    Ok(Document::from(&row))
                })
                .await
        }
        .await;
        match result {
            Ok(document) => Ok(UploadDocumentResponse::Created(Json(document))),
            Err(e) => {
                // No row names the object: it is nobody's. (A failed commit of a written
                // row is ambiguous: reconcile decides later.)
                if upload.stored.is_some()
                    && let Err(d) = state.storage.delete(&key).await
                {
                    tracing::warn!(error = %d, key = %key, "upload: orphan left for reconcile");
                }
                Err(e.into())
            }
        }
    }

    /// List documents
    ///
    /// Newest first, paginated with `limit` and `cursor`; none of a restricted project
    /// the caller is not in.
    #[oai(
        path = "/v1/orgs/:org_id/documents",
        method = "get",
        operation_id = "list_documents"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// Only documents of this project.
        project_id: Query<Option<Uuid>>,
        /// Only documents in this status.
        status: Query<Option<DocumentStatus>>,
        /// Page size, 1-100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<ListDocumentsResponse, Problems<ListDocumentsErrors>> {
        let (limit, after) = page_params(limit.0, cursor.0.as_deref())?;
        let (after_at, after_id) = (after.map(|c| c.created_at), after.map(|c| c.id));
        let status = status.0.map(DocumentStatus::as_str);
        let rows = state
            .read_in_org(
                auth.principal(),
                org_id.0,
                &format!(
                    "select {COLUMNS} from app.documents
                      where ($2::uuid is null or project_id = $2)
                        and ($3::text is null or status = $3)
                        and ($4::timestamptz is null or (created_at, id) < ($4, $5::uuid))
                      order by created_at desc, id desc limit $1"
                ),
                &[&(limit + 1), &project_id.0, &status, &after_at, &after_id],
            )
            .await?;
        let items = rows.iter().map(Document::from).collect();
        Ok(ListDocumentsResponse::Ok(FastJson(
            DocumentPage::from_rows(items, limit, |d| Cursor {
                created_at: d.created_at,
                id: d.id,
            }),
        )))
    }

    /// Get a document
    #[oai(
        path = "/v1/orgs/:org_id/documents/:document_id",
        method = "get",
        operation_id = "get_document"
    )]
    async fn get(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The document's id.
        document_id: Path<Uuid>,
    ) -> Result<DocumentResponse, Problems<GetDocumentErrors>> {
        let rows = state
            .read_in_org(
                auth.principal(),
                org_id.0,
                &format!("select {COLUMNS} from app.documents where id = $1"),
                &[&document_id.0],
            )
            .await?;
        let d = rows
            .first()
            .map(Document::from)
            .ok_or_else(document_not_found)?;
        Ok(DocumentResponse::Ok(Json(d)))
    }

    /// Rename a document
    ///
    /// Its uploader or an org admin.
    #[oai(
        path = "/v1/orgs/:org_id/documents/:document_id",
        method = "patch",
        operation_id = "update_document"
    )]
    async fn update(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The document's id.
        document_id: Path<Uuid>,
        body: ValidJson<UpdateDocument>,
    ) -> Result<DocumentResponse, Problems<UpdateDocumentErrors>> {
        let title = body.title.as_ref().map(|t| t.as_str().to_owned());
        let d = state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                let row = tx
                    .query_opt(
                        &format!(
                            "update app.documents set title = coalesce($2, title), updated_at = now()
                              where id = $1 returning {COLUMNS}"
                        ),
                        &[&document_id.0, &title],
                    )
                    .await?;
                row.as_ref()
                    .map(Document::from)
                    .ok_or_else(document_not_found)
            })
            .await?;
        Ok(DocumentResponse::Ok(Json(d)))
    }

    /// Download a document
    ///
    /// Its bytes, streamed from the object store after the access check, with the
    /// `Content-Type` it was uploaded with, `Content-Length`, `ETag` (its SHA-256) and
    /// `Content-Disposition: attachment`. Conditional (`If-None-Match` → 304) and ranged
    /// (`Range: bytes=…`, one range; `If-Range`) requests are honoured. A full download
    /// is checked against its SHA-256 as it streams: a mismatch aborts the transfer.
    #[oai(
        path = "/v1/orgs/:org_id/documents/:document_id/content",
        method = "get",
        operation_id = "download_document"
    )]
    async fn content(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The document's id.
        document_id: Path<Uuid>,
        req: &poem::Request,
    ) -> Result<Download, Problems<GetDocumentErrors>> {
        let rows = state
            .read_in_org(
                auth.principal(),
                org_id.0,
                "select object_key, bytes, sha256, content_type, filename
                   from app.documents where id = $1",
                &[&document_id.0],
            )
            .await?;
        let row = rows.first().ok_or_else(document_not_found)?;
        let (object_key, size, sha256, content_type, filename): (
            String,
            i64,
            Vec<u8>,
            String,
            String,
        ) = (row.get(0), row.get(1), row.get(2), row.get(3), row.get(4));
        let size = size as u64;
        let etag = download::etag_of(&sha256);
        let served = download::decide(req.headers(), size, &etag);
        let range = match served {
            Served::Full => None,
            Served::Partial(r) => Some(r),
            Served::NotModified | Served::Unsatisfiable => {
                return Ok(Download::new(
                    served,
                    size,
                    etag,
                    &content_type,
                    &filename,
                    poem::Body::empty(),
                ));
            }
        };
        let key = ObjectKey::from_stored(&object_key).map_err(|e| ApiError::internal(&e))?;
        let stream = state
            .storage
            .get_stream(&key, range)
            .await
            .map_err(|e| committed_object_error(&key, e))?;
        let body = match range {
            Some(_) => poem::Body::from_bytes_stream(
                stream.map(|chunk| chunk.map_err(std::io::Error::other)),
            ),
            None => poem::Body::from_bytes_stream(verified(stream, sha256, size, key)),
        };
        Ok(Download::new(
            served,
            size,
            etag,
            &content_type,
            &filename,
            body,
        ))
    }

    /// Delete a document
    ///
    /// Its uploader or an org admin. Its row and extracted text go at once; its object is
    /// deleted by the worker through a durable queue.
    #[oai(
        path = "/v1/orgs/:org_id/documents/:document_id",
        method = "delete",
        operation_id = "delete_document"
    )]
    async fn delete(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The document's id.
        document_id: Path<Uuid>,
    ) -> Result<DeleteDocumentResponse, Problems<DeleteDocumentErrors>> {
        state
            .delete_in_org(
                auth.principal(),
                org_id.0,
                "delete from app.documents where id = $1",
                &[&document_id.0],
                document_not_found,
            )
            .await?;
        Ok(DeleteDocumentResponse::NoContent)
    }
}

/// The object's bytes, hashed as they pass. The last chunk is held back until the whole
/// object is verified: a size or SHA-256 that differs from the row's ends the stream with
/// an error before the response is complete (the client sees a broken transfer, never
/// silently wrong data) and logs the cause.
fn verified(
    stream: crate::storage::ByteStream,
    expected: Vec<u8>,
    size: u64,
    key: ObjectKey,
) -> impl futures_util::Stream<Item = Result<bytes::Bytes, std::io::Error>> + Send {
    struct Check {
        stream: crate::storage::ByteStream,
        hasher: sha2::Sha256,
        seen: u64,
        held: Option<bytes::Bytes>,
        done: bool,
    }
    let check = Check {
        stream,
        hasher: sha2::Sha256::new(),
        seen: 0,
        held: None,
        done: false,
    };
    futures_util::stream::unfold(check, move |mut c| {
        let (expected, key) = (expected.clone(), key.clone());
        async move {
            loop {
                if c.done {
                    return None;
                }
                match c.stream.next().await {
                    Some(Ok(chunk)) => {
                        c.hasher.update(&chunk);
                        c.seen += chunk.len() as u64;
                        if let Some(previous) = c.held.replace(chunk) {
                            return Some((Ok(previous), c));
                        }
                    }
                    Some(Err(e)) => {
                        c.done = true;
                        return Some((Err(std::io::Error::other(e)), c));
                    }
                    None => {
                        c.done = true;
                        let digest = c.hasher.finalize_reset();
                        if c.seen == size && digest[..] == expected[..] {
                            return c.held.take().map(|last| (Ok(last), c));
                        }
                        tracing::error!(key = %key, seen = c.seen, size, "document object fails its checksum");
                        return Some((
                            Err(std::io::Error::other("document object fails its checksum")),
                            c,
                        ));
                    }
                }
            }
        }
    })
}
