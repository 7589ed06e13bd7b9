use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, param::Query, payload::Json};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{
    ApiTags, State,
    pagination::{Cursor, fetch_page, page_params, split_page},
    problem::ApiError,
    security::Auth,
    validate::Validator,
};
use crate::db::{Access, DbError, RequestContext, Tx};

pub struct OrgsApi;

/// An organization, with the caller's role in it.
#[derive(Object, Debug, Clone)]
pub struct Organization {
    pub id: Uuid,
    pub name: String,
    /// URL-safe unique handle: lowercase letters, digits and dashes.
    pub slug: String,
    /// The personal organization created with the account; it cannot be deleted.
    pub personal: bool,
    /// The caller's role: `owner`, `admin`, `member` or `viewer`.
    pub role: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

pub(crate) const ORG_COLUMNS: &str =
    "o.id, o.name, o.slug, o.personal, m.role, o.created_at, o.updated_at";

impl From<&Row> for Organization {
    fn from(r: &Row) -> Self {
        Self {
            id: r.get(0),
            name: r.get(1),
            slug: r.get(2),
            personal: r.get(3),
            role: r.get(4),
            created_at: r.get(5),
            updated_at: r.get(6),
        }
    }
}

#[derive(Object)]
pub struct OrganizationPage {
    pub items: Vec<Organization>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

#[derive(Object)]
pub struct CreateOrganization {
    /// 1-100 characters.
    pub name: String,
    /// Optional; 1-63 lowercase letters, digits and inner dashes, unique across all
    /// organizations. Generated from the name when absent.
    pub slug: Option<String>,
}

#[derive(Object)]
pub struct UpdateOrganization {
    /// 1-100 characters.
    pub name: Option<String>,
    /// 1-63 lowercase letters, digits and inner dashes, unique across all organizations.
    pub slug: Option<String>,
}

#[derive(Object)]
pub struct SetCurrentOrganization {
    /// An organization the caller is a member of.
    pub org_id: Uuid,
}

#[derive(ApiResponse)]
pub enum ListOrgsResponse {
    /// The caller's organizations, oldest first.
    #[oai(status = 200)]
    Ok(Json<OrganizationPage>),
}

#[derive(ApiResponse)]
pub enum CreateOrgResponse {
    /// Created; the caller is its owner.
    #[oai(status = 201)]
    Created(Json<Organization>),
}

#[derive(ApiResponse)]
pub enum GetOrgResponse {
    /// The organization.
    #[oai(status = 200)]
    Ok(Json<Organization>),
}

crate::problem_responses! {
    pub enum ListOrgsError {
        /// Invalid `limit` or `cursor`.
        BadRequest = 400,
        /// Missing, invalid or expired access token, or its session has ended.
        Unauthorized = 401,
        /// The database is unavailable; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
    }
}

crate::problem_responses! {
    pub enum CreateOrgError {
        /// Malformed JSON body.
        BadRequest = 400,
        /// Missing, invalid or expired access token, or its session has ended.
        Unauthorized = 401,
        /// The slug is taken (`slug_taken`).
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

#[derive(ApiResponse)]
pub enum UpdateOrgResponse {
    /// The organization as it is now.
    #[oai(status = 200)]
    Ok(Json<Organization>),
}

#[derive(ApiResponse)]
pub enum DeleteOrgResponse {
    /// Deleted, with its memberships, invitations, projects and other tenant data.
    #[oai(status = 204)]
    NoContent,
}

#[derive(ApiResponse)]
pub enum SetCurrentOrgResponse {
    /// The caller's current organization is now this one.
    #[oai(status = 200)]
    Ok(Json<Organization>),
}

crate::problem_responses! {
    pub enum UpdateOrgError {
        /// Malformed JSON body.
        BadRequest = 400,
        /// Missing, invalid or expired access token, or its session has ended.
        Unauthorized = 401,
        /// The caller is below admin, decided by the policy (`forbidden`).
        Forbidden = 403,
        /// No such organization, or the caller is not a member of it.
        NotFound = 404,
        /// The slug is taken (`slug_taken`).
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
    pub enum DeleteOrgError {
        /// Missing, invalid or expired access token, or its session has ended.
        Unauthorized = 401,
        /// The caller is not an owner, decided by the policy (`forbidden`).
        Forbidden = 403,
        /// No such organization, or the caller is not a member of it.
        NotFound = 404,
        /// A personal organization cannot be deleted (`personal_org`).
        Conflict = 409,
        /// The database is unavailable; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
    }
}

crate::problem_responses! {
    pub enum SetCurrentOrgError {
        /// Malformed JSON body.
        BadRequest = 400,
        /// Missing, invalid or expired access token, or its session has ended.
        Unauthorized = 401,
        /// No such organization, or the caller is not a member of it.
        NotFound = 404,
        /// Body larger than the limit.
        PayloadTooLarge = 413,
        /// Body is not JSON.
        UnsupportedMediaType = 415,
        /// The database is unavailable; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
    }
}

crate::problem_responses! {
    pub enum GetOrgError {
        /// Missing, invalid or expired access token, or its session has ended.
        Unauthorized = 401,
        /// No such organization, or the caller is not a member of it.
        NotFound = 404,
        /// The database is unavailable; retry after `Retry-After` seconds.
        ServiceUnavailable = 503,
    }
}

/// The caller's view of one organization (with their role), if they are a member.
async fn load_org(tx: &Tx, org_id: Uuid) -> Result<Option<Organization>, DbError> {
    let sql = format!(
        "select {ORG_COLUMNS} from app.orgs o join app.memberships m on m.org_id = o.id
          where o.id = $1 and m.user_id = app.current_user_id()"
    );
    Ok(tx
        .query_opt(&sql, &[&org_id])
        .await?
        .as_ref()
        .map(Organization::from))
}

/// The answer for an org the caller is not a member of (or that does not exist).
pub(crate) fn org_not_found() -> ApiError {
    ApiError::not_found("organization")
}

pub(crate) fn context(auth: &Auth, org_id: Option<Uuid>) -> RequestContext {
    let claims = auth.claims();
    RequestContext {
        user_id: claims.sub,
        session_id: claims.sid,
        org_id,
    }
}

pub(crate) fn validate_slug(v: &mut Validator, slug: &str) -> String {
    let slug = slug.trim().to_owned();
    let ok = (1..=63).contains(&slug.len())
        && slug
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !slug.starts_with('-')
        && !slug.ends_with('-');
    if !ok {
        v.add(
            "slug",
            "invalid_format",
            "must be 1-63 lowercase letters, digits or dashes, not starting or ending with a dash",
        );
    }
    slug
}

#[OpenApi(tag = "ApiTags::Organizations")]
impl OrgsApi {
    /// List my organizations
    ///
    /// Every organization the caller is a member of, with their role, oldest first.
    #[oai(path = "/v1/orgs", method = "get", operation_id = "list_orgs")]
    async fn list(
        &self,
        state: Data<&State>,
        auth: Auth,
        /// Page size, 1-100 (default 20).
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<ListOrgsResponse, ListOrgsError> {
        let (limit, after) = page_params(limit.0, cursor.0.as_deref())?;
        let tx = state
            .db
            .begin(Some(&context(&auth, None)), Access::ReadOnly)
            .await?;
        let result = async {
            let rows = fetch_page(
                &tx,
                &format!(
                    "select {ORG_COLUMNS} from app.orgs o join app.memberships m on m.org_id = o.id
                      where m.user_id = app.current_user_id()"
                ),
                "o.created_at, o.id",
                limit,
                after,
            )
            .await?;
            let items: Vec<Organization> = rows.iter().map(Organization::from).collect();
            let (items, next_cursor) = split_page(items, limit, |o| Cursor {
                created_at: o.created_at,
                id: o.id,
            });
            Ok(ListOrgsResponse::Ok(Json(OrganizationPage {
                items,
                next_cursor,
            })))
        }
        .await;
        tx.finish(result).await
    }

    /// Create an organization
    ///
    /// The caller becomes its owner.
    #[oai(path = "/v1/orgs", method = "post", operation_id = "create_org")]
    async fn create(
        &self,
        state: Data<&State>,
        auth: Auth,
        body: Json<CreateOrganization>,
    ) -> Result<CreateOrgResponse, CreateOrgError> {
        let mut v = Validator::new();
        let name = v.text("name", &body.name, 1, 100);
        let slug = body.slug.as_deref().map(|s| validate_slug(&mut v, s));
        v.finish()?;
        let tx = state
            .db
            .begin(Some(&context(&auth, None)), Access::ReadWrite)
            .await?;
        let result = async {
            let row = tx
                .query_one("select app.create_org($1, $2, false)", &[&name, &slug])
                .await?;
            let id: Uuid = row.get(0);
            let sql = format!(
                "select {ORG_COLUMNS} from app.orgs o join app.memberships m on m.org_id = o.id
                  where o.id = $1 and m.user_id = app.current_user_id()"
            );
            let row = tx.query_one(&sql, &[&id]).await?;
            Ok(CreateOrgResponse::Created(Json(Organization::from(&row))))
        }
        .await;
        tx.finish(result).await
    }

    /// Get an organization
    ///
    /// 404 unless the caller is a member.
    #[oai(path = "/v1/orgs/:org_id", method = "get", operation_id = "get_org")]
    async fn get(
        &self,
        state: Data<&State>,
        auth: Auth,
        org_id: Path<Uuid>,
    ) -> Result<GetOrgResponse, GetOrgError> {
        let tx = state
            .db
            .begin(Some(&context(&auth, Some(org_id.0))), Access::ReadOnly)
            .await?;
        let result = async {
            let sql = format!(
                "select {ORG_COLUMNS} from app.orgs o join app.memberships m on m.org_id = o.id
                  where o.id = $1 and m.user_id = app.current_user_id()"
            );
            match tx.query_opt(&sql, &[&org_id.0]).await? {
                Some(row) => Ok(GetOrgResponse::Ok(Json(Organization::from(&row)))),
                None => Err(org_not_found().into()),
            }
        }
        .await;
        tx.finish(result).await
    }

    /// Update an organization
    ///
    /// Admins and owners change its name and slug; lower roles get 403 from the
    /// update policy. Only the fields present change.
    #[oai(
        path = "/v1/orgs/:org_id",
        method = "patch",
        operation_id = "update_org"
    )]
    async fn update(
        &self,
        state: Data<&State>,
        auth: Auth,
        org_id: Path<Uuid>,
        body: Json<UpdateOrganization>,
    ) -> Result<UpdateOrgResponse, UpdateOrgError> {
        let mut v = Validator::new();
        let name = body.name.as_deref().map(|n| v.text("name", n, 1, 100));
        let slug = body.slug.as_deref().map(|s| validate_slug(&mut v, s));
        v.finish()?;
        let tx = state
            .db
            .begin(Some(&context(&auth, Some(org_id.0))), Access::ReadWrite)
            .await?;
        let result = async {
            if tx.org_role().is_none() {
                return Err(org_not_found().into());
            }
            // The orgs_update_admin policy decides who may (403 for members and viewers).
            let updated = tx
                .execute(
                    "update app.orgs set name = coalesce($2, name), slug = coalesce($3, slug),
                            updated_at = now()
                      where id = $1",
                    &[&org_id.0, &name, &slug],
                )
                .await?;
            match (updated, load_org(&tx, org_id.0).await?) {
                (1, Some(org)) => Ok(UpdateOrgResponse::Ok(Json(org))),
                _ => Err(org_not_found().into()),
            }
        }
        .await;
        tx.finish(result).await
    }

    /// Delete an organization
    ///
    /// Owners only (403 from the delete policy otherwise). Deletes its memberships,
    /// invitations, projects and all its data. A personal organization cannot be
    /// deleted (409 `personal_org`).
    #[oai(
        path = "/v1/orgs/:org_id",
        method = "delete",
        operation_id = "delete_org"
    )]
    async fn delete(
        &self,
        state: Data<&State>,
        auth: Auth,
        org_id: Path<Uuid>,
    ) -> Result<DeleteOrgResponse, DeleteOrgError> {
        let tx = state
            .db
            .begin(Some(&context(&auth, Some(org_id.0))), Access::ReadWrite)
            .await?;
        let result = async {
            if tx.org_role().is_none() {
                return Err(org_not_found().into());
            }
            let deleted = tx
                .execute("delete from app.orgs where id = $1", &[&org_id.0])
                .await?;
            if deleted == 0 {
                return Err(org_not_found().into());
            }
            Ok(DeleteOrgResponse::NoContent)
        }
        .await;
        tx.finish(result).await
    }
}

/// `PUT /v1/auth/me/current-org`, listed with the other operations on the signed-in user.
pub struct CurrentOrgApi;

#[OpenApi(tag = "ApiTags::Auth")]
impl CurrentOrgApi {
    /// Switch my current organization
    ///
    /// The organization the user works in by default (`current_org_id` in
    /// `GET /v1/auth/me`). The caller must be a member of it.
    #[oai(
        path = "/v1/auth/me/current-org",
        method = "put",
        operation_id = "set_current_org"
    )]
    async fn set_current_org(
        &self,
        state: Data<&State>,
        auth: Auth,
        body: Json<SetCurrentOrganization>,
    ) -> Result<SetCurrentOrgResponse, SetCurrentOrgError> {
        let tx = state
            .db
            .begin(Some(&context(&auth, None)), Access::ReadWrite)
            .await?;
        let result = async {
            tx.execute("select app.set_current_org($1)", &[&body.org_id])
                .await?;
            let org = load_org(&tx, body.org_id)
                .await?
                .ok_or_else(|| ApiError::not_found("organization"))?;
            Ok(SetCurrentOrgResponse::Ok(Json(org)))
        }
        .await;
        tx.finish(result).await
    }
}
