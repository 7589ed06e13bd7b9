//! The assistant: questions answered from the org's documents by the org's model,
//! streamed as server-sent events. Retrieval runs under the caller's own row-level
//! security (`assistant::RETRIEVE_SQL`), so no chunk of another org, or of a restricted
//! project the caller is not in, can reach the prompt. Conversations are private to
//! whoever started them (policies/assistant.sql); tokens are metered and plan-limited
//! (policies/functions_assistant.sql).
//!
//! A turn: (1) one transaction that writes nothing admits it (tokens left, the conversation's
//! budget), resolves the model and key, and retrieves; (2) the model is called -- an
//! upstream failure before the first byte is a 502/504 and nothing is stored; (3) one
//! transaction stores the question and reserves the answer's place; (4) a task relays
//! the tokens and, however the stream ends (done, upstream failure, the client gone --
//! which cancels the upstream call), stores the answer, complete or partial, with its
//! citations and usage, and meters the tokens.

use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use poem::{http::StatusCode, web::Data, web::sse::Event as SseEvent};
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use tokio::sync::mpsc;
use tokio_postgres::Row;
use uuid::Uuid;

use crate::{
    api::ApiTags,
    assistant::{self, OrgModel, Retrieved},
    db::Access,
    error_set,
    http::{
        errors::{IN_ORG, JSON_BODY, KEY_OR_USER, PAGED, PLAN_LIMIT, Problems},
        json::{FastJson, rfc3339},
        pagination::{Cursor, page_params},
        problem::ApiError,
        security::{OrgAuth, Principal},
        sse::EventStreamOf,
        validate::{Question, ValidJson},
    },
    llm::{Chunk, LlmError},
    page,
    state::State,
};

pub struct AssistantApi;

const HEARTBEAT: Duration = Duration::from_secs(15);

/// A question for the assistant.
#[derive(Object)]
pub struct ChatRequest {
    /// Continue this conversation (one the caller started); absent: start a new one.
    pub conversation_id: Option<Uuid>,
    /// The question.
    pub message: Question,
    /// Search only these documents (at most 50, each one the caller can see).
    #[oai(validator(max_items = 50, unique_items = true))]
    pub document_ids: Option<Vec<Uuid>>,
}

/// A document chunk the answer was given with.
#[derive(Object, serde::Serialize, serde::Deserialize, Debug, Clone)]
pub struct Citation {
    pub document_id: Uuid,
    /// The chunk's number in its document (1, 2, ...).
    pub chunk_no: i32,
    /// The document's title.
    pub title: String,
    /// Its full-text search rank for the question (higher is closer).
    pub rank: f32,
}

impl From<&Retrieved> for Citation {
    fn from(r: &Retrieved) -> Self {
        Self {
            document_id: r.document_id,
            chunk_no: r.chunk_no,
            title: r.title.clone(),
            rank: r.rank,
        }
    }
}

/// Whether an answer is whole.
#[derive(Enum, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// The model finished its answer.
    Complete,
    /// The answer stopped early: the client went away, or the model's server failed or
    /// timed out mid-answer (`error` says which).
    Partial,
}

/// Tokens an answer used and what they cost.
#[derive(Object, serde::Serialize, Debug, Clone)]
pub struct TurnUsage {
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// US dollars at the organization's prices (`llm_*_price_per_mtok`, `billing_margin`).
    pub cost: f64,
    /// True when the model's server did not report usage (an answer cut short) and the
    /// tokens were estimated (about four characters a token).
    pub estimated: bool,
}

/// An error that ended a stream after it began.
#[derive(Object, serde::Serialize, Debug, Clone)]
pub struct StreamError {
    /// `upstream_error`, `upstream_timeout` or `internal_error`.
    pub code: String,
    pub detail: String,
}

/// The data of one event of an answer's stream. Event types: `start` (the conversation,
/// the answer's `message_seq` and its `citations`), `token` (`delta`: the next piece of
/// the answer), `error` (`error`: the stream ends early; the partial answer is stored),
/// then always `done` (`status`, `usage`, `finish_reason`) once the answer is stored.
#[derive(Object, serde::Serialize, Debug, Clone)]
pub struct ChatEvent {
    pub conversation_id: Uuid,
    /// `start`, `done`: the answer's place in the conversation.
    pub message_seq: Option<i32>,
    /// `token`: the next piece of the answer.
    pub delta: Option<String>,
    /// `start`: the chunks the model was given.
    pub citations: Option<Vec<Citation>>,
    /// `done`.
    pub status: Option<MessageStatus>,
    /// `done`.
    pub usage: Option<TurnUsage>,
    /// `done`: why the model stopped (`stop`, `length`, ...), when it said.
    pub finish_reason: Option<String>,
    /// `error`.
    pub error: Option<StreamError>,
}

impl ChatEvent {
    fn new(conversation_id: Uuid) -> Self {
        Self {
            conversation_id,
            message_seq: None,
            delta: None,
            citations: None,
            status: None,
            usage: None,
            finish_reason: None,
            error: None,
        }
    }

    fn sse(&self, event: &str) -> SseEvent {
        SseEvent::message(serde_json::to_string(self).unwrap_or_default()).event_type(event)
    }
}

/// An assistant conversation (private to whoever started it).
#[derive(Object, serde::Serialize, Debug, Clone)]
pub struct AssistantConversation {
    pub id: Uuid,
    pub org_id: Uuid,
    /// The user who started it (null when an API key did).
    pub created_by: Option<Uuid>,
    /// The API key that started it, or null.
    pub created_by_api_key: Option<Uuid>,
    /// From its first question.
    pub title: String,
    pub message_count: i32,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    /// US dollars, answers so far.
    pub cost: f64,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub last_message_at: DateTime<Utc>,
}

const CONVERSATION_COLUMNS: &str = "id, org_id, created_by, created_by_key, title, message_count, \
     prompt_tokens, completion_tokens, cost::float8, created_at, last_message_at";

impl From<&Row> for AssistantConversation {
    fn from(r: &Row) -> Self {
        Self {
            id: r.get(0),
            org_id: r.get(1),
            created_by: r.get(2),
            created_by_api_key: r.get(3),
            title: r.get(4),
            message_count: r.get(5),
            prompt_tokens: r.get(6),
            completion_tokens: r.get(7),
            cost: r.get(8),
            created_at: r.get(9),
            last_message_at: r.get(10),
        }
    }
}

/// Who wrote a message.
#[derive(Enum, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum MessageRole {
    User,
    Assistant,
}

/// One message of an assistant conversation.
#[derive(Object, serde::Serialize, Debug, Clone)]
pub struct AssistantMessage {
    /// Its place in the conversation: 1, 2, ... (a question, then its answer).
    pub seq: i32,
    pub role: MessageRole,
    pub content: String,
    pub status: MessageStatus,
    /// Why a partial answer stopped, or null.
    pub error: Option<String>,
    /// An answer's retrieved chunks (empty for questions).
    pub citations: Vec<Citation>,
    /// The model that answered, or null.
    pub model: Option<String>,
    pub prompt_tokens: Option<i32>,
    pub completion_tokens: Option<i32>,
    /// US dollars, or null.
    pub cost: Option<f64>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
}

const MESSAGE_COLUMNS: &str = "seq, role, content, status, error, citations, model, prompt_tokens, \
     completion_tokens, cost::float8, created_at";

impl From<&Row> for AssistantMessage {
    fn from(r: &Row) -> Self {
        let citations: serde_json::Value = r.get(5);
        Self {
            seq: r.get(0),
            role: if r.get::<_, &str>(1) == "user" {
                MessageRole::User
            } else {
                MessageRole::Assistant
            },
            content: r.get(2),
            status: if r.get::<_, &str>(3) == "partial" {
                MessageStatus::Partial
            } else {
                MessageStatus::Complete
            },
            error: r.get(4),
            citations: serde_json::from_value(citations).unwrap_or_default(),
            model: r.get(6),
            prompt_tokens: r.get(7),
            completion_tokens: r.get(8),
            cost: r.get(9),
            created_at: r.get(10),
        }
    }
}

page! {
    /// One page of assistant conversations, most recent first.
    AssistantConversationPage of AssistantConversation
}

page! {
    /// One page of a conversation's messages, oldest first.
    AssistantMessagePage of AssistantMessage
}

#[derive(ApiResponse)]
pub enum ChatResponse {
    /// The answer as server-sent events: `start`, `token`..., `error` (only when it ends
    /// early), `done`. Each event's `data` is a `ChatEvent` as JSON.
    #[oai(status = 200)]
    Ok(EventStreamOf<ChatEvent>),
}

#[derive(ApiResponse)]
pub enum ListAssistantConversationsResponse {
    /// The caller's conversations, most recent first.
    #[oai(status = 200)]
    Ok(FastJson<AssistantConversationPage>),
}

#[derive(ApiResponse)]
pub enum AssistantConversationResponse {
    /// The conversation.
    #[oai(status = 200)]
    Ok(Json<AssistantConversation>),
}

#[derive(ApiResponse)]
pub enum ListAssistantMessagesResponse {
    /// Messages, oldest first.
    #[oai(status = 200)]
    Ok(FastJson<AssistantMessagePage>),
}

#[derive(ApiResponse)]
pub enum DeleteAssistantConversationResponse {
    /// Deleted, with its messages.
    #[oai(status = 204)]
    NoContent,
}

const NO_CONVERSATION: &str = "No such organization, or no such conversation of the caller's \
     (another member's or key's conversations are private: `not_found`).";
const CHAT_NOT_FOUND: &str = "No such organization, no such conversation of the caller's, or a \
     `document_ids` entry names no document the caller can see (`not_found`).";
const HISTORY_FEATURE: &str = "The organization's plan does not include conversation history \
     (`plan_feature_unavailable`, with `feature`).";

error_set! {
    pub ChatErrors: [KEY_OR_USER, JSON_BODY, PLAN_LIMIT] {
        402 => "The organization has no LLM tokens left this period (`plan_limit_reached`, \
                meter `llm_tokens`), or the conversation has spent the organization's \
                `max_budget_per_task` (`budget_exhausted`). Nothing was sent to the model.",
        404 => CHAT_NOT_FOUND,
        409 => "No model is configured: neither the organization's `llm_base_url` nor the \
                server's (`assistant_not_configured`).",
        502 => "The model's server refused the request, failed, or could not be reached \
                (`upstream_error`, with its status and reason; never key material). \
                Nothing was stored.",
        504 => "The model's server did not answer in time (`upstream_timeout`). Nothing was stored.",
    }
    pub ListAssistantConversationsErrors: [KEY_OR_USER, IN_ORG, PAGED] { 403 => HISTORY_FEATURE }
    pub GetAssistantConversationErrors: [KEY_OR_USER] { 403 => HISTORY_FEATURE, 404 => NO_CONVERSATION }
    pub ListAssistantMessagesErrors: [KEY_OR_USER, PAGED] { 403 => HISTORY_FEATURE, 404 => NO_CONVERSATION }
    pub DeleteAssistantConversationErrors: [KEY_OR_USER] { 404 => NO_CONVERSATION }
}

/// Reading conversation history needs a plan with `conversation_history` (403
/// `plan_feature_unavailable`, decided by the database).
async fn require_history(tx: &crate::db::Tx) -> Result<(), ApiError> {
    tx.execute("select app.require_feature('conversation_history')", &[])
        .await?;
    Ok(())
}

fn conversation_not_found() -> ApiError {
    ApiError::not_found("conversation")
}

/// A failure of the model's server, as the client may learn it: status and reason,
/// never key material (the client redacts it from the reason).
fn upstream_problem(e: &LlmError) -> ApiError {
    tracing::warn!(error = %e, "assistant: the model's server failed");
    match e {
        LlmError::Timeout { stage } => ApiError::new(
            StatusCode::GATEWAY_TIMEOUT,
            "upstream_timeout",
            format!("the model's server did not answer in time ({stage})"),
        ),
        LlmError::Upstream { status, reason } => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!("the model's server answered {status}: {reason}"),
        ),
        LlmError::Unreachable(why) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!("the model's server could not be reached: {why}"),
        ),
        LlmError::Refused(why) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!("the model's server is not one this server calls: {why}"),
        ),
        LlmError::Protocol(why) => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "upstream_error",
            format!("the model's server answered in an unexpected format: {why}"),
        ),
    }
}

/// What the read-only first step of a turn found.
struct Prepared {
    org: OrgModel,
    endpoint: crate::llm::Endpoint,
    /// The server's own endpoint (any network) rather than the org's.
    servers: bool,
    history: Vec<(String, String)>,
    chunks: Vec<Retrieved>,
    tokens_left: Option<i64>,
    spent: f64,
}

/// What the relay needs to store an answer.
struct Turn {
    state: State,
    principal: Principal,
    org_id: Uuid,
    conversation_id: Uuid,
    seq: i32,
    model: String,
    org: OrgModel,
    citations: Vec<Citation>,
    prompt_estimate: i64,
}

/// How a relayed answer ended.
struct Ending {
    answer: String,
    usage: Option<(i64, i64)>,
    finish_reason: Option<String>,
    failure: Option<LlmError>,
    client_gone: bool,
}

impl Turn {
    /// Relays the model's stream to the client; stops reading (and so cancels the call)
    /// as soon as the client goes away.
    async fn relay(
        &self,
        mut upstream: crate::llm::ChatStream,
        events: &mpsc::Sender<SseEvent>,
    ) -> Ending {
        let mut end = Ending {
            answer: String::new(),
            usage: None,
            finish_reason: None,
            failure: None,
            client_gone: false,
        };
        loop {
            let next = tokio::select! {
                () = events.closed() => {
                    end.client_gone = true;
                    break;
                }
                next = upstream.next() => next,
            };
            match next {
                None => break,
                Some(Ok(Chunk::Delta(delta))) => {
                    end.answer.push_str(&delta);
                    let event = ChatEvent {
                        delta: Some(delta),
                        ..ChatEvent::new(self.conversation_id)
                    };
                    if events.send(event.sse("token")).await.is_err() {
                        end.client_gone = true;
                        break;
                    }
                }
                Some(Ok(Chunk::Usage {
                    prompt_tokens,
                    completion_tokens,
                })) => end.usage = Some((prompt_tokens, completion_tokens)),
                Some(Ok(Chunk::Finished { reason })) => end.finish_reason = Some(reason),
                Some(Err(e)) => {
                    end.failure = Some(e);
                    break;
                }
            }
        }
        end
    }

    /// Stores the answer (complete or partial), adds its usage to the conversation and
    /// meters its tokens, in one transaction as the caller.
    /// `failure`: the upstream failure's detail, as the client was told it.
    async fn store(
        &self,
        end: &Ending,
        failure: Option<String>,
    ) -> Result<(MessageStatus, TurnUsage), ApiError> {
        let partial = end.client_gone || end.failure.is_some();
        let status = if partial {
            MessageStatus::Partial
        } else {
            MessageStatus::Complete
        };
        let error = match (&end.failure, end.client_gone) {
            (Some(_), _) => failure,
            (None, true) => Some("the client disconnected before the answer was complete".into()),
            (None, false) => None,
        };
        let (prompt_tokens, completion_tokens, estimated) = match end.usage {
            Some((p, c)) => (p.max(0), c.max(0), false),
            None => (
                self.prompt_estimate,
                assistant::estimate_tokens(&end.answer),
                true,
            ),
        };
        let cost = self.org.cost(prompt_tokens, completion_tokens);
        let citations = serde_json::to_value(&self.citations).unwrap_or_default();
        let status_text = if partial { "partial" } else { "complete" };
        let (p32, c32) = (
            i32::try_from(prompt_tokens).unwrap_or(i32::MAX),
            i32::try_from(completion_tokens).unwrap_or(i32::MAX),
        );
        self.state
            .in_org(
                &self.principal,
                self.org_id,
                Access::ReadWrite,
                async |tx| {
                    tx.execute(
                        "insert into app.assistant_messages (conversation_id, seq, role,
                             content, status, error, citations, model, prompt_tokens,
                             completion_tokens, cost)
                         values ($1, $2, 'assistant', $3, $4, $5, $6, $7, $8, $9,
                                 $10::float8::numeric)",
                        &[
                            &self.conversation_id,
                            &self.seq,
                            &end.answer,
                            &status_text,
                            &error,
                            &citations,
                            &self.model,
                            &p32,
                            &c32,
                            &cost,
                        ],
                    )
                    .await?;
                    tx.execute(
                        "update app.assistant_conversations
                            set prompt_tokens = prompt_tokens + $2,
                                completion_tokens = completion_tokens + $3,
                                cost = cost + $4::float8::numeric, last_message_at = now()
                          where id = $1",
                        &[
                            &self.conversation_id,
                            &prompt_tokens,
                            &completion_tokens,
                            &cost,
                        ],
                    )
                    .await?;
                    tx.execute(
                        "select app.assistant_record_usage($1, $2, $3)",
                        &[&self.conversation_id, &prompt_tokens, &completion_tokens],
                    )
                    .await?;
                    Ok(())
                },
            )
            .await?;
        Ok((
            status,
            TurnUsage {
                prompt_tokens,
                completion_tokens,
                cost,
                estimated,
            },
        ))
    }

    /// The relay task: tokens through, then the answer stored however the stream ended,
    /// then `done` (to a client still there).
    async fn run(self, upstream: crate::llm::ChatStream, events: mpsc::Sender<SseEvent>) {
        let end = self.relay(upstream, &events).await;
        // Mapped (and logged) once: the client's event and the stored error say the same.
        let problem = end.failure.as_ref().map(upstream_problem);
        if let Some(problem) = &problem {
            let event = ChatEvent {
                error: Some(StreamError {
                    code: problem.code.into(),
                    detail: problem.detail.clone(),
                }),
                ..ChatEvent::new(self.conversation_id)
            };
            let _ = events.send(event.sse("error")).await;
        }
        match self.store(&end, problem.map(|p| p.detail)).await {
            Ok((status, usage)) => {
                let event = ChatEvent {
                    message_seq: Some(self.seq),
                    status: Some(status),
                    usage: Some(usage),
                    finish_reason: end.finish_reason.clone(),
                    ..ChatEvent::new(self.conversation_id)
                };
                let _ = events.send(event.sse("done")).await;
            }
            Err(e) => {
                tracing::error!(error = ?e, conversation = %self.conversation_id,
                    "assistant: the answer could not be stored");
                let event = ChatEvent {
                    error: Some(StreamError {
                        code: "internal_error".into(),
                        detail: "the answer could not be stored".into(),
                    }),
                    ..ChatEvent::new(self.conversation_id)
                };
                let _ = events.send(event.sse("error")).await;
            }
        }
    }
}

#[OpenApi(tag = "ApiTags::Assistant")]
impl AssistantApi {
    /// Ask the assistant
    ///
    /// Answers a question from the organization's ready documents, streamed as
    /// server-sent events (`text/event-stream`; `curl -N`). The chunks that best match
    /// the question are found by PostgreSQL full-text search under the caller's own
    /// row-level security -- never another organization's, nor a restricted project's the
    /// caller is not in -- and sent with the question and the conversation so far to the
    /// organization's OpenAI-compatible model (`llm_base_url`, `llm_model`; the caller's
    /// own LLM key, else the organization's; else the server's default model and key).
    /// Any member or API key of the organization may ask. The answer and its citations
    /// and token usage are stored on the conversation -- a partial answer as `partial`
    /// when the client disconnects (which cancels the model's call) or the model's
    /// server fails mid-answer. Tokens count against the plan's `llm_tokens`.
    #[oai(
        path = "/v1/orgs/:org_id/assistant/chat",
        method = "post",
        operation_id = "assistant_chat"
    )]
    async fn chat(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        body: ValidJson<ChatRequest>,
    ) -> Result<ChatResponse, Problems<ChatErrors>> {
        let org_id = org_id.0;
        let principal = auth.principal().clone();
        let user_id = match &principal {
            Principal::User { user_id, .. } => Some(*user_id),
            Principal::ApiKey(_) => None,
        };
        let question = body.message.as_str();
        let documents = body.document_ids.clone();
        let conversation = body.conversation_id;
        // (1) Admission, model, history and retrieval: one transaction that writes
        // nothing. A follow-up reads its conversation on the primary (a replica may not
        // have the answer just stored yet); a first question may go to a replica.
        let access = if conversation.is_some() {
            Access::ReadWrite
        } else {
            Access::ReadOnly
        };
        let prepared = state
            .in_org(&principal, org_id, access, async |tx| {
                let tokens_left: Option<i64> = tx
                    .query_one("select app.assistant_admit($1)", &[&conversation])
                    .await?
                    .get(0);
                let org = OrgModel::from(&tx.query_one(assistant::ORG_MODEL_SQL, &[]).await?);
                if let Some(ids) = &documents {
                    let seen: i64 = tx
                        .query_one(
                            "select count(*) from app.documents where id = any($1)",
                            &[ids],
                        )
                        .await?
                        .get(0);
                    if seen != ids.len() as i64 {
                        return Err(ApiError::not_found("document"));
                    }
                }
                let (endpoint, servers) = assistant::endpoint(
                    tx,
                    &state.master_keys,
                    &state.llm_settings,
                    org_id,
                    user_id,
                    &org,
                )
                .await?;
                let (history, spent) = match conversation {
                    Some(c) => {
                        let rows = tx
                            .query(
                                "select role, content from app.assistant_messages
                                  where conversation_id = $1 order by seq desc limit $2",
                                &[&c, &assistant::HISTORY_MESSAGES],
                            )
                            .await?;
                        let spent: f64 = tx
                            .query_one(
                                "select cost::float8 from app.assistant_conversations where id = $1",
                                &[&c],
                            )
                            .await?
                            .get(0);
                        (
                            rows.iter()
                                .rev()
                                .map(|r| (r.get::<_, String>(0), r.get::<_, String>(1)))
                                .collect(),
                            spent,
                        )
                    }
                    None => (Vec::new(), 0.0),
                };
                let chunks = tx
                    .query(
                        assistant::RETRIEVE_SQL,
                        &[&question, &documents, &assistant::RETRIEVED_CHUNKS],
                    )
                    .await?
                    .iter()
                    .map(assistant::retrieved)
                    .collect();
                Ok(Prepared {
                    org,
                    endpoint,
                    servers,
                    history,
                    chunks,
                    tokens_left,
                    spent,
                })
            })
            .await?;
        let messages = assistant::prompt(&prepared.chunks, &prepared.history, question);
        let prompt_estimate = messages
            .iter()
            .map(|m| assistant::estimate_tokens(&m.content))
            .sum::<i64>();
        let mut max_tokens = state.llm_settings.max_output_tokens;
        if let Some(left) = prepared.tokens_left {
            max_tokens = max_tokens.min(u32::try_from(left.max(1)).unwrap_or(u32::MAX));
        }
        if let Some(budget) = prepared.org.max_budget_per_task {
            let left = (budget - prepared.spent).max(0.0);
            if let Some(cap) = prepared.org.tokens_for(left) {
                max_tokens = max_tokens.min(cap);
            }
        }
        // (2) The model: an upstream failure before its first byte stores nothing.
        let client = if prepared.servers {
            &state.llm_server
        } else {
            &state.llm
        };
        let upstream = client
            .chat_stream(&prepared.endpoint, &messages, Some(max_tokens))
            .await
            .map_err(|e| upstream_problem(&e))?;
        // (3) The question, and the answer's place (seq), in their own transaction.
        let title = assistant::title_of(question);
        let (conversation_id, seq) = state
            .in_org(&principal, org_id, Access::ReadWrite, async |tx| {
                let id: Uuid = match conversation {
                    Some(c) => c,
                    None => tx
                        .query_one(
                            "insert into app.assistant_conversations (title) values ($1) returning id",
                            &[&title],
                        )
                        .await?
                        .get(0),
                };
                let seq: i32 = tx
                    .query_opt(
                        "update app.assistant_conversations
                            set message_count = message_count + 2, last_message_at = now()
                          where id = $1 returning message_count",
                        &[&id],
                    )
                    .await?
                    .ok_or_else(conversation_not_found)?
                    .get(0);
                tx.execute(
                    "insert into app.assistant_messages (conversation_id, seq, role, content)
                     values ($1, $2, 'user', $3)",
                    &[&id, &(seq - 1), &question],
                )
                .await?;
                Ok((id, seq))
            })
            .await?;
        // (4) Relay and store, in a task that outlives a client that goes away.
        let citations: Vec<Citation> = prepared.chunks.iter().map(Citation::from).collect();
        let (events, receiver) = mpsc::channel(64);
        let start = ChatEvent {
            message_seq: Some(seq),
            citations: Some(citations.clone()),
            ..ChatEvent::new(conversation_id)
        };
        let _ = events.try_send(start.sse("start"));
        let turn = Turn {
            state: State::clone(&state),
            principal,
            org_id,
            conversation_id,
            seq,
            model: prepared.endpoint.model.clone(),
            org: prepared.org,
            citations,
            prompt_estimate,
        };
        // The relay's transactions belong to this request: counted once.
        let request = crate::limits::current();
        tokio::spawn(crate::limits::within(request, turn.run(upstream, events)));
        let stream = futures_util::stream::unfold(receiver, |mut r| async move {
            r.recv().await.map(|e| (e, r))
        });
        Ok(ChatResponse::Ok(EventStreamOf::new(
            stream.boxed(),
            HEARTBEAT,
        )))
    }

    /// List assistant conversations
    ///
    /// The caller's own (a user's, or an API key's), most recent first. Needs a plan with
    /// `conversation_history`.
    #[oai(
        path = "/v1/orgs/:org_id/assistant/conversations",
        method = "get",
        operation_id = "list_assistant_conversations"
    )]
    async fn list(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// Page size, 1-100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<ListAssistantConversationsResponse, Problems<ListAssistantConversationsErrors>>
    {
        let (limit, after) = page_params(limit.0, cursor.0.as_deref())?;
        let (after_at, after_id) = (after.map(|c| c.created_at), after.map(|c| c.id));
        let rows = state
            .in_org(auth.principal(), org_id.0, Access::ReadOnly, async |tx| {
                require_history(tx).await?;
                Ok(tx
                    .query(
                        &format!(
                            "select {CONVERSATION_COLUMNS} from app.assistant_conversations
                              where $2::timestamptz is null or (last_message_at, id) < ($2, $3::uuid)
                              order by last_message_at desc, id desc limit $1"
                        ),
                        &[&(limit + 1), &after_at, &after_id],
                    )
                    .await?)
            })
            .await?;
        let items = rows.iter().map(AssistantConversation::from).collect();
        Ok(ListAssistantConversationsResponse::Ok(FastJson(
            AssistantConversationPage::from_rows(items, limit, |c| Cursor {
                created_at: c.last_message_at,
                id: c.id,
            }),
        )))
    }

    /// Get an assistant conversation
    #[oai(
        path = "/v1/orgs/:org_id/assistant/conversations/:assistant_conversation_id",
        method = "get",
        operation_id = "get_assistant_conversation"
    )]
    async fn get(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The assistant conversation's id.
        assistant_conversation_id: Path<Uuid>,
    ) -> Result<AssistantConversationResponse, Problems<GetAssistantConversationErrors>> {
        let rows = state
            .in_org(auth.principal(), org_id.0, Access::ReadOnly, async |tx| {
                require_history(tx).await?;
                Ok(tx
                    .query(
                        &format!(
                            "select {CONVERSATION_COLUMNS} from app.assistant_conversations where id = $1"
                        ),
                        &[&assistant_conversation_id.0],
                    )
                    .await?)
            })
            .await?;
        let c = rows
            .first()
            .map(AssistantConversation::from)
            .ok_or_else(conversation_not_found)?;
        Ok(AssistantConversationResponse::Ok(Json(c)))
    }

    /// List an assistant conversation's messages
    ///
    /// Oldest first: each question, then its answer with the chunks it cited and its
    /// token usage. Needs a plan with `conversation_history`.
    #[oai(
        path = "/v1/orgs/:org_id/assistant/conversations/:assistant_conversation_id/messages",
        method = "get",
        operation_id = "list_assistant_messages"
    )]
    async fn messages(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The assistant conversation's id.
        assistant_conversation_id: Path<Uuid>,
        /// Page size, 1-100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<ListAssistantMessagesResponse, Problems<ListAssistantMessagesErrors>> {
        let (limit, after) = page_params(limit.0, cursor.0.as_deref())?;
        // The cursor carries the last message's seq in its id (cursors are opaque).
        let after_seq = after.map(|c| c.id.as_u128().min(i32::MAX as u128) as i32);
        let conversation_id = assistant_conversation_id.0;
        let (conversation, rows) = state
            .in_org(auth.principal(), org_id.0, Access::ReadOnly, async |tx| {
                require_history(tx).await?;
                let conversation = tx
                    .query_opt(
                        "select 1 from app.assistant_conversations where id = $1",
                        &[&conversation_id],
                    )
                    .await?;
                let rows = tx
                    .query(
                        &format!(
                            "select {MESSAGE_COLUMNS} from app.assistant_messages
                              where conversation_id = $1 and ($2::int is null or seq > $2)
                              order by seq limit $3"
                        ),
                        &[&conversation_id, &after_seq, &(limit + 1)],
                    )
                    .await?;
                Ok((conversation, rows))
            })
            .await?;
        if conversation.is_none() {
            return Err(conversation_not_found().into());
        }
        let items = rows.iter().map(AssistantMessage::from).collect();
        Ok(ListAssistantMessagesResponse::Ok(FastJson(
            AssistantMessagePage::from_rows(items, limit, |m| Cursor {
                created_at: m.created_at,
                id: Uuid::from_u128(m.seq as u128),
            }),
        )))
    }

    /// Delete an assistant conversation
    ///
    /// Its starter only; its messages go with it. Metered usage stays metered.
    #[oai(
        path = "/v1/orgs/:org_id/assistant/conversations/:assistant_conversation_id",
        method = "delete",
        operation_id = "delete_assistant_conversation"
    )]
    async fn delete(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The assistant conversation's id.
        assistant_conversation_id: Path<Uuid>,
    ) -> Result<DeleteAssistantConversationResponse, Problems<DeleteAssistantConversationErrors>>
    {
        state
            .delete_in_org(
                auth.principal(),
                org_id.0,
                "delete from app.assistant_conversations where id = $1",
                &[&assistant_conversation_id.0],
                conversation_not_found,
            )
            .await?;
        Ok(DeleteAssistantConversationResponse::NoContent)
    }
}
