//! Invitations: admins invite by email; the invitee looks the invitation up, then
//! accepts or declines it with the emailed token. The token (256 random bits) exists
//! only in the email; the database keeps its SHA-256. Every rule is enforced by the
//! security definer functions in policies/functions_orgs.sql.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{
    ApiTags, State,
    members::Role,
    orgs::{ORG_COLUMNS, Organization, context, org_not_found},
    pagination::{Cursor, fetch_page, page_params, split_page},
    problem::ApiError,
    security::Auth,
    validate::Validator,
};
use crate::{
    auth::tokens,
    db::{Access, Tx},
    email::{self, OutgoingEmail},
};

pub struct InvitationsApi;

/// Where the invitee's client shows the invitation; the emailed link is this path with
/// `?token=`.
pub const ACCEPT_LINK_PATH: &str = "/invitations/accept";

/// A pending invitation, as its organization's admins see it. The token is never shown.
#[derive(Object, Debug, Clone)]
pub struct Invitation {
    pub id: Uuid,
    pub org_id: Uuid,
    /// The invited address (normalized: trimmed, lowercased). Only an account with this
    /// email can accept.
    pub email: String,
    /// The role the invitee gets on accepting.
    pub role: Role,
    /// Who invited; null if that account is gone.
    pub invited_by: Option<Uuid>,
    /// 7 days after it was sent (or last resent).
    pub expires_at: DateTime<Utc>,
    /// True once `expires_at` has passed; resend it to give it a new token and 7 days.
    pub expired: bool,
    pub created_at: DateTime<Utc>,
}

const INVITATION_COLUMNS: &str =
    "id, org_id, email, role, invited_by, expires_at, expires_at <= now(), created_at";

impl TryFrom<&Row> for Invitation {
    type Error = ApiError;

    fn try_from(r: &Row) -> Result<Self, ApiError> {
        Ok(Self {
            id: r.get(0),
            org_id: r.get(1),
            email: r.get(2),
            role: Role::from_db(r.get(3))?,
            invited_by: r.get(4),
            expires_at: r.get(5),
            expired: r.get(6),
            created_at: r.get(7),
        })
    }
}

#[derive(Object)]
pub struct InvitationPage {
    pub items: Vec<Invitation>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Object)]
pub struct CreateInvitation {
    /// Who to invite. Normalized: surrounding spaces trimmed, lowercased.
    pub email: String,
    /// Their role once they accept. `owner` only when the caller is an owner.
    pub role: Role,
}

#[derive(Object)]
pub struct InvitationToken {
    /// The token from the invitation email's link.
    #[oai(write_only)]
    pub token: String,
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
pub enum RevokeInvitationResponse {
    /// Revoked; its token no longer works.
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

#[derive(ApiResponse)]
pub enum DeclineInvitationResponse {
    /// Declined; the token no longer works.
    #[oai(status = 204)]
    NoContent,
}

crate::problem_responses! {
    pub enum CreateInvitationError {
        /// Malformed JSON body or unknown role.
        BadRequest = 400,
        /// Missing, invalid or expired access token, or its session has ended.
        Unauthorized = 401,
        /// The caller is below admin, or invites an owner without being one (`forbidden`).
        Forbidden = 403,
        /// No such organization, or the caller is not a member of it.
        NotFound = 404,
        /// Already a member (`already_member`), already invited (`invitation_pending`: resend
        /// it instead), or no seat left (`seat_limit_reached`).
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
    pub enum ListInvitationsError {
        /// Invalid `limit` or `cursor`.
        BadRequest = 400,
        /// Missing, invalid or expired access token, or its session has ended.
        Unauthorized = 401,
        /// The caller is below admin (`forbidden`).
        Forbidden = 403,
        /// No such organization, or the caller is not a member of it.
        NotFound = 404,
        /// The database is unavailable; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
    }
}

crate::problem_responses! {
    pub enum ManageInvitationError {
        /// Missing, invalid or expired access token, or its session has ended.
        Unauthorized = 401,
        /// The caller is below admin, or the invitation is to the owner role and the caller
        /// is not an owner (`forbidden`).
        Forbidden = 403,
        /// No such organization, or no pending invitation with this id in it.
        NotFound = 404,
        /// The database is unavailable; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
    }
}

crate::problem_responses! {
    pub enum LookupInvitationError {
        /// Missing `token`.
        BadRequest = 400,
        /// No invitation has this token (`not_found`); a resent invitation's old token is unknown.
        NotFound = 404,
        /// The invitation expired (`invitation_expired`), was revoked (`invitation_revoked`) or
        /// was already accepted or declined (`invitation_used`).
        Gone = 410,
        /// The database is unavailable; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
    }
}

crate::problem_responses! {
    pub enum AcceptInvitationError {
        /// Malformed JSON body.
        BadRequest = 400,
        /// Missing, invalid or expired access token, or its session has ended.
        Unauthorized = 401,
        /// The invitation was sent to another email than the caller's (`invitation_email_mismatch`).
        Forbidden = 403,
        /// No invitation has this token (`not_found`).
        NotFound = 404,
        /// The caller is already a member of the organization (`already_member`).
        Conflict = 409,
        /// The invitation expired (`invitation_expired`), was revoked (`invitation_revoked`) or
        /// was already accepted or declined (`invitation_used`).
        Gone = 410,
        /// Body larger than the limit.
        PayloadTooLarge = 413,
        /// Body is not JSON.
        UnsupportedMediaType = 415,
        /// The database is unavailable; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
    }
}

crate::problem_responses! {
    pub enum DeclineInvitationError {
        /// Malformed JSON body.
        BadRequest = 400,
        /// Missing, invalid or expired access token, or its session has ended.
        Unauthorized = 401,
        /// The invitation was sent to another email than the caller's (`invitation_email_mismatch`).
        Forbidden = 403,
        /// No invitation has this token (`not_found`).
        NotFound = 404,
        /// The invitation expired (`invitation_expired`), was revoked (`invitation_revoked`) or
        /// was already accepted or declined (`invitation_used`).
        Gone = 410,
        /// Body larger than the limit.
        PayloadTooLarge = 413,
        /// Body is not JSON.
        UnsupportedMediaType = 415,
        /// The database is unavailable; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
    }
}

async fn load_invitation(tx: &Tx, id: Uuid) -> Result<Invitation, ApiError> {
    let row = tx
        .query_opt(
            &format!("select {INVITATION_COLUMNS} from app.invitations where id = $1"),
            &[&id],
        )
        .await?
        .ok_or_else(|| ApiError::not_found("invitation"))?;
    Invitation::try_from(&row)
}

/// One line, no control characters: safe in a subject header.
fn one_line(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// Queues the invitation email, carrying `token`, in the request transaction.
async fn send_invitation_email(
    tx: &Tx,
    state: &State,
    invitation: &Invitation,
    token: &str,
) -> Result<(), ApiError> {
    let row = tx
        .query_one(
            "select o.name, u.name, u.email from app.orgs o, app.users u
              where o.id = $1 and u.id = app.current_user_id()",
            &[&invitation.org_id],
        )
        .await?;
    let (org, inviter, inviter_email): (String, String, String) =
        (row.get(0), row.get(1), row.get(2));
    let body = format!(
        "{inviter} ({inviter_email}) invited you to join {org} on Palisade as {role}.\n\n\
         Accept the invitation: {app_url}{ACCEPT_LINK_PATH}?token={token}\n\n\
         The link works once, for 7 days, and only for the account registered with \
         {email}. If you did not expect this invitation, ignore this email or decline it.\n",
        role = invitation.role.as_str(),
        email = invitation.email,
        app_url = state.auth.app_url,
    );
    email::enqueue(
        tx,
        &state.sealer,
        &OutgoingEmail {
            to: invitation.email.clone(),
            user_id: None,
            org_id: Some(invitation.org_id),
            template: "invitation",
            subject: one_line(&format!("{inviter} invited you to join {org} on Palisade")),
            body,
        },
    )
    .await?;
    Ok(())
}

#[OpenApi(tag = "ApiTags::Invitations")]
impl InvitationsApi {
    /// Invite someone
    ///
    /// Admins and owners; inviting as `owner` needs the owner role. Emails a token that
    /// is valid for 7 days, works once, and only for the account with the invited email.
    #[oai(
        path = "/v1/orgs/:org_id/invitations",
        method = "post",
        operation_id = "create_invitation"
    )]
    async fn create(
        &self,
        state: Data<&State>,
        auth: Auth,
        org_id: Path<Uuid>,
        body: Json<CreateInvitation>,
    ) -> Result<CreateInvitationResponse, CreateInvitationError> {
        let mut v = Validator::new();
        let email = v.email("email", &body.email);
        v.finish()?;
        let tx = state
            .db
            .begin(Some(&context(&auth, Some(org_id.0))), Access::ReadWrite)
            .await?;
        let result = async {
            if tx.org_role().is_none() {
                return Err(org_not_found().into());
            }
            let token = tokens::generate();
            let id: Uuid = tx
                .query_one(
                    "select app.create_invitation($1, $2, $3)",
                    &[&email, &body.role.as_str(), &tokens::hash(&token)],
                )
                .await?
                .get(0);
            let invitation = load_invitation(&tx, id).await?;
            send_invitation_email(&tx, state.0, &invitation, &token).await?;
            Ok(CreateInvitationResponse::Created(Json(invitation)))
        }
        .await;
        tx.finish(result).await
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
        auth: Auth,
        org_id: Path<Uuid>,
        /// Page size, 1-100 (default 20).
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<ListInvitationsResponse, ListInvitationsError> {
        let (limit, after) = page_params(limit.0, cursor.0.as_deref())?;
        let tx = state
            .db
            .begin(Some(&context(&auth, Some(org_id.0))), Access::ReadOnly)
            .await?;
        let result = async {
            if tx.org_role().is_none() {
                return Err(org_not_found().into());
            }
            // The select policy shows members and viewers no rows; say so with a 403.
            tx.execute("select app.assert_org_role('admin')", &[])
                .await?;
            let rows = fetch_page(
                &tx,
                &format!(
                    "select {INVITATION_COLUMNS} from app.invitations where status = 'pending'"
                ),
                "created_at, id",
                limit,
                after,
            )
            .await?;
            let items = rows
                .iter()
                .map(Invitation::try_from)
                .collect::<Result<Vec<_>, _>>()?;
            let (items, next_cursor) = split_page(items, limit, |i| Cursor {
                created_at: i.created_at,
                id: i.id,
            });
            Ok(ListInvitationsResponse::Ok(Json(InvitationPage {
                items,
                next_cursor,
            })))
        }
        .await;
        tx.finish(result).await
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
        auth: Auth,
        org_id: Path<Uuid>,
        invitation_id: Path<Uuid>,
    ) -> Result<RevokeInvitationResponse, ManageInvitationError> {
        let tx = state
            .db
            .begin(Some(&context(&auth, Some(org_id.0))), Access::ReadWrite)
            .await?;
        let result = async {
            if tx.org_role().is_none() {
                return Err(org_not_found().into());
            }
            tx.execute("select app.revoke_invitation($1)", &[&invitation_id.0])
                .await?;
            Ok(RevokeInvitationResponse::NoContent)
        }
        .await;
        tx.finish(result).await
    }

    /// Resend an invitation
    ///
    /// Admins and owners (an invitation to the owner role: owners). Emails a new token
    /// valid for 7 days; the previous token stops working.
    #[oai(
        path = "/v1/orgs/:org_id/invitations/:invitation_id/resend",
        method = "post",
        operation_id = "resend_invitation"
    )]
    async fn resend(
        &self,
        state: Data<&State>,
        auth: Auth,
        org_id: Path<Uuid>,
        invitation_id: Path<Uuid>,
    ) -> Result<ResendInvitationResponse, ManageInvitationError> {
        let tx = state
            .db
            .begin(Some(&context(&auth, Some(org_id.0))), Access::ReadWrite)
            .await?;
        let result = async {
            if tx.org_role().is_none() {
                return Err(org_not_found().into());
            }
            let token = tokens::generate();
            tx.execute(
                "select app.resend_invitation($1, $2)",
                &[&invitation_id.0, &tokens::hash(&token)],
            )
            .await?;
            let invitation = load_invitation(&tx, invitation_id.0).await?;
            send_invitation_email(&tx, state.0, &invitation, &token).await?;
            Ok(ResendInvitationResponse::Ok(Json(invitation)))
        }
        .await;
        tx.finish(result).await
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
        /// The token from the invitation email's link.
        token: Query<String>,
    ) -> Result<LookupInvitationResponse, LookupInvitationError> {
        let tx = state.db.begin(None, Access::ReadOnly).await?;
        let result = async {
            let row = tx
                .query_one(
                    "select org_id, org_name, inviter_name, email, role, expires_at
                       from app.invitation_lookup($1)",
                    &[&tokens::hash(&token.0)],
                )
                .await?;
            Ok(LookupInvitationResponse::Ok(Json(InvitationPreview {
                org_id: row.get(0),
                org_name: row.get(1),
                inviter_name: row.get(2),
                email: row.get(3),
                role: Role::from_db(row.get(4))?,
                expires_at: row.get(5),
            })))
        }
        .await;
        tx.finish(result).await
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
        auth: Auth,
        body: Json<InvitationToken>,
    ) -> Result<AcceptInvitationResponse, AcceptInvitationError> {
        let tx = state
            .db
            .begin(Some(&context(&auth, None)), Access::ReadWrite)
            .await?;
        let result = async {
            let org_id: Uuid = tx
                .query_one(
                    "select app.accept_invitation($1)",
                    &[&tokens::hash(&body.token)],
                )
                .await?
                .get(0);
            let row = tx
                .query_one(
                    &format!(
                        "select {ORG_COLUMNS} from app.orgs o join app.memberships m on m.org_id = o.id
                          where o.id = $1 and m.user_id = app.current_user_id()"
                    ),
                    &[&org_id],
                )
                .await?;
            Ok(AcceptInvitationResponse::Ok(Json(Organization::from(&row))))
        }
        .await;
        tx.finish(result).await
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
        auth: Auth,
        body: Json<InvitationToken>,
    ) -> Result<DeclineInvitationResponse, DeclineInvitationError> {
        let tx = state
            .db
            .begin(Some(&context(&auth, None)), Access::ReadWrite)
            .await?;
        let result = async {
            tx.execute(
                "select app.decline_invitation($1)",
                &[&tokens::hash(&body.token)],
            )
            .await?;
            Ok(DeclineInvitationResponse::NoContent)
        }
        .await;
        tx.finish(result).await
    }
}
