use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, param::Path, param::Query, payload::Json};
use tokio_postgres::Row;
use uuid::Uuid;

use super::{
    ApiTags, State,
    pagination::{Cursor, page_params, split_page},
    problem::ApiError,
    security::Auth,
    validate::Validator,
};
use crate::db::{Access, RequestContext};

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
            let sql_first = format!(
                "select {ORG_COLUMNS} from app.orgs o join app.memberships m on m.org_id = o.id
                  where m.user_id = app.current_user_id()
                  order by o.created_at, o.id limit $1"
            );
            let sql_after = format!(
                "select {ORG_COLUMNS} from app.orgs o join app.memberships m on m.org_id = o.id
                  where m.user_id = app.current_user_id() and (o.created_at, o.id) > ($2, $3)
                  order by o.created_at, o.id limit $1"
            );
            let rows = match after {
                None => tx.query(&sql_first, &[&(limit + 1)]).await?,
                Some(c) => {
                    tx.query(&sql_after, &[&(limit + 1), &c.created_at, &c.id])
                        .await?
                }
            };
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
                None => Err(ApiError::not_found("organization").into()),
            }
        }
        .await;
        tx.finish(result).await
    }
}
