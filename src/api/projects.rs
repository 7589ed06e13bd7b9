//! Projects: the template every tenant resource copies. Its handlers are their SQL and
//! their types: the kernel (`State::in_org`) runs them in the org of the path as a member
//! of it, and RLS (policies/projects.sql) limits every statement to that org's rows and
//! refuses viewers' writes -- there is no tenant filter and no role check here.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
    types::MaybeUndefined,
};
use tokio_postgres::Row;
use uuid::Uuid;

use super::ApiTags;
use crate::{
    db::Access,
    error_set,
    http::{
        errors::{IN_ORG, JSON_BODY, KEY_OR_USER, PAGED, PLAN_LIMIT, Problems},
        json::{FastJson, rfc3339},
        pagination::{Cursor, page_params},
        problem::ApiError,
        security::OrgAuth,
        validate::{Description, Name, ValidJson},
    },
    page,
    state::State,
};

pub struct ProjectsApi;

/// A project: tenant data owned by one organization.
#[derive(Object, serde::Serialize, Debug, Clone)]
pub struct Project {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    pub description: Option<String>,
    /// `open`: every member of the organization; `restricted`: its project members and
    /// the organization's admins and owners only.
    pub access: ProjectAccess,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    #[serde(serialize_with = "rfc3339")]
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, org_id, name, description, access, created_at, updated_at";

/// Who sees a project and its conversations and documents.
#[derive(Enum, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum ProjectAccess {
    /// Every member of the organization.
    Open,
    /// Its project members and the organization's admins and owners.
    Restricted,
}

impl ProjectAccess {
    pub fn as_str(self) -> &'static str {
        match self {
            ProjectAccess::Open => "open",
            ProjectAccess::Restricted => "restricted",
        }
    }
}

impl From<&Row> for Project {
    fn from(r: &Row) -> Self {
        Self {
            id: r.get(0),
            org_id: r.get(1),
            name: r.get(2),
            description: r.get(3),
            access: if r.get::<_, &str>(4) == "restricted" {
                ProjectAccess::Restricted
            } else {
                ProjectAccess::Open
            },
            created_at: r.get(5),
            updated_at: r.get(6),
        }
    }
}

page! {
    /// One page of projects.
    ProjectPage of Project
}

/// A new project.
#[derive(Object)]
pub struct CreateProject {
    pub name: Name,
    pub description: Option<Description>,
    /// Default `open`. A member who creates a restricted project becomes its project admin.
    pub access: Option<ProjectAccess>,
}

/// Fields to change; absent fields stay as they are.
#[derive(Object)]
pub struct UpdateProject {
    pub name: Option<Name>,
    /// `null` clears it; absent leaves it unchanged.
    pub description: MaybeUndefined<Description>,
    /// Changing it needs an org admin or a project admin.
    pub access: Option<ProjectAccess>,
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

const NO_PROJECT: &str = "No such organization or project for the caller (`not_found`).";
const VIEWER_WRITE: &str =
    "The caller's role may not write projects (viewers), decided by the policy (`forbidden`).";
const NAME_TAKEN: &str =
    "A project with this name already exists in the organization (`name_taken`).";

error_set! {
    pub ListProjectsErrors: [KEY_OR_USER, IN_ORG, PAGED] {}
    pub GetProjectErrors: [KEY_OR_USER] { 404 => NO_PROJECT }
    pub CreateProjectErrors: [KEY_OR_USER, IN_ORG, JSON_BODY, PLAN_LIMIT] { 403 => VIEWER_WRITE, 409 => NAME_TAKEN }
    pub UpdateProjectErrors: [KEY_OR_USER, JSON_BODY] {
        403 => VIEWER_WRITE,
        404 => NO_PROJECT,
        409 => NAME_TAKEN,
    }
    pub DeleteProjectErrors: [KEY_OR_USER] { 403 => VIEWER_WRITE, 404 => NO_PROJECT }
}

fn project_not_found() -> ApiError {
    ApiError::not_found("project")
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
        auth: OrgAuth,
        /// The organization's id: `user.current_org_id` from `GET /v1/auth/me`, or an `id` from `GET /v1/orgs`.
        org_id: Path<Uuid>,
        /// Page size, 1-100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<ListProjectsResponse, Problems<ListProjectsErrors>> {
        let (limit, after) = page_params(limit.0, cursor.0.as_deref())?;
        // One round trip: BEGIN, context, query and COMMIT pipelined (see Db::read_pipelined).
        // No tenant filter here: the projects_guard policies add org_id = current org.
        let rows =
            match after {
                None => state
                    .read_in_org(
                        auth.principal(),
                        org_id.0,
                        &format!(
                            "select {COLUMNS} from app.projects order by created_at, id limit $1"
                        ),
                        &[&(limit + 1)],
                    )
                    .await?,
                Some(c) => {
                    state
                        .read_in_org(
                            auth.principal(),
                            org_id.0,
                            &format!(
                            "select {COLUMNS} from app.projects where (created_at, id) > ($2, $3)
                              order by created_at, id limit $1"
                        ),
                            &[&(limit + 1), &c.created_at, &c.id],
                        )
                        .await?
                }
            };
        let items = rows.iter().map(Project::from).collect();
        Ok(ListProjectsResponse::Ok(FastJson(ProjectPage::from_rows(
            items,
            limit,
            |p| Cursor {
                created_at: p.created_at,
                id: p.id,
            },
        ))))
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
        auth: OrgAuth,
        /// The organization's id: `user.current_org_id` from `GET /v1/auth/me`, or an `id` from `GET /v1/orgs`.
        org_id: Path<Uuid>,
        body: ValidJson<CreateProject>,
    ) -> Result<CreateProjectResponse, Problems<CreateProjectErrors>> {
        let (name, description) = (body.name.as_str(), body.description.as_deref());
        let access = body.access.unwrap_or(ProjectAccess::Open).as_str();
        let project = state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                // org_id defaults from the request context; no role can set it.
                let row = tx
                    .query_one(
                        &format!("insert into app.projects (name, description, access) values ($1, $2, $3) returning {COLUMNS}"),
                        &[&name, &description, &access],
                    )
                    .await?;
                Ok(Project::from(&row))
            })
            .await?;
        Ok(CreateProjectResponse::Created(Json(project)))
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
        auth: OrgAuth,
        /// The organization's id: `user.current_org_id` from `GET /v1/auth/me`, or an `id` from `GET /v1/orgs`.
        org_id: Path<Uuid>,
        /// The project's id, as returned when it was created or listed.
        project_id: Path<Uuid>,
    ) -> Result<ProjectResponse, Problems<GetProjectErrors>> {
        let rows = state
            .read_in_org(
                auth.principal(),
                org_id.0,
                &format!("select {COLUMNS} from app.projects where id = $1"),
                &[&project_id.0],
            )
            .await?;
        let project = rows
            .first()
            .map(Project::from)
            .ok_or_else(project_not_found)?;
        Ok(ProjectResponse::Ok(Json(project)))
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
        auth: OrgAuth,
        /// The organization's id: `user.current_org_id` from `GET /v1/auth/me`, or an `id` from `GET /v1/orgs`.
        org_id: Path<Uuid>,
        /// The project's id, as returned when it was created or listed.
        project_id: Path<Uuid>,
        body: ValidJson<UpdateProject>,
    ) -> Result<ProjectResponse, Problems<UpdateProjectErrors>> {
        let name = body.name.as_deref();
        let (set_description, description) = match &body.description {
            MaybeUndefined::Undefined => (false, None),
            MaybeUndefined::Null => (true, None),
            MaybeUndefined::Value(d) => (true, Some(d.as_str())),
        };
        let access = body.access.map(ProjectAccess::as_str);
        let project = state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                let row = tx
                    .query_opt(
                        &format!(
                            "update app.projects
                                set name = coalesce($2, name),
                                    description = case when $3 then $4 else description end,
                                    access = coalesce($5, access)
                              where id = $1
                          returning {COLUMNS}"
                        ),
                        &[
                            &project_id.0,
                            &name,
                            &set_description,
                            &description,
                            &access,
                        ],
                    )
                    .await?;
                row.as_ref()
                    .map(Project::from)
                    .ok_or_else(project_not_found)
            })
            .await?;
        Ok(ProjectResponse::Ok(Json(project)))
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
        auth: OrgAuth,
        /// The organization's id: `user.current_org_id` from `GET /v1/auth/me`, or an `id` from `GET /v1/orgs`.
        org_id: Path<Uuid>,
        /// The project's id, as returned when it was created or listed.
        project_id: Path<Uuid>,
    ) -> Result<DeleteProjectResponse, Problems<DeleteProjectErrors>> {
        state
            .delete_in_org(
                auth.principal(),
                org_id.0,
                "delete from app.projects where id = $1",
                &[&project_id.0],
                project_not_found,
            )
            .await?;
        Ok(DeleteProjectResponse::NoContent)
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
            access: ProjectAccess::Open,
            created_at: at,
            updated_at: DateTime::from_timestamp(1_767_225_600, 0).unwrap(),
        };
        crate::http::json::assert_same_json(&ProjectPage {
            items: vec![project(None), project(Some("line\nbreak"))],
            next_cursor: Some("abc".into()),
        });
        crate::http::json::assert_same_json(&ProjectPage {
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
            crate::http::json::assert_same_json(&p);
        }
    }
}
