use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
    types::MaybeUndefined,
};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{
    ApiTags, State,
    json::{FastJson, rfc3339},
    orgs::{context, org_not_found},
    pagination::{Cursor, page_params, split_page},
    problem::ApiError,
    security::Auth,
    validate::Validator,
};
use crate::db::Access;

pub struct ProjectsApi;

const NAME_MAX: usize = 100;
const DESCRIPTION_MAX: usize = 2000;

/// A project: tenant data owned by one organization.
#[derive(Object, serde::Serialize, Debug, Clone)]
pub struct Project {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

const PROJECT_COLUMNS: &str = "id, org_id, name, description, created_at, updated_at";

impl From<&Row> for Project {
    fn from(r: &Row) -> Self {
        Self {
            id: r.get(0),
            org_id: r.get(1),
            name: r.get(2),
            description: r.get(3),
            created_at: r.get(4),
            updated_at: r.get(5),
        }
    }
}

/// One page of projects.
#[derive(Object, serde::Serialize)]
pub struct ProjectPage {
    pub items: Vec<Project>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A new project.
#[derive(Object)]
pub struct CreateProject {
    /// 1-100 characters, unique within the organization.
    pub name: String,
    /// Up to 2000 characters.
    pub description: Option<String>,
}

/// Fields to change; absent fields stay as they are.
#[derive(Object)]
pub struct UpdateProject {
    /// 1-100 characters, unique within the organization.
    pub name: Option<String>,
    /// Up to 2000 characters; `null` clears it, absent leaves it unchanged.
    pub description: MaybeUndefined<String>,
}

#[derive(ApiResponse)]
pub enum ListProjectsResponse {
    /// Projects of the organization, oldest first.
    #[oai(status = 200)]
    Ok(FastJson<ProjectPage>),
}

#[derive(ApiResponse)]
pub enum CreateProjectResponse {
    /// Created.
    #[oai(status = 201)]
    Created(Json<Project>),
}

#[derive(ApiResponse)]
pub enum ProjectResponse {
    /// The project.
    #[oai(status = 200)]
    Ok(Json<Project>),
}

#[derive(ApiResponse)]
pub enum DeleteProjectResponse {
    /// Deleted.
    #[oai(status = 204)]
    NoContent,
}

crate::problem_responses! {
    pub enum ListProjectsError {
        /// Invalid `limit` or `cursor`.
        BadRequest = 400,
        /// Missing, invalid or expired access token, or its session has ended.
        Unauthorized = 401,
        /// No such organization, or the caller is not a member of it.
        NotFound = 404,
        /// The database is unavailable; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
    }
}

crate::problem_responses! {
    pub enum GetProjectError {
        /// Missing, invalid or expired access token, or its session has ended.
        Unauthorized = 401,
        /// No such project in an organization the caller belongs to.
        NotFound = 404,
        /// The database is unavailable; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
    }
}

crate::problem_responses! {
    pub enum WriteProjectError {
        /// Malformed JSON body.
        BadRequest = 400,
        /// Missing, invalid or expired access token, or its session has ended.
        Unauthorized = 401,
        /// The caller's role may not write projects (viewers), decided by the policy (`forbidden`).
        Forbidden = 403,
        /// No such organization or project for the caller.
        NotFound = 404,
        /// A project with this name already exists in the organization (`name_taken`).
        Conflict = 409,
        /// Body larger than the limit.
        PayloadTooLarge = 413,
        /// Body is not JSON.
        UnsupportedMediaType = 415,
        /// Invalid fields (`validation_failed`, with `errors`).
        UnprocessableEntity = 422,
        /// The database is unavailable; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
    }
}

crate::problem_responses! {
    pub enum DeleteProjectError {
        /// Missing, invalid or expired access token, or its session has ended.
        Unauthorized = 401,
        /// The caller's role may not delete projects (viewers), decided by the policy (`forbidden`).
        Forbidden = 403,
        /// No such project in an organization the caller belongs to.
        NotFound = 404,
        /// The database is unavailable; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
    }
}

#[OpenApi(tag = "ApiTags::Projects")]
impl ProjectsApi {
    /// List projects
    ///
    /// Oldest first, paginated with `limit` and `cursor`. Row-level security limits the
    /// rows to the organization in the path, and only for its members.
    #[oai(
        path = "/v1/orgs/:org_id/projects",
        method = "get",
        operation_id = "list_projects"
    )]
    async fn list(
        &self,
        state: Data<&State>,
        auth: Auth,
        /// The organization's id: `user.current_org_id` from `GET /v1/auth/me`, or an `id` from `GET /v1/orgs`.
        org_id: Path<Uuid>,
        /// Page size, 1-100 (default 20).
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<ListProjectsResponse, ListProjectsError> {
        let (limit, after) = page_params(limit.0, cursor.0.as_deref())?;
        let ctx = context(&auth, Some(org_id.0));
        // One round trip: BEGIN, context, query and COMMIT pipelined (see Db::read).
        // No tenant filter here: the projects_guard policies add org_id = current org.
        let (role, rows) = match after {
            None => {
                state
                    .db
                    .read(
                        &ctx,
                        &format!("select {PROJECT_COLUMNS} from app.projects order by created_at, id limit $1"),
                        &[&(limit + 1)],
                    )
                    .await?
            }
            Some(c) => {
                state
                    .db
                    .read(
                        &ctx,
                        &format!(
                            "select {PROJECT_COLUMNS} from app.projects where (created_at, id) > ($2, $3)
                              order by created_at, id limit $1"
                        ),
                        &[&(limit + 1), &c.created_at, &c.id],
                    )
                    .await?
            }
        };
        if role.is_none() {
            return Err(org_not_found().into());
        }
        let items: Vec<Project> = rows.iter().map(Project::from).collect();
        let (items, next_cursor) = split_page(items, limit, |p| Cursor {
            created_at: p.created_at,
            id: p.id,
        });
        Ok(ListProjectsResponse::Ok(FastJson(ProjectPage {
            items,
            next_cursor,
        })))
    }

    /// Create a project
    ///
    /// Members and above; a viewer gets 403 from the insert policy.
    #[oai(
        path = "/v1/orgs/:org_id/projects",
        method = "post",
        operation_id = "create_project"
    )]
    async fn create(
        &self,
        state: Data<&State>,
        auth: Auth,
        /// The organization's id: `user.current_org_id` from `GET /v1/auth/me`, or an `id` from `GET /v1/orgs`.
        org_id: Path<Uuid>,
        body: Json<CreateProject>,
    ) -> Result<CreateProjectResponse, WriteProjectError> {
        let mut v = Validator::new();
        let name = v.text("name", &body.name, 1, NAME_MAX);
        let description = body
            .description
            .as_deref()
            .map(|d| v.text("description", d, 0, DESCRIPTION_MAX));
        v.finish()?;
        let tx = state
            .db
            .begin(Some(&context(&auth, Some(org_id.0))), Access::ReadWrite)
            .await?;
        let result = async {
            if tx.org_role().is_none() {
                return Err(org_not_found().into());
            }
            // org_id defaults from the request context; the runtime role cannot set it.
            let row = tx
                .query_one(
                    &format!("insert into app.projects (name, description) values ($1, $2) returning {PROJECT_COLUMNS}"),
                    &[&name, &description],
                )
                .await?;
            Ok(CreateProjectResponse::Created(Json(Project::from(&row))))
        }
        .await;
        tx.finish(result).await
    }

    /// Get a project
    ///
    /// 404 when it does not exist or belongs to an organization the caller is not in.
    #[oai(
        path = "/v1/orgs/:org_id/projects/:project_id",
        method = "get",
        operation_id = "get_project"
    )]
    async fn get(
        &self,
        state: Data<&State>,
        auth: Auth,
        /// The organization's id: `user.current_org_id` from `GET /v1/auth/me`, or an `id` from `GET /v1/orgs`.
        org_id: Path<Uuid>,
        /// The project's id, as returned when it was created or listed.
        project_id: Path<Uuid>,
    ) -> Result<ProjectResponse, GetProjectError> {
        let tx = state
            .db
            .begin(Some(&context(&auth, Some(org_id.0))), Access::ReadOnly)
            .await?;
        let result = async {
            let row = tx
                .query_opt(
                    &format!("select {PROJECT_COLUMNS} from app.projects where id = $1"),
                    &[&project_id.0],
                )
                .await?;
            row.map(|r| ProjectResponse::Ok(Json(Project::from(&r))))
                .ok_or_else(|| ApiError::not_found("project").into())
        }
        .await;
        tx.finish(result).await
    }

    /// Update a project
    ///
    /// Only the fields present change; `description: null` clears it. Members and above.
    #[oai(
        path = "/v1/orgs/:org_id/projects/:project_id",
        method = "patch",
        operation_id = "update_project"
    )]
    async fn update(
        &self,
        state: Data<&State>,
        auth: Auth,
        /// The organization's id: `user.current_org_id` from `GET /v1/auth/me`, or an `id` from `GET /v1/orgs`.
        org_id: Path<Uuid>,
        /// The project's id, as returned when it was created or listed.
        project_id: Path<Uuid>,
        body: Json<UpdateProject>,
    ) -> Result<ProjectResponse, WriteProjectError> {
        let mut v = Validator::new();
        let name = body.name.as_deref().map(|n| v.text("name", n, 1, NAME_MAX));
        let (set_description, description) = match &body.description {
            MaybeUndefined::Undefined => (false, None),
            MaybeUndefined::Null => (true, None),
            MaybeUndefined::Value(d) => (true, Some(v.text("description", d, 0, DESCRIPTION_MAX))),
        };
        v.finish()?;
        let tx = state
            .db
            .begin(Some(&context(&auth, Some(org_id.0))), Access::ReadWrite)
            .await?;
        let result = async {
            let row = tx
                .query_opt(
                    &format!(
                        "update app.projects
                            set name = coalesce($2, name),
                                description = case when $3 then $4 else description end,
                                updated_at = now()
                          where id = $1
                      returning {PROJECT_COLUMNS}"
                    ),
                    &[&project_id.0, &name, &set_description, &description],
                )
                .await?;
            row.map(|r| ProjectResponse::Ok(Json(Project::from(&r))))
                .ok_or_else(|| ApiError::not_found("project").into())
        }
        .await;
        tx.finish(result).await
    }

    /// Delete a project
    ///
    /// Members and above; a viewer gets 403 from the delete policy.
    #[oai(
        path = "/v1/orgs/:org_id/projects/:project_id",
        method = "delete",
        operation_id = "delete_project"
    )]
    async fn delete(
        &self,
        state: Data<&State>,
        auth: Auth,
        /// The organization's id: `user.current_org_id` from `GET /v1/auth/me`, or an `id` from `GET /v1/orgs`.
        org_id: Path<Uuid>,
        /// The project's id, as returned when it was created or listed.
        project_id: Path<Uuid>,
    ) -> Result<DeleteProjectResponse, DeleteProjectError> {
        let tx = state
            .db
            .begin(Some(&context(&auth, Some(org_id.0))), Access::ReadWrite)
            .await?;
        let result = async {
            let deleted = tx
                .execute("delete from app.projects where id = $1", &[&project_id.0])
                .await?;
            if deleted == 0 {
                return Err(ApiError::not_found("project").into());
            }
            Ok(DeleteProjectResponse::NoContent)
        }
        .await;
        tx.finish(result).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_json_page_matches_the_openapi_encoding() {
        let at = DateTime::from_timestamp_micros(1_767_225_600_123_456).unwrap();
        let project = |description: Option<&str>| Project {
            id: Uuid::new_v4(),
            org_id: Uuid::new_v4(),
            name: "a \"quoted\" name \u{e9}".into(),
            description: description.map(Into::into),
            created_at: at,
            updated_at: DateTime::from_timestamp(1_767_225_600, 0).unwrap(),
        };
        super::super::json::assert_same_json(&ProjectPage {
            items: vec![project(None), project(Some("line\nbreak"))],
            next_cursor: Some("abc".into()),
        });
        super::super::json::assert_same_json(&ProjectPage {
            items: vec![],
            next_cursor: None,
        });
        // Every fraction width chrono picks (none, milli, micro, nano), and the edges.
        for (secs, nanos) in [
            (0, 0),
            (1_767_225_600, 5_000_000),
            (1_767_225_600, 5_000),
            (1_767_225_600, 5),
            (1_767_225_600, 999_999_999),
            (253_402_300_799, 0),
        ] {
            let mut p = project(None);
            p.created_at = DateTime::from_timestamp(secs, nanos).unwrap();
            super::super::json::assert_same_json(&p);
        }
    }
}
