//! Invitations: admins invite by email; the invitee looks the invitation up, then
//! accepts or declines it with the emailed token. The token (256 random bits) exists
//! only in the email; the database keeps its SHA-256. Every rule is enforced by the
//! security definer functions in policies/functions_orgs.sql, which also queue the
//! email to the invited address in the same transaction.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{Organization, load_org};
use crate::{
    api::ApiTags,
    crypto::tokens,
    db::{Access, Tx},
    domain::Role,
    email::{self, Message},
    error_set,
    http::{
        errors::{AUTHENTICATED, BY_CLIENT_IP, IN_ORG, JSON_BODY, PAGED, PLAN_LIMIT, Problems},
        kernel::OrgTx,
        pagination::{Cursor, fetch_page, page_params},
        problem::ApiError,
        security::BearerAuth,
        validate::{Email, Token, ValidJson},
    },
    page,
    state::State,
};

pub struct InvitationsApi;

/// A pending invitation, as its organization's admins see it. The token is never shown.
#[derive(Object, serde::Serialize, Debug, Clone)]
pub struct Invitation {
    pub id: Uuid,
    pub org_id: Uuid,
    /// The invited address (lowercased). Only an account with this email can accept.
    pub email: String,
    /// The role the invitee gets on accepting.
    pub role: Role,
    /// Who invited; null if that account is gone.
    pub invited_by: Option<Uuid>,
    /// When it stops working (unless resent).
    pub expires_at: DateTime<Utc>,
    /// True once `expires_at` has passed; resend it to give it a new token and validity.
    pub expired: bool,
    pub created_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "id, org_id, email, role::text, invited_by, expires_at, expires_at <= now(), created_at";

impl From<&Row> for Invitation {
    fn from(r: &Row) -> Self {
        Self {
            id: r.get(0),
            org_id: r.get(1),
            email: r.get(2),
            role: r.get(3),
            invited_by: r.get(4),
            expires_at: r.get(5),
            expired: r.get(6),
            created_at: r.get(7),
        }
    }
}

page! {
    /// One page of pending invitations.
    InvitationPage of Invitation
}

#[derive(Object)]
pub struct CreateInvitation {
    /// Who to invite.
    pub email: Email,
    /// Their role once they accept. `owner` only when the caller is an owner.
    pub role: Role,
}

#[derive(Object)]
pub struct InvitationToken {
    /// The token from the invitation email's link.
    pub token: Token,
}

/// What an invitee sees before accepting.
#[derive(Object, Debug, Clone)]
pub struct InvitationPreview {
    pub org_id: Uuid,
    pub org_name: String,
    /// The inviter's name; null if that account is gone.
    pub inviter_name: Option<String>,
    /// Only an account with this email can accept.
    pub email: String,
    pub role: Role,
    pub expires_at: DateTime<Utc>,
}

#[derive(ApiResponse)]
pub enum CreateInvitationResponse {
    /// Invited; the token was emailed to the invitee.
    #[oai(status = 201)]
    Created(Json<Invitation>),
}

#[derive(ApiResponse)]
pub enum ListInvitationsResponse {
    /// Pending invitations, oldest first.
    #[oai(status = 200)]
    Ok(Json<InvitationPage>),
}

#[derive(ApiResponse)]
pub enum ResendInvitationResponse {
    /// A new token was emailed; the previous one no longer works.
    #[oai(status = 200)]
    Ok(Json<Invitation>),
}

#[derive(ApiResponse)]
pub enum NoContentResponse {
    /// Done; the token no longer works.
    #[oai(status = 204)]
    NoContent,
}

#[derive(ApiResponse)]
pub enum LookupInvitationResponse {
    /// The invitation.
    #[oai(status = 200)]
    Ok(Json<InvitationPreview>),
}

#[derive(ApiResponse)]
pub enum AcceptInvitationResponse {
    /// Joined: the organization, now the caller's current organization.
    #[oai(status = 200)]
    Ok(Json<Organization>),
}

const GONE: &str = "The invitation expired (`invitation_expired`), was revoked (`invitation_revoked`) \
     or was already accepted or declined (`invitation_used`).";
const UNKNOWN_TOKEN: &str =
    "No invitation has this token (`not_found`); a resent invitation's old token is unknown.";
const NOT_ADDRESSED: &str =
    "The invitation was sent to another email than the caller's (`invitation_email_mismatch`).";
const MANAGE_FORBIDDEN: &str = "The caller is below admin, or the invitation is to the owner role \
     and the caller is not an owner (`forbidden`).";

error_set! {
    pub CreateInvitationErrors: [AUTHENTICATED, IN_ORG, JSON_BODY, PLAN_LIMIT] {
        403 => "The caller is below admin, or invites an owner without being one (`forbidden`).",
        409 => "Already a member (`already_member`), or already invited (`invitation_pending`: \
                resend it instead).",
    }
    pub ListInvitationsErrors: [AUTHENTICATED, IN_ORG, PAGED] {
        403 => "The caller is below admin (`forbidden`).",
    }
    pub ManageInvitationErrors: [AUTHENTICATED] {
        403 => MANAGE_FORBIDDEN,
        404 => "No such organization, or no pending invitation with this id in it (`not_found`).",
    }
    pub LookupInvitationErrors: [BY_CLIENT_IP] {
        400 => "The `token` parameter is missing or malformed (`invalid_parameter`).",
        404 => UNKNOWN_TOKEN,
        410 => GONE,
    }
    pub AcceptInvitationErrors: [AUTHENTICATED, JSON_BODY, PLAN_LIMIT] {
        403 => NOT_ADDRESSED,
        404 => UNKNOWN_TOKEN,
        409 => "The caller is already a member of the organization (`already_member`).",
        410 => GONE,
    }
    pub DeclineInvitationErrors: [AUTHENTICATED, JSON_BODY] {
        403 => NOT_ADDRESSED,
        404 => UNKNOWN_TOKEN,
        410 => GONE,
    }
}

async fn load_invitation(tx: &Tx, id: Uuid) -> Result<Invitation, ApiError> {
    tx.query_opt(
        &format!("select {COLUMNS} from app.invitations where id = $1 and status = 'pending'"),
        &[&id],
    )
    .await?
    .as_ref()
    .map(Invitation::from)
    .ok_or_else(|| ApiError::not_found("pending invitation"))
}

/// The invitation email, from the caller (the inviter) to `email`, carrying `token`.
async fn invitation_email(
    tx: &OrgTx,
    state: &State,
    email: &str,
    role: Role,
    token: &str,
) -> Result<Message, ApiError> {
    let row = tx
        .query_one(
            "select o.name, u.name, u.email from app.orgs o, app.users u
              where o.id = app.current_org_id() and u.id = app.current_user_id()",
            &[],
        )
        .await?;
    let (org, inviter, inviter_email): (String, String, String) =
        (row.get(0), row.get(1), row.get(2));
    Ok(email::invitation(
        &state.auth.app_url,
        &email::Invitation {
            inviter: &inviter,
            inviter_email: &inviter_email,
            org: &org,
            role: role.as_str(),
            email,
            token,
            ttl: state.auth.invitation_ttl,
        },
    ))
}

#[OpenApi(tag = "ApiTags::Invitations")]
impl InvitationsApi {
    /// Invite someone
    ///
    /// Admins and owners; inviting as `owner` needs the owner role. Emails a token that
    /// works once, until the invitation expires, and only for the account with the
    /// invited email.
    #[oai(
        path = "/v1/orgs/:org_id/invitations",
        method = "post",
        operation_id = "create_invitation"
    )]
    async fn create(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        body: ValidJson<CreateInvitation>,
    ) -> Result<CreateInvitationResponse, Problems<CreateInvitationErrors>> {
        let email = body.email.normalized();
        let role = body.role;
        let invitation = state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                let token = tokens::generate();
                let message = invitation_email(tx, &state, &email, role, &token).await?;
                let id: Uuid = tx
                    .query_one(
                        "select app.create_invitation($1, $2, $3, make_interval(secs => $4), $5, $6)",
                        &[
                            &email,
                            &role,
                            &tokens::hash(&token),
                            &state.auth.invitation_ttl.as_secs_f64(),
                            &message.subject,
                            &state.outbox.seal(&message.body),
                        ],
                    )
                    .await?
                    .get(0);
                load_invitation(tx, id).await
            })
            .await?;
        Ok(CreateInvitationResponse::Created(Json(invitation)))
    }

    /// List pending invitations
    ///
    /// Admins and owners. Invitations not yet accepted, declined or revoked, oldest
    /// first; expired ones are marked `expired` (resend them to revive them).
    #[oai(
        path = "/v1/orgs/:org_id/invitations",
        method = "get",
        operation_id = "list_invitations"
    )]
    async fn list(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// Page size, 1-100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<ListInvitationsResponse, Problems<ListInvitationsErrors>> {
        let (limit, after) = page_params(limit.0, cursor.0.as_deref())?;
        let page = state
            .in_org(auth.principal(), org_id.0, Access::ReadOnly, async |tx| {
                // The select policy shows members and viewers no rows; say so with a 403.
                tx.execute("select app.require_role('admin')", &[]).await?;
                let rows = fetch_page(
                    tx,
                    &format!("select {COLUMNS} from app.invitations where status = 'pending'"),
                    "created_at, id",
                    limit,
                    after,
                )
                .await?;
                let items = rows.iter().map(Invitation::from).collect();
                Ok(InvitationPage::from_rows(items, limit, |i| Cursor {
                    created_at: i.created_at,
                    id: i.id,
                }))
            })
            .await?;
        Ok(ListInvitationsResponse::Ok(Json(page)))
    }

    /// Revoke an invitation
    ///
    /// Admins and owners (an invitation to the owner role: owners). Its token stops
    /// working at once.
    #[oai(
        path = "/v1/orgs/:org_id/invitations/:invitation_id",
        method = "delete",
        operation_id = "revoke_invitation"
    )]
    async fn revoke(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// A pending invitation's id.
        invitation_id: Path<Uuid>,
    ) -> Result<NoContentResponse, Problems<ManageInvitationErrors>> {
        state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                tx.execute("select app.revoke_invitation($1)", &[&invitation_id.0])
                    .await?;
                Ok(())
            })
            .await?;
        Ok(NoContentResponse::NoContent)
    }

    /// Resend an invitation
    ///
    /// Admins and owners (an invitation to the owner role: owners). Emails a new token
    /// and restarts its validity; the previous token stops working.
    #[oai(
        path = "/v1/orgs/:org_id/invitations/:invitation_id/resend",
        method = "post",
        operation_id = "resend_invitation"
    )]
    async fn resend(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// A pending invitation's id.
        invitation_id: Path<Uuid>,
    ) -> Result<ResendInvitationResponse, Problems<ManageInvitationErrors>> {
        let invitation = state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                // Members see no invitations: refuse them as app.resend_invitation() would.
                tx.execute("select app.require_role('admin')", &[]).await?;
                let pending = load_invitation(tx, invitation_id.0).await?;
                let token = tokens::generate();
                let message =
                    invitation_email(tx, &state, &pending.email, pending.role, &token).await?;
                tx.execute(
                    "select app.resend_invitation($1, $2, make_interval(secs => $3), $4, $5)",
                    &[
                        &invitation_id.0,
                        &tokens::hash(&token),
                        &state.auth.invitation_ttl.as_secs_f64(),
                        &message.subject,
                        &state.outbox.seal(&message.body),
                    ],
                )
                .await?;
                load_invitation(tx, invitation_id.0).await
            })
            .await?;
        Ok(ResendInvitationResponse::Ok(Json(invitation)))
    }

    /// Look up an invitation by token
    ///
    /// No sign-in needed (the token is the proof): shows the invitee the organization,
    /// the inviter and the role before they sign in or register and accept.
    #[oai(
        path = "/v1/invitations/lookup",
        method = "get",
        operation_id = "lookup_invitation"
    )]
    async fn lookup(
        &self,
        state: Data<&State>,
        /// The token from the invitation email's link. (The pattern is
        /// `http::validate::TOKEN_PATTERN`; a test holds them equal.)
        #[oai(validator(min_length = 1, max_length = 256, pattern = "^[A-Za-z0-9_-]+$"))]
        token: Query<String>,
    ) -> Result<LookupInvitationResponse, Problems<LookupInvitationErrors>> {
        let token_hash = tokens::hash(&token.0);
        let preview = state
            .as_credentials(Access::ReadOnly, async |tx| {
                let row = tx
                    .query_one(
                        "select org_id, org_name, inviter_name, email, role::text, expires_at
                           from app.invitation_lookup($1)",
                        &[&token_hash],
                    )
                    .await?;
                Ok(InvitationPreview {
                    org_id: row.get(0),
                    org_name: row.get(1),
                    inviter_name: row.get(2),
                    email: row.get(3),
                    role: row.get(4),
                    expires_at: row.get(5),
                })
            })
            .await?;
        Ok(LookupInvitationResponse::Ok(Json(preview)))
    }

    /// Accept an invitation
    ///
    /// The signed-in user's email must be the invited one (else 403
    /// `invitation_email_mismatch`), so a forwarded link is useless to anyone else. Works
    /// for accounts registered after the invitation was sent. The organization becomes
    /// the caller's current organization. The token then stops working.
    #[oai(
        path = "/v1/invitations/accept",
        method = "post",
        operation_id = "accept_invitation"
    )]
    async fn accept(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        body: ValidJson<InvitationToken>,
    ) -> Result<AcceptInvitationResponse, Problems<AcceptInvitationErrors>> {
        let token_hash = tokens::hash(&body.token);
        let org = state
            .as_user(auth.principal(), Access::ReadWrite, async |tx| {
                let org_id: Uuid = tx
                    .query_one("select app.accept_invitation($1)", &[&token_hash])
                    .await?
                    .get(0);
                load_org(tx, org_id).await
            })
            .await?;
        Ok(AcceptInvitationResponse::Ok(Json(org)))
    }

    /// Decline an invitation
    ///
    /// Only the invited user (signed in with the invited email) can decline. The token
    /// then stops working.
    #[oai(
        path = "/v1/invitations/decline",
        method = "post",
        operation_id = "decline_invitation"
    )]
    async fn decline(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        body: ValidJson<InvitationToken>,
    ) -> Result<NoContentResponse, Problems<DeclineInvitationErrors>> {
        let token_hash = tokens::hash(&body.token);
        state
            .as_user(auth.principal(), Access::ReadWrite, async |tx| {
                tx.execute("select app.decline_invitation($1)", &[&token_hash])
                    .await?;
                Ok(())
            })
            .await?;
        Ok(NoContentResponse::NoContent)
    }
}
