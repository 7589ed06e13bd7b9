//! Project members: who sees a restricted project (and its conversations and documents)
//! besides the organization's admins and owners. policies/project_members.sql decides who
//! may manage them (org admins, project admins); these handlers only run the SQL.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{ApiResponse, Enum, Object, OpenApi, param::Path, payload::Json};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::{
    api::ApiTags,
    db::Access,
    error_set,
    http::{
        errors::{JSON_BODY, KEY_OR_USER, Problems},
        problem::ApiError,
        security::OrgAuth,
        validate::ValidJson,
    },
    state::State,
};

pub struct ProjectMembersApi;

/// A project member's role: admins manage the project's members and access, editors
/// write its data, viewers read it.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum ProjectRole {
    Admin,
    Editor,
    Viewer,
}

impl ProjectRole {
    fn as_str(self) -> &'static str {
        match self {
            ProjectRole::Admin => "admin",
            ProjectRole::Editor => "editor",
            ProjectRole::Viewer => "viewer",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "admin" => ProjectRole::Admin,
            "editor" => ProjectRole::Editor,
            _ => ProjectRole::Viewer,
        }
    }
}

/// A member of a project.
#[derive(Object, Debug)]
pub struct ProjectMember {
    pub project_id: Uuid,
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    pub role: ProjectRole,
    pub created_at: DateTime<Utc>,
}

/// A project's members, in the order they were added.
#[derive(Object, Debug)]
pub struct ProjectMemberList {
    pub items: Vec<ProjectMember>,
}

/// The role to give.
#[derive(Object)]
pub struct SetProjectMember {
    pub role: ProjectRole,
}

#[derive(ApiResponse)]
pub enum ProjectMembersResponse {
    /// The project's members.
    #[oai(status = 200)]
    Ok(Json<ProjectMemberList>),
}

#[derive(ApiResponse)]
pub enum ProjectMemberResponse {
    /// The member, added or with the new role.
    #[oai(status = 200)]
    Ok(Json<ProjectMember>),
}

#[derive(ApiResponse)]
pub enum RemoveProjectMemberResponse {
    /// Removed.
    #[oai(status = 204)]
    NoContent,
}

const NO_PROJECT: &str = "No such organization or project for the caller (a restricted project \
     it is not in is not found either) (`not_found`).";
const NO_MEMBER: &str = "No such project, or the user is not a member of the organization \
     (or of the project, when removing) (`not_found`).";
const NOT_ADMIN: &str = "Managing a project's members needs the org admin role or the project \
     admin role, as a signed-in user (`forbidden`, `api_key_not_allowed`).";

error_set! {
    pub ListProjectMembersErrors: [KEY_OR_USER] { 404 => NO_PROJECT }
    pub SetProjectMemberErrors: [KEY_OR_USER, JSON_BODY] { 403 => NOT_ADMIN, 404 => NO_MEMBER }
    pub RemoveProjectMemberErrors: [KEY_OR_USER] { 403 => NOT_ADMIN, 404 => NO_MEMBER }
}

const SELECT: &str = "select pm.project_id, pm.user_id, u.email, u.name, pm.role, pm.created_at
      from app.project_members pm left join app.users u on u.id = pm.user_id";

impl From<&Row> for ProjectMember {
    fn from(r: &Row) -> Self {
        Self {
            project_id: r.get(0),
            user_id: r.get(1),
            email: r.get(2),
            name: r.get(3),
            role: ProjectRole::parse(r.get(4)),
            created_at: r.get(5),
        }
    }
}

fn no_project() -> ApiError {
    ApiError::not_found("project")
}

fn no_member() -> ApiError {
    ApiError::not_found("member")
}

#[OpenApi(tag = "ApiTags::Projects")]
impl ProjectMembersApi {
    /// List a project's members
    ///
    /// Whoever sees the project. An open project may have members too; they matter once
    /// it is restricted.
    #[oai(
        path = "/v1/orgs/:org_id/projects/:project_id/members",
        method = "get",
        operation_id = "list_project_members"
    )]
    async fn list(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The project's id.
        project_id: Path<Uuid>,
    ) -> Result<ProjectMembersResponse, Problems<ListProjectMembersErrors>> {
        let items = state
            .in_org(auth.principal(), org_id.0, Access::ReadOnly, async |tx| {
                tx.query_opt("select 1 from app.projects where id = $1", &[&project_id.0])
                    .await?
                    .ok_or_else(no_project)?;
                let rows = tx
                    .query(
                        &format!(
                            "{SELECT} where pm.project_id = $1 order by pm.created_at, pm.user_id"
                        ),
                        &[&project_id.0],
                    )
                    .await?;
                Ok(rows.iter().map(ProjectMember::from).collect())
            })
            .await?;
        Ok(ProjectMembersResponse::Ok(Json(ProjectMemberList {
            items,
        })))
    }

    /// Add a project member or change their role
    ///
    /// The user must be a member of the organization. Org admins and project admins.
    #[oai(
        path = "/v1/orgs/:org_id/projects/:project_id/members/:user_id",
        method = "put",
        operation_id = "set_project_member"
    )]
    async fn set(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The project's id.
        project_id: Path<Uuid>,
        /// The user's id (a member of the organization).
        user_id: Path<Uuid>,
        body: ValidJson<SetProjectMember>,
    ) -> Result<ProjectMemberResponse, Problems<SetProjectMemberErrors>> {
        let role = body.role.as_str();
        let member = state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                tx.query_opt("select 1 from app.projects where id = $1", &[&project_id.0])
                    .await?
                    .ok_or_else(no_project)?;
                // The org's own membership: a caller also sees its memberships elsewhere.
                tx.query_opt(
                    "select 1 from app.memberships where org_id = $1 and user_id = $2",
                    &[&tx.org_id(), &user_id.0],
                )
                .await?
                .ok_or_else(no_member)?;
                tx.execute(
                    "insert into app.project_members (project_id, user_id, role) values ($1, $2, $3)
                     on conflict (project_id, user_id) do update set role = excluded.role",
                    &[&project_id.0, &user_id.0, &role],
                )
                .await?;
                let row = tx
                    .query_one(
                        &format!("{SELECT} where pm.project_id = $1 and pm.user_id = $2"),
                        &[&project_id.0, &user_id.0],
                    )
                    .await?;
                Ok(ProjectMember::from(&row))
            })
            .await?;
        Ok(ProjectMemberResponse::Ok(Json(member)))
    }

    /// Remove a project member
    ///
    /// Org admins and project admins.
    #[oai(
        path = "/v1/orgs/:org_id/projects/:project_id/members/:user_id",
        method = "delete",
        operation_id = "remove_project_member"
    )]
    async fn remove(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The project's id.
        project_id: Path<Uuid>,
        /// The user's id.
        user_id: Path<Uuid>,
    ) -> Result<RemoveProjectMemberResponse, Problems<RemoveProjectMemberErrors>> {
        state
            .delete_in_org(
                auth.principal(),
                org_id.0,
                "delete from app.project_members where project_id = $1 and user_id = $2",
                &[&project_id.0, &user_id.0],
                no_member,
            )
            .await?;
        Ok(RemoveProjectMemberResponse::NoContent)
    }
}
