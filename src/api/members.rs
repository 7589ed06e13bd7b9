//! Members of an organization and their roles. Every rule (who may change whom, the
//! owner role, the last owner) is enforced by the security definer functions in
//! policies/functions_orgs.sql; these handlers only translate HTTP.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{
    ApiTags, State,
    orgs::{context, org_not_found},
    pagination::{Cursor, fetch_page, page_params, split_page},
    problem::ApiError,
    security::Auth,
};
use crate::db::{Access, Tx};

pub struct MembersApi;

/// A role in an organization, ranked `owner` > `admin` > `member` > `viewer`.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum Role {
    /// Everything an admin can, plus: delete the org, grant or remove the owner role,
    /// transfer ownership.
    Owner,
    /// Everything a member can, plus: manage members, invitations and org settings.
    Admin,
    /// Reads org data and creates or edits projects and other tenant data.
    Member,
    /// Reads org data.
    Viewer,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }

    /// A role as stored (`memberships_role_check` allows exactly these).
    pub fn from_db(text: &str) -> Result<Self, ApiError> {
        match text {
            "owner" => Ok(Role::Owner),
            "admin" => Ok(Role::Admin),
            "member" => Ok(Role::Member),
            "viewer" => Ok(Role::Viewer),
            other => Err(ApiError::internal(&format!(
                "unknown role in the database: {other}"
            ))),
        }
    }
}

/// A member of the organization.
#[derive(Object, Debug, Clone)]
pub struct Member {
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    /// When they joined the organization.
    pub joined_at: DateTime<Utc>,
}

const MEMBER_COLUMNS: &str = "m.user_id, u.email, u.name, m.role, m.created_at";

impl TryFrom<&Row> for Member {
    type Error = ApiError;

    fn try_from(r: &Row) -> Result<Self, ApiError> {
        Ok(Self {
            user_id: r.get(0),
            email: r.get(1),
            name: r.get(2),
            role: Role::from_db(r.get(3))?,
            joined_at: r.get(4),
        })
    }
}

#[derive(Object)]
pub struct MemberPage {
    pub items: Vec<Member>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Object)]
pub struct UpdateMember {
    /// The new role. Granting or removing `owner` needs the owner role.
    pub role: Role,
}

#[derive(Object)]
pub struct TransferOwnership {
    /// A current member of the organization, other than the caller.
    pub user_id: Uuid,
}

#[derive(ApiResponse)]
pub enum ListMembersResponse {
    /// Members, in the order they joined.
    #[oai(status = 200)]
    Ok(Json<MemberPage>),
}

#[derive(ApiResponse)]
pub enum MemberResponse {
    /// The member, as they are now.
    #[oai(status = 200)]
    Ok(Json<Member>),
}

#[derive(ApiResponse)]
pub enum RemoveMemberResponse {
    /// Removed (or left). Their access to the organization ends with their next request.
    #[oai(status = 204)]
    NoContent,
}

crate::problem_responses! {
    pub enum ListMembersError {
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
    pub enum UpdateMemberError {
        /// Malformed JSON body or unknown role.
        BadRequest = 400,
        /// Missing, invalid or expired access token, or its session has ended.
        Unauthorized = 401,
        /// The caller is below admin, or is not an owner and the change grants or removes `owner` (`forbidden`).
        Forbidden = 403,
        /// No such organization or member for the caller.
        NotFound = 404,
        /// The change would leave the organization without an owner (`last_owner`).
        Conflict = 409,
        /// Body larger than the limit.
        PayloadTooLarge = 413,
        /// Body is not JSON.
        UnsupportedMediaType = 415,
        /// The database is unavailable; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
    }
}

crate::problem_responses! {
    pub enum RemoveMemberError {
        /// Missing, invalid or expired access token, or its session has ended.
        Unauthorized = 401,
        /// Removing someone else needs admin, and removing an owner needs owner (`forbidden`).
        Forbidden = 403,
        /// No such organization or member for the caller.
        NotFound = 404,
        /// The last owner cannot leave or be removed (`last_owner`); transfer ownership first.
        Conflict = 409,
        /// The database is unavailable; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
    }
}

crate::problem_responses! {
    pub enum TransferOwnershipError {
        /// Malformed JSON body.
        BadRequest = 400,
        /// Missing, invalid or expired access token, or its session has ended.
        Unauthorized = 401,
        /// Only an owner transfers ownership (`forbidden`).
        Forbidden = 403,
        /// No such organization, or the target is not a member of it.
        NotFound = 404,
        /// Body larger than the limit.
        PayloadTooLarge = 413,
        /// Body is not JSON.
        UnsupportedMediaType = 415,
        /// The target is the caller (`validation_failed`).
        UnprocessableEntity = 422,
        /// The database is unavailable; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
    }
}

/// One member of the org in context.
async fn load_member(tx: &Tx, user_id: Uuid) -> Result<Member, ApiError> {
    let row = tx
        .query_opt(
            &format!(
                "select {MEMBER_COLUMNS} from app.memberships m join app.users u on u.id = m.user_id
                  where m.org_id = app.current_org_id() and m.user_id = $1"
            ),
            &[&user_id],
        )
        .await?
        .ok_or_else(|| ApiError::not_found("member"))?;
    Member::try_from(&row)
}

#[OpenApi(tag = "ApiTags::Members")]
impl MembersApi {
    /// List members
    ///
    /// Every member of the organization with their role, in the order they joined.
    /// Any member may list them.
    #[oai(
        path = "/v1/orgs/:org_id/members",
        method = "get",
        operation_id = "list_members"
    )]
    async fn list(
        &self,
        state: Data<&State>,
        auth: Auth,
        org_id: Path<Uuid>,
        /// Page size, 1-100 (default 20).
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<ListMembersResponse, ListMembersError> {
        let (limit, after) = page_params(limit.0, cursor.0.as_deref())?;
        let tx = state
            .db
            .begin(Some(&context(&auth, Some(org_id.0))), Access::ReadOnly)
            .await?;
        let result = async {
            if tx.org_role().is_none() {
                return Err(org_not_found().into());
            }
            let rows = fetch_page(
                &tx,
                &format!(
                    "select {MEMBER_COLUMNS} from app.memberships m join app.users u on u.id = m.user_id
                      where m.org_id = app.current_org_id()"
                ),
                "m.created_at, m.user_id",
                limit,
                after,
            )
            .await?;
            let items = rows
                .iter()
                .map(Member::try_from)
                .collect::<Result<Vec<_>, _>>()?;
            let (items, next_cursor) = split_page(items, limit, |m| Cursor {
                created_at: m.joined_at,
                id: m.user_id,
            });
            Ok(ListMembersResponse::Ok(Json(MemberPage {
                items,
                next_cursor,
            })))
        }
        .await;
        tx.finish(result).await
    }

    /// Change a member's role
    ///
    /// Admins and owners. Only an owner grants or removes the `owner` role, and the
    /// last owner cannot be demoted (409 `last_owner`).
    #[oai(
        path = "/v1/orgs/:org_id/members/:user_id",
        method = "patch",
        operation_id = "update_member_role"
    )]
    async fn update_role(
        &self,
        state: Data<&State>,
        auth: Auth,
        org_id: Path<Uuid>,
        user_id: Path<Uuid>,
        body: Json<UpdateMember>,
    ) -> Result<MemberResponse, UpdateMemberError> {
        let tx = state
            .db
            .begin(Some(&context(&auth, Some(org_id.0))), Access::ReadWrite)
            .await?;
        let result = async {
            if tx.org_role().is_none() {
                return Err(org_not_found().into());
            }
            tx.execute(
                "select app.change_member_role($1, $2)",
                &[&user_id.0, &body.role.as_str()],
            )
            .await?;
            Ok(MemberResponse::Ok(Json(load_member(&tx, user_id.0).await?)))
        }
        .await;
        tx.finish(result).await
    }

    /// Remove a member, or leave
    ///
    /// Removing someone else needs admin (an owner: owner). Anyone may remove
    /// themselves (leave), except the last owner (409 `last_owner`).
    #[oai(
        path = "/v1/orgs/:org_id/members/:user_id",
        method = "delete",
        operation_id = "remove_member"
    )]
    async fn remove(
        &self,
        state: Data<&State>,
        auth: Auth,
        org_id: Path<Uuid>,
        user_id: Path<Uuid>,
    ) -> Result<RemoveMemberResponse, RemoveMemberError> {
        let tx = state
            .db
            .begin(Some(&context(&auth, Some(org_id.0))), Access::ReadWrite)
            .await?;
        let result = async {
            if tx.org_role().is_none() {
                return Err(org_not_found().into());
            }
            tx.execute("select app.remove_member($1)", &[&user_id.0])
                .await?;
            Ok(RemoveMemberResponse::NoContent)
        }
        .await;
        tx.finish(result).await
    }

    /// Transfer ownership
    ///
    /// Owners only. The member named becomes an owner and the caller becomes an admin.
    #[oai(
        path = "/v1/orgs/:org_id/transfer-ownership",
        method = "post",
        operation_id = "transfer_ownership"
    )]
    async fn transfer(
        &self,
        state: Data<&State>,
        auth: Auth,
        org_id: Path<Uuid>,
        body: Json<TransferOwnership>,
    ) -> Result<MemberResponse, TransferOwnershipError> {
        let tx = state
            .db
            .begin(Some(&context(&auth, Some(org_id.0))), Access::ReadWrite)
            .await?;
        let result = async {
            if tx.org_role().is_none() {
                return Err(org_not_found().into());
            }
            tx.execute("select app.transfer_ownership($1)", &[&body.user_id])
                .await?;
            Ok(MemberResponse::Ok(Json(
                load_member(&tx, body.user_id).await?,
            )))
        }
        .await;
        tx.finish(result).await
    }
}
