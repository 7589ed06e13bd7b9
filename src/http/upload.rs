//! A `multipart/form-data` request body that streams: the handler reads its parts in
//! order and pipes the file part straight to the object store (poem-openapi's own
//! `Multipart` derive spools every upload to a temporary file first). The OpenAPI schema
//! of the form comes from a [`FormSchema`], so generated clients and schemathesis see
//! the fields they must send.

use std::{
    marker::PhantomData,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use poem::{Request, RequestBody, web::Multipart};
use poem_openapi::{
    ApiExtractor, ApiExtractorType, ExtractParamOptions,
    error::ParseRequestPayloadError,
    registry::{MetaMediaType, MetaRequest, MetaSchema, MetaSchemaRef, Registry},
};
use tokio::io::AsyncReadExt;

/// The marker error of a streamed body past its cap (see `middleware::cap_body`).
#[derive(Debug)]
pub struct BodyTooLarge;
impl std::fmt::Display for BodyTooLarge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("request body over its size cap")
    }
}
impl std::error::Error for BodyTooLarge {}

/// Set (in the request's extensions) by the middleware on a streamed body; true once the
/// client sent more than the cap -- how a handler tells "too large" (413) from "broken
/// form" (400) when reading a part fails.
#[derive(Debug, Clone, Default)]
pub struct BodyCap(pub Arc<AtomicBool>);

impl BodyCap {
    pub fn tripped(req: &Request) -> bool {
        req.extensions()
            .get::<BodyCap>()
            .is_some_and(|c| c.0.load(Ordering::Relaxed))
    }
}

/// The fields of a form, for the OpenAPI document.
pub trait FormSchema: Send {
    fn schema() -> MetaSchema;
}

/// A streamed `multipart/form-data` body described by `F`.
pub struct StreamedForm<F> {
    pub parts: Multipart,
    _form: PhantomData<fn() -> F>,
}

fn is_form(content_type: &str) -> bool {
    content_type
        .parse::<mime::Mime>()
        .is_ok_and(|m| m.essence_str() == mime::MULTIPART_FORM_DATA.essence_str())
}

impl<'a, F: FormSchema> ApiExtractor<'a> for StreamedForm<F> {
    const TYPES: &'static [ApiExtractorType] = &[ApiExtractorType::RequestObject];
    type ParamType = ();
    type ParamRawType = ();

    fn register(_registry: &mut Registry) {}

    fn request_meta() -> Option<MetaRequest> {
        Some(MetaRequest {
            description: None,
            content: vec![MetaMediaType {
                content_type: "multipart/form-data",
                schema: MetaSchemaRef::Inline(Box::new(F::schema())),
            }],
            required: true,
        })
    }

    async fn from_request(
        request: &'a Request,
        body: &mut RequestBody,
        _param_opts: ExtractParamOptions<()>,
    ) -> poem::Result<Self> {
        super::validate::require_content_type(request, is_form)?;
        let parts = <Multipart as poem::FromRequest>::from_request(request, body)
            .await
            .map_err(|e| ParseRequestPayloadError {
                reason: format!("not a valid multipart/form-data body ({e})"),
            })?;
        Ok(Self {
            parts,
            _form: PhantomData,
        })
    }
}

/// A text part, at most `max` bytes of UTF-8 (longer: `Err(true)`; unreadable or not
/// UTF-8: `Err(false)`).
pub async fn text_part(field: poem::web::Field, max: usize) -> Result<String, bool> {
    let mut buf = Vec::new();
    field
        .into_async_read()
        .take(max as u64 + 1)
        .read_to_end(&mut buf)
        .await
        .map_err(|_| false)?;
    if buf.len() > max {
        return Err(true);
    }
    String::from_utf8(buf).map_err(|_| false)
}

/// An `AsyncRead` that remembers whether it failed: when a streamed store of a form part
/// fails, this tells the client's broken body (400/413) from the store's failure (503).
pub struct Watched<R> {
    inner: R,
    failed: bool,
}

impl<R> Watched<R> {
    pub fn new(inner: R) -> Self {
        Self {
            inner,
            failed: false,
        }
    }
    pub fn failed(&self) -> bool {
        self.failed
    }
}

impl<R: tokio::io::AsyncRead + Unpin> tokio::io::AsyncRead for Watched<R> {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = &mut *self;
        let polled = std::pin::Pin::new(&mut this.inner).poll_read(cx, buf);
        if let std::task::Poll::Ready(Err(_)) = &polled {
            this.failed = true;
        }
        polled
    }
}
