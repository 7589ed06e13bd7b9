//! API keys: programmatic access to one organization's data, inside RLS.
//!
//! Signed-in admins and owners manage their org's keys here. A key's secret is shown
//! once, at creation (and at each rotation); the database keeps its SHA-256 and a
//! display start. A key then authenticates the operations on its org's data (`OrgAuth`:
//! `Authorization: Bearer pal_...` or `X-API-Key: pal_...`) with the lower of its own
//! role and its creator's current one; it never governs the org (its settings, members,
//! invitations, keys): those answer 403 `api_key_not_allowed`. Every rule is enforced by
//! the security definer functions of policies/functions_api_keys.sql, which also record
//! org_events in the same transaction.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::{
    api::ApiTags,
    auth::api_key::ApiKeySecret,
    db::{Access, Tx},
    domain::Role,
    error_set,
    http::{
        errors::{AUTHENTICATED, IN_ORG, JSON_BODY, PAGED, PLAN_LIMIT, Problems},
        json::{rfc3339, rfc3339_opt},
        pagination::{Cursor, fetch_page, page_params},
        problem::ApiError,
        security::BearerAuth,
        validate::{Name, ValidJson, Validator},
    },
    page,
    state::State,
};

pub struct ApiKeysApi;

/// The role a key acts with: never owner.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum ApiKeyRole {
    Viewer,
    Member,
    Admin,
}

impl From<ApiKeyRole> for Role {
    fn from(r: ApiKeyRole) -> Self {
        match r {
            ApiKeyRole::Viewer => Role::Viewer,
            ApiKeyRole::Member => Role::Member,
            ApiKeyRole::Admin => Role::Admin,
        }
    }
}

/// An API key of an organization. Its secret is never shown again after creation.
#[derive(Object, serde::Serialize, Debug, Clone)]
pub struct ApiKey {
    pub id: Uuid,
    pub org_id: Uuid,
    pub name: String,
    /// The first characters of the current secret (`pal_` and 4 more), to tell keys apart.
    pub start: String,
    /// The role the key was given. At each request it acts with the lower of this and
    /// its creator's current role.
    pub role: Role,
    /// The member who created it; null if that account is gone.
    pub created_by: Option<Uuid>,
    #[serde(serialize_with = "rfc3339")]
    pub created_at: DateTime<Utc>,
    /// When it stops working; null: never.
    #[serde(serialize_with = "rfc3339_opt")]
    pub expires_at: Option<DateTime<Utc>>,
    /// The last request it authenticated, to the minute.
    #[serde(serialize_with = "rfc3339_opt")]
    pub last_used_at: Option<DateTime<Utc>>,
    /// The last rotation.
    #[serde(serialize_with = "rfc3339_opt")]
    pub rotated_at: Option<DateTime<Utc>>,
    /// When it was revoked (listed only with `include_revoked=true`).
    #[serde(serialize_with = "rfc3339_opt")]
    pub revoked_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "id, org_id, name, start, role::text, created_by, created_at, expires_at, \
                       last_used_at, rotated_at, revoked_at";

impl From<&Row> for ApiKey {
    fn from(r: &Row) -> Self {
        Self {
            id: r.get(0),
            org_id: r.get(1),
            name: r.get(2),
            start: r.get(3),
            role: r.get(4),
            created_by: r.get(5),
            created_at: r.get(6),
            expires_at: r.get(7),
            last_used_at: r.get(8),
            rotated_at: r.get(9),
            revoked_at: r.get(10),
        }
    }
}

/// A key with its secret: the only time the secret is shown. Store it now.
#[derive(Object, Debug, Clone)]
pub struct ApiKeySecretResponse {
    pub api_key: ApiKey,
    /// The key: send it as `Authorization: Bearer <secret>` or `X-API-Key: <secret>`.
    pub secret: String,
}

page! {
    /// One page of API keys.
    ApiKeyPage of ApiKey
}

/// A new key.
#[derive(Object)]
pub struct CreateApiKey {
    pub name: Name,
    /// Default `member`; at most the creator's own role.
    pub role: Option<ApiKeyRole>,
    /// When it stops working (in the future); null: never.
    pub expires_at: Option<DateTime<Utc>>,
}

/// A new name.
#[derive(Object)]
pub struct UpdateApiKey {
    pub name: Name,
}

/// How long the old secret keeps working.
#[derive(Object)]
pub struct RotateApiKey {
    /// Seconds the replaced secret keeps working, 0 to 604800 (7 days); default 3600.
    #[oai(validator(maximum(value = "604800")))]
    pub grace_seconds: Option<u32>,
}

#[derive(ApiResponse)]
pub enum CreateApiKeyResponse {
    /// Created: the secret is in this response and nowhere else.
    #[oai(status = 201)]
    Created(Json<ApiKeySecretResponse>),
}

#[derive(ApiResponse)]
pub enum RotateApiKeyResponse {
    /// Rotated: the new secret is in this response and nowhere else.
    #[oai(status = 200)]
    Ok(Json<ApiKeySecretResponse>),
}

#[derive(ApiResponse)]
pub enum ListApiKeysResponse {
    /// The organization's keys, oldest first.
    #[oai(status = 200)]
    Ok(Json<ApiKeyPage>),
}

#[derive(ApiResponse)]
pub enum ApiKeyResponse {
    /// The key.
    #[oai(status = 200)]
    Ok(Json<ApiKey>),
}

#[derive(ApiResponse)]
pub enum RevokeApiKeyResponse {
    /// Revoked: the key stops working on the next request, on every replica.
    #[oai(status = 204)]
    NoContent,
}

const NOT_ADMIN: &str = "The caller is below admin, or is an API key (`forbidden`, \
                         `api_key_not_allowed`).";
const NO_KEY: &str = "No such organization, or no live key with this id in it (`not_found`).";

error_set! {
    pub CreateApiKeyErrors: [AUTHENTICATED, IN_ORG, JSON_BODY, PLAN_LIMIT] { 403 => NOT_ADMIN }
    pub ListApiKeysErrors: [AUTHENTICATED, IN_ORG, PAGED] { 403 => NOT_ADMIN }
    pub GetApiKeyErrors: [AUTHENTICATED] { 403 => NOT_ADMIN, 404 => NO_KEY }
    pub UpdateApiKeyErrors: [AUTHENTICATED, JSON_BODY] { 403 => NOT_ADMIN, 404 => NO_KEY }
    pub RotateApiKeyErrors: [AUTHENTICATED, JSON_BODY] { 403 => NOT_ADMIN, 404 => NO_KEY }
    pub RevokeApiKeyErrors: [AUTHENTICATED] { 403 => NOT_ADMIN, 404 => NO_KEY }
}

/// The default rotation grace: an hour.
const DEFAULT_GRACE_SECONDS: u32 = 3600;

async fn load_live_key(tx: &Tx, id: Uuid) -> Result<ApiKey, ApiError> {
    tx.query_opt(
        &format!("select {COLUMNS} from app.api_keys where id = $1 and revoked_at is null"),
        &[&id],
    )
    .await?
    .as_ref()
    .map(ApiKey::from)
    .ok_or_else(|| ApiError::not_found("API key"))
}

#[OpenApi(tag = "ApiTags::ApiKeys")]
impl ApiKeysApi {
    /// Create an API key
    ///
    /// Admins and owners. The response carries the secret, once: only its SHA-256 is
    /// stored. The key reaches this organization's data (projects, the organization and
    /// its members) as `Authorization: Bearer <secret>` or `X-API-Key: <secret>`, with
    /// `role` -- but never more than its creator's role at the time of each request -- and
    /// stops working when it is revoked, when it expires, or when its creator leaves.
    #[oai(
        path = "/v1/orgs/:org_id/api-keys",
        method = "post",
        operation_id = "create_api_key"
    )]
    async fn create(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        body: ValidJson<CreateApiKey>,
    ) -> Result<CreateApiKeyResponse, Problems<CreateApiKeyErrors>> {
        let mut v = Validator::new();
        if body.expires_at.is_some_and(|at| at <= Utc::now()) {
            v.add("expires_at", "in_the_past", "must be in the future");
        }
        v.finish()?;
        let secret = ApiKeySecret::generate();
        let role = Role::from(body.role.unwrap_or(ApiKeyRole::Member));
        let api_key = state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                let id: Uuid = tx
                    .query_one(
                        "select app.create_api_key($1, $2, $3, $4, $5)",
                        &[
                            &body.name.as_str(),
                            &role,
                            &body.expires_at,
                            &secret.hash(),
                            &secret.start(),
                        ],
                    )
                    .await?
                    .get(0);
                load_live_key(tx, id).await
            })
            .await?;
        Ok(CreateApiKeyResponse::Created(Json(ApiKeySecretResponse {
            api_key,
            secret: secret.expose().to_owned(),
        })))
    }

    /// List API keys
    ///
    /// Admins and owners; oldest first. Revoked keys only with `include_revoked=true`.
    /// Never shows a secret or its hash.
    #[oai(
        path = "/v1/orgs/:org_id/api-keys",
        method = "get",
        operation_id = "list_api_keys"
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
        /// Include revoked keys (default false).
        include_revoked: Query<Option<bool>>,
    ) -> Result<ListApiKeysResponse, Problems<ListApiKeysErrors>> {
        let (limit, after) = page_params(limit.0, cursor.0.as_deref())?;
        let condition = if include_revoked.0.unwrap_or(false) {
            "true"
        } else {
            "revoked_at is null"
        };
        let page = state
            .in_org(auth.principal(), org_id.0, Access::ReadOnly, async |tx| {
                tx.require_signed_in_admin().await?;
                let rows = fetch_page(
                    tx,
                    &format!("select {COLUMNS} from app.api_keys where {condition}"),
                    "created_at, id",
                    limit,
                    after,
                )
                .await?;
                let items = rows.iter().map(ApiKey::from).collect();
                Ok(ApiKeyPage::from_rows(items, limit, |k| Cursor {
                    created_at: k.created_at,
                    id: k.id,
                }))
            })
            .await?;
        Ok(ListApiKeysResponse::Ok(Json(page)))
    }

    /// Get an API key
    ///
    /// Admins and owners. A revoked key is gone: 404.
    #[oai(
        path = "/v1/orgs/:org_id/api-keys/:key_id",
        method = "get",
        operation_id = "get_api_key"
    )]
    async fn get(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The key's id.
        key_id: Path<Uuid>,
    ) -> Result<ApiKeyResponse, Problems<GetApiKeyErrors>> {
        let key = state
            .in_org(auth.principal(), org_id.0, Access::ReadOnly, async |tx| {
                tx.require_signed_in_admin().await?;
                load_live_key(tx, key_id.0).await
            })
            .await?;
        Ok(ApiKeyResponse::Ok(Json(key)))
    }

    /// Rename an API key
    ///
    /// Admins and owners.
    #[oai(
        path = "/v1/orgs/:org_id/api-keys/:key_id",
        method = "patch",
        operation_id = "update_api_key"
    )]
    async fn update(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The key's id.
        key_id: Path<Uuid>,
        body: ValidJson<UpdateApiKey>,
    ) -> Result<ApiKeyResponse, Problems<UpdateApiKeyErrors>> {
        let key = state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                tx.execute(
                    "select app.rename_api_key($1, $2)::text",
                    &[&key_id.0, &body.name.as_str()],
                )
                .await?;
                load_live_key(tx, key_id.0).await
            })
            .await?;
        Ok(ApiKeyResponse::Ok(Json(key)))
    }

    /// Rotate an API key
    ///
    /// Admins and owners. Returns a new secret, once; the replaced one keeps working for
    /// `grace_seconds` (default an hour, at most 7 days), so deployments can switch over.
    #[oai(
        path = "/v1/orgs/:org_id/api-keys/:key_id/rotate",
        method = "post",
        operation_id = "rotate_api_key"
    )]
    async fn rotate(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The key's id.
        key_id: Path<Uuid>,
        body: ValidJson<RotateApiKey>,
    ) -> Result<RotateApiKeyResponse, Problems<RotateApiKeyErrors>> {
        let secret = ApiKeySecret::generate();
        let grace = std::time::Duration::from_secs(u64::from(
            body.grace_seconds.unwrap_or(DEFAULT_GRACE_SECONDS),
        ));
        let api_key = state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                tx.execute(
                    "select app.rotate_api_key($1, $2, $3, make_interval(secs => $4))::text",
                    &[
                        &key_id.0,
                        &secret.hash(),
                        &secret.start(),
                        &(grace.as_secs() as f64),
                    ],
                )
                .await?;
                load_live_key(tx, key_id.0).await
            })
            .await?;
        Ok(RotateApiKeyResponse::Ok(Json(ApiKeySecretResponse {
            api_key,
            secret: secret.expose().to_owned(),
        })))
    }

    /// Revoke an API key
    ///
    /// Admins and owners. The key stops working on the very next request, on every
    /// replica (each request looks its key up in the same statement that sets its
    /// context: nothing is cached). It stays listed with `include_revoked=true`.
    #[oai(
        path = "/v1/orgs/:org_id/api-keys/:key_id",
        method = "delete",
        operation_id = "revoke_api_key"
    )]
    async fn revoke(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The key's id.
        key_id: Path<Uuid>,
    ) -> Result<RevokeApiKeyResponse, Problems<RevokeApiKeyErrors>> {
        state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                tx.execute("select app.revoke_api_key($1)::text", &[&key_id.0])
                    .await?;
                Ok(())
            })
            .await?;
        Ok(RevokeApiKeyResponse::NoContent)
    }
}
