//! What every request passes through, around the API: a request id and one access-log
//! line; a bounded URI and body; the request timeout; problem+json for everything the
//! framework answers itself; `Allow` on 405; the rate-limit headers of whatever the
//! request kernel's limiter decided (`crate::limits`).
//!
//! Request bodies are read in full (up to `MAX_BODY_BYTES`) before the handler runs.
//! That makes the limit exact (a chunked body one byte over it is a 413, not a parse
//! error), keeps keep-alive connections usable after an early 401 or 415 (the body was
//! consumed), and puts the upload under the request timeout. The one exception is a
//! document upload: its body streams to the object store as it arrives (never held whole),
//! capped at `DOCUMENT_MAX_BYTES` plus the form's envelope, under its own timeout.

use std::{sync::Arc, time::Duration};

use poem::{
    Body, Endpoint, IntoResponse, Request, Response,
    http::{HeaderValue, StatusCode, Version, header},
};
use tokio::io::AsyncReadExt;
use tracing::Instrument;

use poem_openapi::error::AuthorizationError;

use super::{
    problem::{ApiError, ProblemJson, framework_problem},
    security::{API_KEY_HEADER, api_key_not_allowed},
};
use crate::limits;

pub const REQUEST_ID_HEADER: &str = "x-request-id";
/// The read-your-writes token (`db::replicas`): answered by writes, presented by reads.
pub const CONSISTENCY_HEADER: &str = "palisade-consistency";

/// Longest request target accepted (path and query); longer ones get 414.
pub const MAX_URI_BYTES: usize = 8 * 1024;

/// HTTP limits applied to every request.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    pub max_body_bytes: usize,
    pub request_timeout: Duration,
    /// The largest document a streamed upload may carry (`DOCUMENT_MAX_BYTES`).
    pub upload_bytes: u64,
    /// How long a streamed upload may take.
    pub upload_timeout: Duration,
}

/// What a multipart form may add around its file: boundaries, part headers, the other
/// fields (each at most a few hundred bytes).
pub const FORM_ENVELOPE_BYTES: u64 = 64 * 1024;

/// The API's paths and their methods, from the OpenAPI document: what a 405's `Allow`
/// header lists, and the route label of the request metrics.
#[derive(Debug, Default)]
pub struct Routes {
    labels: crate::metrics::RouteLabels,
    methods: Vec<String>,
}

impl Routes {
    pub fn from_spec(spec: &serde_json::Value) -> Self {
        let mut templates = Vec::new();
        let mut all_methods = Vec::new();
        if let Some(paths) = spec.get("paths").and_then(|p| p.as_object()) {
            for (path, ops) in paths {
                let mut methods: Vec<String> = ops
                    .as_object()
                    .map(|o| o.keys().map(|m| m.to_uppercase()).collect())
                    .unwrap_or_default();
                methods.sort();
                templates.push(path.as_str());
                all_methods.push(methods.join(", "));
            }
        }
        // Served beside the API, outside the document.
        for (path, methods) in [("/openapi.json", "GET"), ("/docs", "GET")] {
            templates.push(path);
            all_methods.push(methods.to_owned());
        }
        Self {
            labels: crate::metrics::RouteLabels::new(templates),
            methods: all_methods,
        }
    }

    /// The methods `path` supports, comma-separated, if it is an API path.
    pub fn allowed(&self, path: &str) -> Option<String> {
        self.labels.position(path).map(|i| self.methods[i].clone())
    }

    /// The route template `path` matches, for metric labels.
    pub fn label(&self, path: &str) -> &'static str {
        self.labels.route(path)
    }
}

fn request_id(req: &Request) -> String {
    req.headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|v| {
            !v.is_empty()
                && v.len() <= 64
                && v.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        })
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
}

fn problem(status: StatusCode, code: &'static str, detail: impl Into<String>) -> Response {
    ProblemJson::from(ApiError::new(status, code, detail)).into_response()
}

fn too_large(limit: u64, version: Version) -> Response {
    let mut resp = problem(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body exceeds {limit} bytes"),
    );
    // The rest of the body is not read: the connection cannot be reused.
    if version <= Version::HTTP_11 {
        resp.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    resp
}

enum BodyError {
    TooLarge,
    Unreadable,
}

/// The body length `req` declares (`Content-Length`), if any.
fn declared_length(req: &Request) -> Option<u64> {
    req.headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads the body of `req` (if it has one) into memory, at most `limit` bytes.
async fn buffer_body(req: &mut Request, limit: usize) -> Result<(), BodyError> {
    let declared = declared_length(req);
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(BodyError::TooLarge);
    }
    // An HTTP/1 request that declares no length and is not chunked has no body by the
    // protocol's framing (most GETs). HTTP/2 frames bodies without either header.
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    let http1 = req.version() <= Version::HTTP_11;
    if http1 && !chunked && declared.is_none_or(|n| n == 0) {
        return Ok(());
    }
    let mut buf = Vec::with_capacity(declared.unwrap_or(0).min(limit as u64) as usize);
    req.take_body()
        .into_async_read()
        .take(limit as u64 + 1)
        .read_to_end(&mut buf)
        .await
        .map_err(|_| BodyError::Unreadable)?;
    if buf.len() > limit {
        return Err(BodyError::TooLarge);
    }
    req.set_body(Body::from(buf));
    Ok(())
}

/// The largest Stripe webhook body accepted.
pub const WEBHOOK_MAX_BYTES: usize = 1024 * 1024;

/// How a request's body is taken.
enum BodyPolicy {
    /// Read whole before the handler runs, at most this many bytes.
    Buffer(usize),
    /// Streamed to the handler (a document upload), at most this many bytes.
    Stream(u64),
}

/// `MAX_BODY_BYTES` for every request, except an event append, which may carry a batch
/// of up to 4 MB of events (plus its JSON envelope), and a document upload, streamed.
fn body_policy(method: &poem::http::Method, path: &str, limits: &HttpLimits) -> BodyPolicy {
    if method != poem::http::Method::POST {
        return BodyPolicy::Buffer(limits.max_body_bytes);
    }
    let parts: Vec<&str> = path.split('/').collect();
    match parts.as_slice() {
        ["", "v1", "orgs", _, "conversations", _, "events"] => BodyPolicy::Buffer(
            limits
                .max_body_bytes
                .max(crate::workspace::events::MAX_BATCH_BYTES + 64 * 1024),
        ),
        // Stripe's events are at most a few hundred kB; 1 MiB whatever MAX_BODY_BYTES says.
        ["", "v1", "billing", "webhook"] => BodyPolicy::Buffer(WEBHOOK_MAX_BYTES),
        ["", "v1", "orgs", _, "documents"] => {
            BodyPolicy::Stream(limits.upload_bytes.saturating_add(FORM_ENVELOPE_BYTES))
        }
        _ => BodyPolicy::Buffer(limits.max_body_bytes),
    }
}

/// Replaces the body of `req` with one that fails past `limit` bytes (a declared
/// `Content-Length` over it is refused at once).
fn cap_body(req: &mut Request, limit: u64) -> Result<(), BodyError> {
    if declared_length(req).is_some_and(|n| n > limit) {
        return Err(BodyError::TooLarge);
    }
    let body = req.take_body().into_bytes_stream();
    let cap = super::upload::BodyCap::default();
    let over = std::sync::Arc::clone(&cap.0);
    req.extensions_mut().insert(cap);
    let mut seen = 0u64;
    let capped = futures_util::StreamExt::map(body, move |chunk| {
        let chunk = chunk?;
        seen += chunk.len() as u64;
        if seen > limit {
            over.store(true, std::sync::atomic::Ordering::Relaxed);
            return Err(std::io::Error::other(super::upload::BodyTooLarge));
        }
        Ok(chunk)
    });
    req.set_body(Body::from_bytes_stream(capped));
    Ok(())
}

/// The middleware; see the module docs.
pub async fn handle<E: Endpoint>(
    ep: Arc<E>,
    mut req: Request,
    limits: HttpLimits,
    routes: Arc<Routes>,
) -> poem::Result<Response> {
    let request_id = request_id(&req);
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let version = req.version();
    let span = tracing::info_span!("request", id = %request_id, %method, %path);
    let started = std::time::Instant::now();
    let in_flight = crate::metrics::request_started();
    let mut resp = async {
        let uri_len = req.uri().path_and_query().map_or(0, |pq| pq.as_str().len());
        if uri_len > MAX_URI_BYTES {
            return problem(
                StatusCode::URI_TOO_LONG,
                "uri_too_long",
                format!("the request target exceeds {MAX_URI_BYTES} bytes"),
            );
        }
        let policy = body_policy(&method, &path, &limits);
        let timeout = match policy {
            BodyPolicy::Buffer(_) => limits.request_timeout,
            BodyPolicy::Stream(_) => limits.upload_timeout.max(limits.request_timeout),
        };
        let work = async {
            let taken = match policy {
                BodyPolicy::Buffer(limit) => buffer_body(&mut req, limit)
                    .await
                    .map_err(|e| (e, limit as u64)),
                BodyPolicy::Stream(limit) => cap_body(&mut req, limit).map_err(|e| (e, limit)),
            };
            match taken {
                Err((BodyError::TooLarge, limit)) => return too_large(limit, version),
                Err((BodyError::Unreadable, _)) => {
                    return problem(
                        StatusCode::BAD_REQUEST,
                        "invalid_body",
                        "the request body could not be read",
                    );
                }
                Ok(()) => {}
            }
            let peer = req.remote_addr().as_socket_addr().map(|a| a.ip());
            let headers = req.headers().clone();
            let with_key = headers.contains_key(API_KEY_HEADER);
            // An empty token asks for nothing; one that does not parse, for the primary.
            let required = headers
                .get(CONSISTENCY_HEADER)
                .filter(|v| !v.is_empty())
                .map(|v| {
                    v.to_str()
                        .ok()
                        .and_then(crate::db::replicas::Lsn::parse)
                        .unwrap_or(crate::db::replicas::Lsn(u64::MAX))
                });
            let ((out, decision), committed) = crate::db::replicas::scope(
                required,
                limits::scope(peer, &headers, &request_id, ep.call(req)),
            )
            .await;
            let mut resp = match out {
                Ok(out) => out.into_response(),
                // An API key on an operation that takes only a user's token.
                Err(err) if with_key && err.is::<AuthorizationError>() => {
                    ProblemJson::from(api_key_not_allowed()).into_response()
                }
                Err(err) => framework_problem(err),
            };
            if let Some(decision) = decision {
                if !decision.admitted {
                    crate::metrics::rate_limited(decision.scope);
                }
                decision.write_headers(resp.headers_mut());
            }
            if let Some(lsn) = committed
                && let Ok(v) = HeaderValue::from_str(&lsn.to_string())
            {
                resp.headers_mut().insert(CONSISTENCY_HEADER, v);
            }
            resp
        };
        match tokio::time::timeout(timeout, work).await {
            Ok(resp) => resp,
            // Dropping the handler's future rolls its transaction back (see db::Tx).
            Err(_) => ProblemJson::from(ApiError {
                code: "timeout",
                ..ApiError::unavailable("the request took too long and was cancelled", 1)
            })
            .into_response(),
        }
    }
    .instrument(span.clone())
    .await;
    if resp.status() == StatusCode::METHOD_NOT_ALLOWED
        && let Some(allowed) = routes.allowed(&path)
        && let Ok(v) = HeaderValue::from_str(&allowed)
    {
        resp.headers_mut().insert(header::ALLOW, v);
    }
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    let status = resp.status().as_u16();
    let elapsed = started.elapsed();
    crate::metrics::request_done(|| routes.label(&path), &method, status, elapsed);
    drop(in_flight);
    let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status >= 500 {
            tracing::warn!(status, elapsed_ms, "request failed");
        } else {
            tracing::info!(status, elapsed_ms, "request");
        }
    });
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn allow_lists_the_methods_of_the_matching_template() {
        let routes = Routes::from_spec(&json!({"paths": {
            "/v1/orgs": {"get": {}, "post": {}},
            "/v1/orgs/{org_id}": {"get": {}, "patch": {}, "delete": {}},
            "/v1/orgs/{org_id}/projects": {"get": {}, "post": {}},
        }}));
        assert_eq!(routes.allowed("/v1/orgs").as_deref(), Some("GET, POST"));
        assert_eq!(
            routes.allowed("/v1/orgs/abc").as_deref(),
            Some("DELETE, GET, PATCH")
        );
        assert_eq!(
            routes.allowed("/v1/orgs/abc/projects").as_deref(),
            Some("GET, POST")
        );
        assert_eq!(routes.allowed("/v1/orgs//projects"), None);
        assert_eq!(routes.allowed("/v2/orgs"), None);
    }
}
