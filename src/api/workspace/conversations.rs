//! Conversations: metadata in PostgreSQL (policies/conversations.sql decides who sees and
//! changes each one: `private` is its creator's and the org admins', `org` every
//! member's, a restricted project's only its members'), events in the object store
//! (`events.rs`). No handler here filters by tenant, visibility or role.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
    types::MaybeUndefined,
};
use tokio_postgres::Row;

use crate::api::changes::Changes;
use uuid::Uuid;

use crate::{
    api::ApiTags,
    db::Access,
    error_set,
    http::{
        errors::{IN_ORG, JSON_BODY, KEY_OR_USER, PAGED, Problems},
        json::{FastJson, rfc3339},
        pagination::{Cursor, page_params},
        problem::ApiError,
        security::OrgAuth,
        validate::{Label, LongLine, ValidJson},
    },
    page,
    state::State,
};

pub struct ConversationsApi;

/// Who sees a conversation.
#[derive(Enum, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Visibility {
    /// Its creator and the organization's admins and owners.
    Private,
    /// Every member of the organization (and its API keys).
    Org,
}

impl Visibility {
    fn as_str(self) -> &'static str {
        match self {
            Visibility::Private => "private",
            Visibility::Org => "org",
        }
    }
    fn parse(s: &str) -> Self {
        if s == "org" {
            Visibility::Org
        } else {
            Visibility::Private
        }
    }
}

/// A conversation: metadata and counters; its events are read from `/events`.
#[derive(Object, serde::Serialize, Debug, Clone)]
pub struct Conversation {
    pub id: Uuid,
    pub org_id: Uuid,
    /// The project it belongs to, or null.
    pub project_id: Option<Uuid>,
    /// The user who created it (null when an API key did, or the user was deleted).
    pub created_by: Option<Uuid>,
    /// The API key that created it, or null.
    pub created_by_api_key: Option<Uuid>,
    pub title: Option<String>,
    pub visibility: Visibility,
    pub selected_repository: Option<String>,
    pub selected_branch: Option<String>,
    pub git_provider: Option<String>,
    pub trigger: Option<String>,
    pub pr_numbers: Vec<i32>,
    pub llm_model: Option<String>,
    /// Sum of the `usage.cost` of its events.
    pub accumulated_cost: f64,
    pub prompt_tokens: i64,
    pub completion_tokens: i64,
    pub total_tokens: i64,
    /// Events appended so far; the last event's `seq`.
    pub event_count: i64,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// Last change of its metadata or events (lists are newest-updated first).
    #[serde(serialize_with = "rfc3339")]
    pub last_updated_at: DateTime<Utc>,
}

pub const COLUMNS: &str = "id, org_id, project_id, created_by, created_by_key, title, visibility, \
     selected_repository, selected_branch, git_provider, trigger, pr_numbers, llm_model, \
     accumulated_cost::float8, prompt_tokens, completion_tokens, total_tokens, event_count, \
     created_at, last_updated_at";

impl From<&Row> for Conversation {
    fn from(r: &Row) -> Self {
        Self {
            id: r.get(0),
            org_id: r.get(1),
            project_id: r.get(2),
            created_by: r.get(3),
            created_by_api_key: r.get(4),
            title: r.get(5),
            visibility: Visibility::parse(r.get(6)),
            selected_repository: r.get(7),
            selected_branch: r.get(8),
            git_provider: r.get(9),
            trigger: r.get(10),
            pr_numbers: r.get(11),
            llm_model: r.get(12),
            accumulated_cost: r.get(13),
            prompt_tokens: r.get(14),
            completion_tokens: r.get(15),
            total_tokens: r.get(16),
            event_count: r.get(17),
            created_at: r.get(18),
            last_updated_at: r.get(19),
        }
    }
}

page! {
    /// One page of conversations, newest-updated first.
    ConversationPage of Conversation
}

/// A new conversation. Every field is optional.
#[derive(Object)]
pub struct CreateConversation {
    pub title: Option<LongLine>,
    /// Default `private`.
    pub visibility: Option<Visibility>,
    /// A project of the organization the caller may write.
    pub project_id: Option<Uuid>,
    pub selected_repository: Option<LongLine>,
    pub selected_branch: Option<LongLine>,
    pub git_provider: Option<Label>,
    /// What started it (e.g. `gui`, `slack`, `api`).
    pub trigger: Option<Label>,
    /// Pull request numbers (at most 100, each at least 1).
    #[oai(validator(max_items = 100, minimum(value = "1")))]
    pub pr_numbers: Option<Vec<i32>>,
    pub llm_model: Option<LongLine>,
}

/// Fields to change; absent fields stay as they are, `null` clears a nullable one.
#[derive(Object)]
pub struct UpdateConversation {
    pub title: MaybeUndefined<LongLine>,
    pub visibility: Option<Visibility>,
    pub project_id: MaybeUndefined<Uuid>,
    pub selected_repository: MaybeUndefined<LongLine>,
    pub selected_branch: MaybeUndefined<LongLine>,
    pub git_provider: MaybeUndefined<Label>,
    pub trigger: MaybeUndefined<Label>,
    /// Pull request numbers (at most 100, each at least 1).
    #[oai(validator(max_items = 100, minimum(value = "1")))]
    pub pr_numbers: Option<Vec<i32>>,
    pub llm_model: MaybeUndefined<LongLine>,
}

#[derive(ApiResponse)]
pub enum ListConversationsResponse {
    /// Conversations the caller may see, newest-updated first.
    #[oai(status = 200)]
    Ok(FastJson<ConversationPage>),
}

#[derive(ApiResponse)]
pub enum CreateConversationResponse {
    /// Created.
    #[oai(status = 201)]
    Created(Json<Conversation>),
}

#[derive(ApiResponse)]
pub enum ConversationResponse {
    /// The conversation.
    #[oai(status = 200)]
    Ok(Json<Conversation>),
}

#[derive(ApiResponse)]
pub enum DeleteConversationResponse {
    /// Deleted, with its events (their objects are purged in the background).
    #[oai(status = 204)]
    NoContent,
}

pub const NO_CONVERSATION: &str = "No such conversation for the caller: another organization's, a \
     private one of another member, or one in a restricted project the caller is not in \
     (`not_found`).";
const NOT_WRITER: &str = "A viewer, or not the creator of the conversation nor an org admin, \
     or a project viewer of a restricted project (`forbidden`).";
const NO_PROJECT: &str =
    "No such organization, or `project_id` names no project the caller can see (`not_found`).";

error_set! {
    pub ListConversationsErrors: [KEY_OR_USER, IN_ORG, PAGED] {}
    pub CreateConversationErrors: [KEY_OR_USER, JSON_BODY] { 403 => NOT_WRITER, 404 => NO_PROJECT }
    pub GetConversationErrors: [KEY_OR_USER] { 404 => NO_CONVERSATION }
    pub UpdateConversationErrors: [KEY_OR_USER, JSON_BODY] { 403 => NOT_WRITER, 404 => NO_CONVERSATION }
    pub DeleteConversationErrors: [KEY_OR_USER] { 403 => NOT_WRITER, 404 => NO_CONVERSATION }
}

pub fn conversation_not_found() -> ApiError {
    ApiError::not_found("conversation")
}

#[OpenApi(tag = "ApiTags::Conversations")]
impl ConversationsApi {
    /// List conversations
    ///
    /// Newest-updated first, paginated with `limit` and `cursor`. Only those the caller
    /// may see: every `org` conversation, its own `private` ones (all of them for org
    /// admins), none of a restricted project it is not in.
    #[oai(
        path = "/v1/orgs/:org_id/conversations",
        method = "get",
        operation_id = "list_conversations"
    )]
    #[allow(clippy::too_many_arguments)]
    async fn list(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// Only conversations of this project.
        project_id: Query<Option<Uuid>>,
        /// Only conversations this user created.
        created_by: Query<Option<Uuid>>,
        /// Only conversations changed at or after this instant (RFC 3339).
        updated_since: Query<Option<DateTime<Utc>>>,
        /// Page size, 1-100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<ListConversationsResponse, Problems<ListConversationsErrors>> {
        let (limit, after) = page_params(limit.0, cursor.0.as_deref())?;
        let (after_at, after_id) = (after.map(|c| c.created_at), after.map(|c| c.id));
        let rows = state
            .read_in_org(
                auth.principal(),
                org_id.0,
                &format!(
                    "select {COLUMNS} from app.conversations
                      where ($2::uuid is null or project_id = $2)
                        and ($3::uuid is null or created_by = $3)
                        and ($4::timestamptz is null or last_updated_at >= $4)
                        and ($5::timestamptz is null or (last_updated_at, id) < ($5, $6::uuid))
                      order by last_updated_at desc, id desc limit $1"
                ),
                &[
                    &(limit + 1),
                    &project_id.0,
                    &created_by.0,
                    &updated_since.0,
                    &after_at,
                    &after_id,
                ],
            )
            .await?;
        let items = rows.iter().map(Conversation::from).collect();
        Ok(ListConversationsResponse::Ok(FastJson(
            ConversationPage::from_rows(items, limit, |c| Cursor {
                created_at: c.last_updated_at,
                id: c.id,
            }),
        )))
    }

    /// Create a conversation
    ///
    /// Members and up; in a restricted project, its editors and admins and org admins.
    #[oai(
        path = "/v1/orgs/:org_id/conversations",
        method = "post",
        operation_id = "create_conversation"
    )]
    async fn create(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        body: ValidJson<CreateConversation>,
    ) -> Result<CreateConversationResponse, Problems<CreateConversationErrors>> {
        let text = |t: &Option<LongLine>| t.as_ref().map(|t| t.as_str().to_owned());
        let label = |t: &Option<Label>| t.as_ref().map(|t| t.as_str().to_owned());
        let visibility = body.visibility.unwrap_or(Visibility::Private).as_str();
        let prs = body.pr_numbers.clone().unwrap_or_default();
        let (title, repo, branch, model) = (
            text(&body.title),
            text(&body.selected_repository),
            text(&body.selected_branch),
            text(&body.llm_model),
        );
        let (provider, trigger) = (label(&body.git_provider), label(&body.trigger));
        let conversation = state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                let row = tx
                    .query_one(
                        &format!(
                            "insert into app.conversations (project_id, title, visibility,
                                 selected_repository, selected_branch, git_provider, trigger,
                                 pr_numbers, llm_model)
                             values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning {COLUMNS}"
                        ),
                        &[
                            &body.project_id,
                            &title,
                            &visibility,
                            &repo,
                            &branch,
                            &provider,
                            &trigger,
                            &prs,
                            &model,
                        ],
                    )
                    .await?;
                Ok(Conversation::from(&row))
            })
            .await?;
        Ok(CreateConversationResponse::Created(Json(conversation)))
    }

    /// Get a conversation
    #[oai(
        path = "/v1/orgs/:org_id/conversations/:conversation_id",
        method = "get",
        operation_id = "get_conversation"
    )]
    async fn get(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The conversation's id.
        conversation_id: Path<Uuid>,
    ) -> Result<ConversationResponse, Problems<GetConversationErrors>> {
        let rows = state
            .read_in_org(
                auth.principal(),
                org_id.0,
                &format!("select {COLUMNS} from app.conversations where id = $1"),
                &[&conversation_id.0],
            )
            .await?;
        let c = rows
            .first()
            .map(Conversation::from)
            .ok_or_else(conversation_not_found)?;
        Ok(ConversationResponse::Ok(Json(c)))
    }

    /// Update a conversation
    ///
    /// Its creator or an org admin. Making it `private` ends other members' live tails.
    #[oai(
        path = "/v1/orgs/:org_id/conversations/:conversation_id",
        method = "patch",
        operation_id = "update_conversation"
    )]
    async fn update(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The conversation's id.
        conversation_id: Path<Uuid>,
        body: ValidJson<UpdateConversation>,
    ) -> Result<ConversationResponse, Problems<UpdateConversationErrors>> {
        let strings = |m: &MaybeUndefined<LongLine>| m.clone().map_value(|t| t.into_inner());
        let labels = |m: &MaybeUndefined<Label>| m.clone().map_value(|t| t.into_inner());
        let mut changes = Changes::new(Box::new(conversation_id.0));
        changes.maybe("title", "", &strings(&body.title));
        if let Some(vis) = body.visibility {
            changes.set("visibility", "", Box::new(vis.as_str()));
        }
        changes.maybe("project_id", "", &body.project_id);
        changes.maybe(
            "selected_repository",
            "",
            &strings(&body.selected_repository),
        );
        changes.maybe("selected_branch", "", &strings(&body.selected_branch));
        changes.maybe("git_provider", "", &labels(&body.git_provider));
        changes.maybe("trigger", "", &labels(&body.trigger));
        if let Some(prs) = &body.pr_numbers {
            changes.set("pr_numbers", "", Box::new(prs.clone()));
        }
        changes.maybe("llm_model", "", &strings(&body.llm_model));
        changes.sets.push("last_updated_at = now()".into());
        let sql = format!(
            "update app.conversations set {} where id = $1 returning {COLUMNS}",
            changes.sets.join(", ")
        );
        let params = changes.params();
        let c = state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                let row = tx.query_opt(&sql, &params).await?;
                row.as_ref()
                    .map(Conversation::from)
                    .ok_or_else(conversation_not_found)
            })
            .await?;
        Ok(ConversationResponse::Ok(Json(c)))
    }

    /// Delete a conversation
    ///
    /// Its creator or an org admin. Its rows go at once; its event objects are deleted by
    /// the worker through a durable queue.
    #[oai(
        path = "/v1/orgs/:org_id/conversations/:conversation_id",
        method = "delete",
        operation_id = "delete_conversation"
    )]
    async fn delete(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The conversation's id.
        conversation_id: Path<Uuid>,
    ) -> Result<DeleteConversationResponse, Problems<DeleteConversationErrors>> {
        state
            .delete_in_org(
                auth.principal(),
                org_id.0,
                "delete from app.conversations where id = $1",
                &[&conversation_id.0],
                conversation_not_found,
            )
            .await?;
        Ok(DeleteConversationResponse::NoContent)
    }
}
