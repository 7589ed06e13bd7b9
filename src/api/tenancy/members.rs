//! Members of an organization and their roles. Every rule (who may change whom, the
//! owner role, the last owner) is enforced by the security definer functions in
//! policies/functions_orgs.sql, which act for the caller of the verified context.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::{
    api::ApiTags,
    db::{Access, Tx},
    domain::Role,
    error_set,
    http::{
        errors::{AUTHENTICATED, IN_ORG, JSON_BODY, KEY_OR_USER, PAGED, Problems},
        pagination::{Cursor, fetch_page, page_params},
        problem::ApiError,
        security::{BearerAuth, OrgAuth},
        validate::ValidJson,
    },
    page,
    state::State,
};

pub struct MembersApi;

/// A member of the organization.
#[derive(Object, serde::Serialize, Debug, Clone)]
pub struct Member {
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    pub role: Role,
    /// When they joined the organization.
    pub joined_at: DateTime<Utc>,
}

/// The members of the org in context.
const MEMBERS: &str = "select m.user_id, u.email, u.name, m.role::text, m.created_at
       from app.memberships m join app.users u on u.id = m.user_id
      where m.org_id = app.current_org_id()";

impl From<&Row> for Member {
    fn from(r: &Row) -> Self {
        Self {
            user_id: r.get(0),
            email: r.get(1),
            name: r.get(2),
            role: r.get(3),
            joined_at: r.get(4),
        }
    }
}

page! {
    /// One page of members.
    MemberPage of Member
}

#[derive(Object)]
pub struct UpdateMember {
    /// Granting or removing `owner` needs the owner role.
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

const NO_MEMBER: &str = "No such organization or member for the caller (`not_found`).";

error_set! {
    pub ListMembersErrors: [KEY_OR_USER, IN_ORG, PAGED] {}
    pub UpdateMemberErrors: [AUTHENTICATED, JSON_BODY] {
        403 => "The caller is below admin, or is not an owner and the change grants or removes `owner` (`forbidden`).",
        404 => NO_MEMBER,
        409 => "The change would leave the organization without an owner (`last_owner`).",
    }
    pub RemoveMemberErrors: [AUTHENTICATED] {
        403 => "Removing someone else needs admin, and removing an owner needs owner (`forbidden`).",
        404 => NO_MEMBER,
        409 => "The last owner cannot leave or be removed (`last_owner`); transfer ownership first.",
    }
    pub TransferOwnershipErrors: [AUTHENTICATED, IN_ORG, JSON_BODY] {
        403 => "Only an owner transfers ownership (`forbidden`).",
        409 => "The target is the caller (`transfer_to_self`), or not a member of the organization (`not_a_member`).",
    }
}

/// One member of the org in context.
async fn load_member(tx: &Tx, user_id: Uuid) -> Result<Member, ApiError> {
    tx.query_opt(&format!("{MEMBERS} and m.user_id = $1"), &[&user_id])
        .await?
        .as_ref()
        .map(Member::from)
        .ok_or_else(|| ApiError::not_found("member"))
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
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// Page size, 1-100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<ListMembersResponse, Problems<ListMembersErrors>> {
        let (limit, after) = page_params(limit.0, cursor.0.as_deref())?;
        let page = state
            .in_org(auth.principal(), org_id.0, Access::ReadOnly, async |tx| {
                let rows = fetch_page(tx, MEMBERS, "m.created_at, m.user_id", limit, after).await?;
                let items = rows.iter().map(Member::from).collect();
                Ok(MemberPage::from_rows(items, limit, |m| Cursor {
                    created_at: m.joined_at,
                    id: m.user_id,
                }))
            })
            .await?;
        Ok(ListMembersResponse::Ok(Json(page)))
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
        auth: BearerAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The member's user id.
        user_id: Path<Uuid>,
        body: ValidJson<UpdateMember>,
    ) -> Result<MemberResponse, Problems<UpdateMemberErrors>> {
        let member = state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                tx.execute(
                    "select app.change_member_role($1, $2)::text",
                    &[&user_id.0, &body.role],
                )
                .await?;
                load_member(tx, user_id.0).await
            })
            .await?;
        Ok(MemberResponse::Ok(Json(member)))
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
        auth: BearerAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The member's user id (your own to leave).
        user_id: Path<Uuid>,
    ) -> Result<RemoveMemberResponse, Problems<RemoveMemberErrors>> {
        state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                tx.execute("select app.remove_member($1)", &[&user_id.0])
                    .await?;
                Ok(())
            })
            .await?;
        Ok(RemoveMemberResponse::NoContent)
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
        auth: BearerAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        body: ValidJson<TransferOwnership>,
    ) -> Result<MemberResponse, Problems<TransferOwnershipErrors>> {
        let member = state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                tx.execute("select app.transfer_ownership($1)", &[&body.user_id])
                    .await?;
                load_member(tx, body.user_id).await
            })
            .await?;
        Ok(MemberResponse::Ok(Json(member)))
    }
}
