//! A conversation's events: appended in batches (one object per batch in the object
//! store, one index row in PostgreSQL), read by sequence, tailed live over SSE.
//!
//! Append, in one request transaction: (1) the conversation must be visible and writable
//! to the caller (its policies, evaluated before anything is written); (2) the batch is
//! PUT under a fresh segment id -- no row lock is held during the PUT; (3) the
//! conversation row is advanced by the batch (its row lock orders concurrent appenders:
//! sequence numbers are gap-free) and (4) the segment row is inserted; commit. A failure
//! before the commit deletes the object; a crash leaves an orphan that no row names --
//! never served, removed by `palisade storage reconcile`.

use std::{collections::VecDeque, time::Duration};

use bytes::Bytes;
use futures_util::{StreamExt, TryStreamExt};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use serde_json::value::RawValue;
use uuid::Uuid;

use super::{
    committed_object_error,
    conversations::{NO_CONVERSATION, conversation_not_found},
    storage_unavailable,
};
use crate::{
    api::ApiTags,
    db::Access,
    error_set,
    http::{
        errors::{JSON_BODY, KEY_OR_USER, PLAN_LIMIT, Problems},
        json::FastJson,
        problem::ApiError,
        security::{OrgAuth, Principal},
        sse::{Event as SseEvent, EventStreamOf},
        validate::{ValidJson, Validator},
    },
    state::State,
    storage::{ObjectKey, ObjectStore},
    workspace::events::{self, Event, MAX_BATCH_EVENTS, MAX_EVENT_BYTES},
};

pub struct EventsApi;

/// Events to append, in order.
#[derive(Object)]
pub struct AppendEvents {
    /// 1-1,000 events, each a JSON object of at most 256 KB; the body at most 4 MB.
    #[oai(validator(min_items = 1, max_items = 1000))]
    pub events: Vec<Event>,
}

/// Where an append landed.
#[derive(Object, Debug)]
pub struct AppendedEvents {
    /// The first appended event's sequence number.
    pub first_seq: i64,
    /// The last appended event's sequence number.
    pub last_seq: i64,
    /// Events in the conversation now.
    pub event_count: i64,
}

/// An event with its sequence number.
#[derive(Object, serde::Serialize, Debug, Clone)]
pub struct StoredEvent {
    /// 1, 2, 3, ... gap-free within the conversation.
    pub seq: i64,
    pub event: Event,
}

/// One page of events in sequence order.
#[derive(Object, serde::Serialize, Debug)]
pub struct EventPage {
    pub items: Vec<StoredEvent>,
    /// Pass as `after` for the next page; null when this page reached the last event.
    pub next_after: Option<i64>,
    /// Events in the conversation when this page was read.
    pub event_count: i64,
}

#[derive(ApiResponse)]
pub enum AppendEventsResponse {
    /// Appended.
    #[oai(status = 201)]
    Created(Json<AppendedEvents>),
}

#[derive(ApiResponse)]
pub enum ListEventsResponse {
    /// Events after `after`, in order.
    #[oai(status = 200)]
    Ok(FastJson<EventPage>),
}

#[derive(ApiResponse)]
pub enum StreamEventsResponse {
    /// Server-Sent Events: each `event: event` has `id` = its `seq` and `data` = a
    /// `StoredEvent`; comments are heartbeats. Reconnect with `Last-Event-ID` to resume.
    #[oai(status = 200)]
    Ok(EventStreamOf<StoredEvent>),
}

const NOT_WRITER: &str = "A viewer, or not the creator of the conversation nor an org admin \
     (`forbidden`).";
const BAD_POSITION: &str = "Invalid `after`, `limit` or `Last-Event-ID` (`invalid_parameter`).";

error_set! {
    pub AppendEventsErrors: [KEY_OR_USER, JSON_BODY, PLAN_LIMIT] { 403 => NOT_WRITER, 404 => NO_CONVERSATION }
    pub ListEventsErrors: [KEY_OR_USER] { 400 => BAD_POSITION, 404 => NO_CONVERSATION }
    pub StreamEventsErrors: [KEY_OR_USER] { 400 => BAD_POSITION, 404 => NO_CONVERSATION }
}

/// Live tails re-check access at least this often (and at once on an access change).
const RECHECK: Duration = Duration::from_secs(4);
/// SSE heartbeat (a comment line).
const HEARTBEAT: Duration = Duration::from_secs(15);
/// Segments fetched from the object store at once by one read.
const PARALLEL_GETS: usize = 8;

/// How a read fetches segment bytes.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Fetch {
    /// From the object store (a page read).
    Direct,
    /// Through the live tails' shared cache (the rows are still read under the caller's
    /// policies; only the immutable bytes are shared).
    Shared,
}

/// Events `after+1 ..= after+limit` of a conversation the caller can see, and its count.
pub async fn read_events(
    state: &State,
    principal: &Principal,
    org_id: Uuid,
    conversation_id: Uuid,
    after: i64,
    limit: i64,
    fetch: Fetch,
) -> Result<(Vec<StoredEvent>, i64), ApiError> {
    let rows = state
        .read_in_org(
            principal,
            org_id,
            "select c.event_count, s.first_seq, s.last_seq, s.segment_id, s.sha256
               from app.conversations c
               left join app.conversation_segments s
                 on s.conversation_id = c.id and s.last_seq > $2 and s.first_seq <= $2 + $3
              where c.id = $1
              order by s.first_seq",
            &[&conversation_id, &after, &limit],
        )
        .await?;
    let Some(first) = rows.first() else {
        return Err(conversation_not_found());
    };
    let event_count: i64 = first.get(0);
    let segments: Vec<(i64, i64, Uuid, Vec<u8>)> = rows
        .iter()
        .filter_map(|r| {
            let first_seq: Option<i64> = r.get(1);
            first_seq.map(|f| (f, r.get(2), r.get(3), r.get(4)))
        })
        .collect();
    let storage = &state.storage;
    let bodies: Vec<(i64, std::sync::Arc<Vec<Bytes>>)> = futures_util::stream::iter(segments)
        .map(|(first_seq, last_seq, segment_id, sha256)| async move {
            let key = ObjectKey::segment(org_id, conversation_id, segment_id);
            let load = async || {
                let body = storage
                    .get(&key)
                    .await
                    .map_err(|e| committed_object_error(&key, e))?;
                events::decode(key.as_str(), &body, &sha256, last_seq - first_seq + 1)
                    .map(std::sync::Arc::new)
                    .map_err(|e| ApiError::internal(&e))
            };
            let lines = match fetch {
                Fetch::Direct => load().await?,
                Fetch::Shared => {
                    let slot = state.tails.segments.slot(segment_id);
                    std::sync::Arc::clone(slot.get_or_try_init(load).await?)
                }
            };
            Ok::<_, ApiError>((first_seq, lines))
        })
        .buffered(PARALLEL_GETS)
        .try_collect()
        .await?;
    let mut out = Vec::with_capacity(limit as usize);
    for (first_seq, lines) in bodies {
        for (i, line) in lines.iter().enumerate() {
            let seq = first_seq + i as i64;
            if seq <= after || seq > after + limit {
                continue;
            }
            let raw: Box<RawValue> =
                serde_json::from_slice(line).map_err(|e| ApiError::internal(&e))?;
            out.push(StoredEvent {
                seq,
                event: Event::from_raw(raw),
            });
        }
    }
    Ok((out, event_count))
}

fn bad_position(detail: &str) -> ApiError {
    ApiError::new(
        poem::http::StatusCode::BAD_REQUEST,
        "invalid_parameter",
        detail.to_owned(),
    )
}

#[OpenApi(tag = "ApiTags::Conversations")]
impl EventsApi {
    /// Append events
    ///
    /// 1-1,000 events (each a JSON object of at most 256 KB, the body at most 4 MB),
    /// numbered in order after the conversation's last event. The conversation's
    /// creator or an org admin. Each event's `usage` (`cost`, `prompt_tokens`,
    /// `completion_tokens`) adds to the conversation's counters in the same transaction.
    /// The bytes count against the plan's storage (402 past it).
    #[oai(
        path = "/v1/orgs/:org_id/conversations/:conversation_id/events",
        method = "post",
        operation_id = "append_conversation_events"
    )]
    async fn append(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The conversation's id.
        conversation_id: Path<Uuid>,
        body: ValidJson<AppendEvents>,
    ) -> Result<AppendEventsResponse, Problems<AppendEventsErrors>> {
        debug_assert!(body.events.len() <= MAX_BATCH_EVENTS);
        let mut v = Validator::new();
        for (i, e) in body.events.iter().enumerate() {
            if e.as_str().len() > MAX_EVENT_BYTES {
                v.add(
                    &format!("events[{i}]"),
                    "too_large",
                    format!(
                        "an event is at most {MAX_EVENT_BYTES} bytes of JSON; this one is {}",
                        e.as_str().len()
                    ),
                );
            }
        }
        v.finish()?;
        let segment = events::encode(&body.events);
        let mut usage = events::Usage::default();
        for e in &body.events {
            usage += e.usage;
        }
        let segment_id = Uuid::new_v4();
        let key = ObjectKey::segment(org_id.0, conversation_id.0, segment_id);
        let storage = &state.storage;
        let mut object_written = false;
        let mut indexed = false;
        let result = state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                // Visible and writable by the caller, before any byte is stored.
                tx.query_opt(
                    "select app.require_creator_or_admin(created_by, created_by_key, project_id)
                       from app.conversations where id = $1",
                    &[&conversation_id.0],
                )
                .await?
                .ok_or_else(conversation_not_found)?;
                storage
                    .put(&key, segment.body.clone(), "application/x-ndjson")
                    .await
                    .map_err(storage_unavailable)?;
                object_written = true;
                let row = tx
                    .query_one(
                        "update app.conversations
                            set event_count = event_count + $2,
                                accumulated_cost = accumulated_cost + $3::float8::numeric,
                                prompt_tokens = prompt_tokens + $4,
                                completion_tokens = completion_tokens + $5,
                                last_updated_at = now()
                          where id = $1
                      returning event_count",
                        &[
                            &conversation_id.0,
                            &segment.count,
                            &usage.cost,
                            &usage.prompt_tokens,
                            &usage.completion_tokens,
                        ],
                    )
                    .await?;
                let event_count: i64 = row.get(0);
                let first_seq = event_count - segment.count + 1;
                tx.execute(
                    "insert into app.conversation_segments
                         (conversation_id, first_seq, last_seq, segment_id, bytes, sha256)
                     values ($1, $2, $3, $4, $5, $6)",
                    &[
                        &conversation_id.0,
                        &first_seq,
                        &event_count,
                        &segment_id,
                        &(segment.body.len() as i32),
                        &segment.sha256.as_slice(),
                    ],
                )
                .await?;
                indexed = true;
                Ok(AppendedEvents {
                    first_seq,
                    last_seq: event_count,
                    event_count,
                })
            })
            .await;
        match result {
            Ok(appended) => Ok(AppendEventsResponse::Created(Json(appended))),
            Err(e) => {
                // Rolled back before its row existed: the object is nobody's. (A failed
                // commit of a written row is ambiguous: reconcile decides later.)
                if object_written
                    && !indexed
                    && let Err(d) = storage.delete(&key).await
                {
                    tracing::warn!(error = %d, key = %key, "append: orphan left for reconcile");
                }
                Err(e.into())
            }
        }
    }

    /// List events
    ///
    /// Events with `seq` greater than `after` (default 0), in order, at most `limit`
    /// (1-1,000, default 100). Reads only the segments that hold them.
    #[oai(
        path = "/v1/orgs/:org_id/conversations/:conversation_id/events",
        method = "get",
        operation_id = "list_conversation_events"
    )]
    async fn list(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The conversation's id.
        conversation_id: Path<Uuid>,
        /// Return events after this sequence number (default 0: from the first).
        #[oai(validator(minimum(value = "0"), maximum(value = "1000000000000")))]
        after: Query<Option<i64>>,
        /// Page size, 1-1,000 (default 100).
        #[oai(validator(minimum(value = "1"), maximum(value = "1000")))]
        limit: Query<Option<u32>>,
    ) -> Result<ListEventsResponse, Problems<ListEventsErrors>> {
        let after = after.0.unwrap_or(0);
        let limit = i64::from(limit.0.unwrap_or(100));
        if after < 0 || !(1..=1000).contains(&limit) {
            return Err(bad_position("after is at least 0; limit is 1-1000").into());
        }
        let (items, event_count) = read_events(
            &state,
            auth.principal(),
            org_id.0,
            conversation_id.0,
            after,
            limit,
            Fetch::Direct,
        )
        .await?;
        let last = items.last().map_or(after, |e| e.seq);
        Ok(ListEventsResponse::Ok(FastJson(EventPage {
            next_after: (last < event_count && !items.is_empty()).then_some(last),
            items,
            event_count,
        })))
    }

    /// Tail events live
    ///
    /// Server-Sent Events: the events after `Last-Event-ID` (or `after`, default 0), then
    /// each new one within moments of its commit, with a heartbeat comment every 15 s.
    /// The stream ends when the caller loses access (removed from the organization,
    /// session revoked, conversation made private or deleted), and after
    /// `LIVE_TAIL_MAX_SECONDS` (default an hour): reconnect with `Last-Event-ID`.
    /// `curl -N` shows it.
    #[oai(
        path = "/v1/orgs/:org_id/conversations/:conversation_id/events/stream",
        method = "get",
        operation_id = "stream_conversation_events"
    )]
    async fn stream(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The conversation's id.
        conversation_id: Path<Uuid>,
        /// Start after this sequence number (default 0); a `Last-Event-ID` header wins.
        #[oai(validator(minimum(value = "0"), maximum(value = "1000000000000")))]
        after: Query<Option<i64>>,
        // `Last-Event-ID` (sent by EventSource clients on reconnect) is read from the
        // request rather than declared: it is the protocol's, and `after` is the
        // parameter generated clients use.
        req: &poem::Request,
    ) -> Result<StreamEventsResponse, Problems<StreamEventsErrors>> {
        let last_event_id = match req.headers().get("last-event-id").map(|v| v.to_str()) {
            None => None,
            Some(Ok(v)) if v.trim().is_empty() => None,
            Some(v) => Some(
                v.ok()
                    .and_then(|v| v.trim().parse::<i64>().ok())
                    .filter(|n| (0..=1_000_000_000_000).contains(n))
                    .ok_or_else(|| bad_position("Last-Event-ID is an event's seq"))?,
            ),
        };
        let after = last_event_id.or(after.0).unwrap_or(0);
        if after < 0 {
            return Err(bad_position("after is at least 0").into());
        }
        let (state, principal) = (State::clone(&state), auth.principal().clone());
        let (org_id, conversation_id) = (org_id.0, conversation_id.0);
        // Subscribe first: a commit between the first read and the subscription still wakes.
        let sub = state.tails.subscribe(conversation_id);
        let (first, _) = read_events(
            &state,
            &principal,
            org_id,
            conversation_id,
            after,
            1000,
            Fetch::Shared,
        )
        .await?;
        let tail = Tail {
            buffer: first.into(),
            last: after,
            sub,
        };
        // The stream's re-checks belong to this request: counted once, not per wake-up.
        let request = crate::limits::current();
        let ends_at = tokio::time::Instant::now() + state.live_tail_max;
        let stream = futures_util::stream::unfold(tail, move |mut tail| {
            let (state, principal) = (State::clone(&state), principal.clone());
            let request = request.clone();
            async move {
                loop {
                    if let Some(e) = tail.buffer.pop_front() {
                        tail.last = e.seq;
                        return Some((e, tail));
                    }
                    tokio::select! {
                        changed = tail.sub.events.changed() => changed.ok()?,
                        changed = tail.sub.access.changed() => changed.ok()?,
                        () = tokio::time::sleep(RECHECK) => {}
                        // Its lifetime is up: the client resumes with Last-Event-ID.
                        () = tokio::time::sleep_until(ends_at) => return None,
                    }
                    // Every read re-checks access under the caller's own policies; any
                    // refusal (404, revoked session) ends the stream.
                    let (more, _) = crate::limits::within(
                        request.clone(),
                        read_events(
                            &state,
                            &principal,
                            org_id,
                            conversation_id,
                            tail.last,
                            1000,
                            Fetch::Shared,
                        ),
                    )
                    .await
                    .ok()?;
                    tail.buffer.extend(more);
                }
            }
        })
        .boxed();
        let events = stream.map(|e: StoredEvent| {
            SseEvent::message(serde_json::to_string(&e).unwrap_or_default())
                .id(e.seq.to_string())
                .event_type("event")
        });
        Ok(StreamEventsResponse::Ok(EventStreamOf::new(
            events, HEARTBEAT,
        )))
    }
}

struct Tail {
    buffer: VecDeque<StoredEvent>,
    last: i64,
    sub: crate::workspace::tail::Subscription,
}
