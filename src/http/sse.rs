//! A Server-Sent Events response whose OpenAPI schema describes one event as clients and
//! schemathesis see it: `{id, event, data}`, `data` being the JSON of `T`. (poem-openapi's
//! own `EventStream` declares an array of `T`, which no SSE event matches.)

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use poem::{IntoResponse, Response, web::sse::SSE};
use poem_openapi::{
    ApiResponse,
    payload::Payload,
    registry::{MetaResponses, MetaSchema, MetaSchemaRef, Registry},
    types::Type,
};

pub use poem::web::sse::Event;

/// `text/event-stream` of events whose `data` is a `T` as JSON.
pub struct EventStreamOf<T> {
    stream: futures_util::stream::BoxStream<'static, Event>,
    keep_alive: Duration,
    _item: std::marker::PhantomData<fn() -> T>,
}

impl<T> EventStreamOf<T> {
    pub fn new(stream: impl Stream<Item = Event> + Send + 'static, keep_alive: Duration) -> Self {
        Self {
            stream: stream.boxed(),
            keep_alive,
            _item: std::marker::PhantomData,
        }
    }
}

fn string(description: &'static str) -> MetaSchemaRef {
    MetaSchemaRef::Inline(Box::new(MetaSchema {
        description: Some(description),
        ..MetaSchema::new("string")
    }))
}

impl<T: Type> Payload for EventStreamOf<T> {
    const CONTENT_TYPE: &'static str = "text/event-stream";

    fn schema_ref() -> MetaSchemaRef {
        MetaSchemaRef::Inline(Box::new(MetaSchema {
            description: Some("One event of the stream."),
            required: vec!["data"],
            properties: vec![
                (
                    "id",
                    string("The event's id: pass it as `Last-Event-ID` to resume."),
                ),
                ("event", string("The event type.")),
                (
                    "data",
                    string("The event's payload, as JSON (see the `data` schema named here)."),
                ),
            ],
            title: Some(T::name().into_owned()),
            ..MetaSchema::new("object")
        }))
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}

impl<T: Send> IntoResponse for EventStreamOf<T> {
    fn into_response(self) -> Response {
        SSE::new(self.stream)
            .keep_alive(self.keep_alive)
            .into_response()
    }
}

impl<T: Type + Send> ApiResponse for EventStreamOf<T> {
    fn meta() -> MetaResponses {
        super::json::ok_meta::<Self>()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }
}
