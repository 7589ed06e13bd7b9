//! Named secrets: a member's own (scope `user`) and the organization's (scope `org`),
//! sealed with the org's data key (`crate::secrets`, envelope encryption) into
//! app.secrets (kind `secret`). Write-only, like GitHub Actions secrets: no operation
//! returns a value; values are consumed server-side. Who sees and changes which is
//! policies/secrets.sql alone -- a member's own secrets are invisible to everyone else
//! (admins and owners included); org-wide ones are listed to every member and changed by
//! signed-in admins and owners. No handler here filters by owner or role.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use poem::{http::StatusCode, web::Data};
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi,
    param::{Path, Query},
    payload::Json,
    types::MaybeUndefined,
};
use tokio_postgres::Row;
use uuid::Uuid;

use crate::{
    api::ApiTags,
    db::Access,
    error_set,
    http::{
        errors::{AUTHENTICATED, IN_ORG, JSON_BODY, KEY_OR_USER, PAGED, Problems},
        kernel::OrgTx,
        pagination::{DEFAULT_LIMIT, MAX_LIMIT},
        problem::ApiError,
        security::{BearerAuth, OrgAuth},
        validate::{SecretName, SecretValue, ShortDescription, ValidJson, Validator},
    },
    secrets::{self, SecretSlot},
    state::State,
};

use super::settings::caller_id;

pub struct SecretsApi;

/// Whose a secret is.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum SecretScope {
    /// The caller's own: no one else sees it, admins and owners included.
    User,
    /// The organization's: every member sees its name; admins and owners change it.
    Org,
}

impl SecretScope {
    fn as_str(self) -> &'static str {
        match self {
            SecretScope::User => "user",
            SecretScope::Org => "org",
        }
    }
    fn parse(s: &str) -> Self {
        if s == "org" {
            SecretScope::Org
        } else {
            SecretScope::User
        }
    }
}

/// A secret's metadata. Its value is never returned.
#[derive(Object, Debug, Clone)]
pub struct Secret {
    pub name: String,
    pub scope: SecretScope,
    pub description: Option<String>,
    /// The member who created it (null when that account was deleted).
    pub created_by: Option<Uuid>,
    pub created_at: DateTime<Utc>,
    /// Last change of its description or value.
    pub updated_at: DateTime<Utc>,
    /// Last change of its value.
    pub value_updated_at: DateTime<Utc>,
}

/// The scope of a row of app.secrets, as SQL.
const SCOPE: &str = "(case when user_id is null then 'org' else 'user' end)";

const COLUMNS: &str = "name, (case when user_id is null then 'org' else 'user' end), description, \
     created_by, created_at, updated_at, value_updated_at";

impl From<&Row> for Secret {
    fn from(r: &Row) -> Self {
        Self {
            name: r.get(0),
            scope: SecretScope::parse(r.get(1)),
            description: r.get(2),
            created_by: r.get(3),
            created_at: r.get(4),
            updated_at: r.get(5),
            value_updated_at: r.get(6),
        }
    }
}

/// One page of secrets, by scope (`org` first) then name.
#[derive(Object)]
pub struct SecretPage {
    pub items: Vec<Secret>,
    /// Pass as `cursor` to get the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A new secret.
#[derive(Object)]
pub struct CreateSecret {
    pub name: SecretName,
    pub value: SecretValue,
    pub description: Option<ShortDescription>,
    /// Default `user`: the caller's own. `org` needs a signed-in admin or owner.
    pub scope: Option<SecretScope>,
}

/// Fields to change; absent fields stay as they are, `null` clears the description.
#[derive(Object)]
pub struct UpdateSecret {
    pub value: Option<SecretValue>,
    pub description: MaybeUndefined<ShortDescription>,
}

#[derive(ApiResponse)]
pub enum ListSecretsResponse {
    /// The org-wide secrets and the caller's own, by scope then name; names only.
    #[oai(status = 200)]
    Ok(Json<SecretPage>),
}

#[derive(ApiResponse)]
pub enum CreateSecretResponse {
    /// Created (sealed); its metadata.
    #[oai(status = 201)]
    Created(Json<Secret>),
}

#[derive(ApiResponse)]
pub enum SecretResponse {
    /// Its metadata.
    #[oai(status = 200)]
    Ok(Json<Secret>),
}

#[derive(ApiResponse)]
pub enum DeleteSecretResponse {
    /// Deleted.
    #[oai(status = 204)]
    NoContent,
}

const NOT_ADMIN: &str = "An org-wide secret, and the caller is not a signed-in admin or owner \
     (`forbidden`).";
const NO_SECRET: &str = "No such organization for the caller, or no secret of this name in \
     this scope that the caller can see -- another member's own secrets do not exist for \
     anyone else (`not_found`).";
const EXISTS: &str = "A secret with this name already exists in this scope (`secret_exists`).";

const BAD_SCOPE: &str = "`scope` is neither `user` nor `org` (`invalid_parameter`).";

error_set! {
    pub ListSecretsErrors: [KEY_OR_USER, IN_ORG, PAGED] {}
    pub CreateSecretErrors: [AUTHENTICATED, IN_ORG, JSON_BODY] { 403 => NOT_ADMIN, 409 => EXISTS }
    pub UpdateSecretErrors: [AUTHENTICATED, JSON_BODY] { 400 => BAD_SCOPE, 403 => NOT_ADMIN, 404 => NO_SECRET }
    pub DeleteSecretErrors: [AUTHENTICATED] { 400 => BAD_SCOPE, 403 => NOT_ADMIN, 404 => NO_SECRET }
}

/// The most bytes a value may have (the `secrets_ciphertext_length` constraint).
pub const MAX_VALUE_BYTES: usize = 65_536;

fn invalid_cursor() -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        "invalid_cursor",
        "the cursor is not valid; use next_cursor from a previous page",
    )
}

/// The position after a secret: `scope|name`, base64url.
fn encode_cursor(s: &Secret) -> String {
    URL_SAFE_NO_PAD.encode(format!("{}|{}", s.scope.as_str(), s.name))
}

fn decode_cursor(text: &str) -> Result<(String, String), ApiError> {
    let raw = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid_cursor())?;
    let raw = String::from_utf8(raw).map_err(|_| invalid_cursor())?;
    let (scope, name) = raw.split_once('|').ok_or_else(invalid_cursor)?;
    if !["user", "org"].contains(&scope) || !SecretName::accepts(name) {
        return Err(invalid_cursor());
    }
    Ok((scope.to_owned(), name.to_owned()))
}

fn secret_not_found() -> ApiError {
    ApiError::not_found("secret")
}

/// The owner a secret of `scope` has: the caller (`user`), or none (`org`, which only
/// signed-in admins and owners write: refused here, before anything is sealed; the
/// policies of app.secrets say the same).
async fn owner_of(tx: &OrgTx, scope: SecretScope) -> Result<Option<Uuid>, ApiError> {
    match scope {
        SecretScope::User => Ok(Some(caller_id(tx).await?)),
        SecretScope::Org => {
            tx.require_signed_in_admin().await?;
            Ok(None)
        }
    }
}

fn check_value(v: &mut Validator, value: &SecretValue) {
    if value.len() > MAX_VALUE_BYTES {
        v.add(
            "value",
            "too_long",
            format!("must be at most {MAX_VALUE_BYTES} bytes of UTF-8"),
        );
    }
}

#[OpenApi(tag = "ApiTags::Secrets")]
impl SecretsApi {
    /// List secrets
    ///
    /// The organization's secrets and the caller's own, by scope (`org` first) then
    /// name, paginated with `limit` and `cursor`. Names and metadata only: secrets are
    /// write-only (like CI secrets) -- no operation returns a value; the server consumes
    /// them (the assistant opens LLM keys). Another member's own secrets are never listed,
    /// whatever the caller's role. API keys see the org-wide ones.
    #[oai(
        path = "/v1/orgs/:org_id/secrets",
        method = "get",
        operation_id = "list_secrets"
    )]
    async fn list(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// Only secrets of this scope.
        scope: Query<Option<SecretScope>>,
        /// Page size, 1-100 (default 20).
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))]
        limit: Query<Option<u32>>,
        /// `next_cursor` of the previous page.
        cursor: Query<Option<String>>,
    ) -> Result<ListSecretsResponse, Problems<ListSecretsErrors>> {
        let limit = i64::from(limit.0.unwrap_or(DEFAULT_LIMIT).clamp(1, MAX_LIMIT));
        let after = match cursor.0.as_deref() {
            None | Some("") => None,
            Some(text) => Some(decode_cursor(text)?),
        };
        let (after_scope, after_name) = after.unzip();
        let rows = state
            .read_in_org(
                auth.principal(),
                org_id.0,
                &format!(
                    "select {COLUMNS} from app.secrets
                      where kind = 'secret'
                        and ($2::text is null or {SCOPE} = $2)
                        and ($3::text is null or ({SCOPE}, name) > ($3, $4::text))
                      order by {SCOPE}, name limit $1"
                ),
                &[
                    &(limit + 1),
                    &scope.0.map(SecretScope::as_str),
                    &after_scope,
                    &after_name,
                ],
            )
            .await?;
        let mut items: Vec<Secret> = rows.iter().map(Secret::from).collect();
        let next_cursor = if items.len() as i64 > limit {
            items.truncate(limit as usize);
            items.last().map(encode_cursor)
        } else {
            None
        };
        Ok(ListSecretsResponse::Ok(Json(SecretPage {
            items,
            next_cursor,
        })))
    }

    /// Create a secret
    ///
    /// Scope `user` (default): any signed-in member, their own. Scope `org`: signed-in
    /// admins and owners. The value is sealed with the organization's data key and never
    /// returned (there is no reveal operation). API keys: 403 `api_key_not_allowed`.
    #[oai(
        path = "/v1/orgs/:org_id/secrets",
        method = "post",
        operation_id = "create_secret"
    )]
    async fn create(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        body: ValidJson<CreateSecret>,
    ) -> Result<CreateSecretResponse, Problems<CreateSecretErrors>> {
        let mut v = Validator::new();
        check_value(&mut v, &body.value);
        v.finish()?;
        let scope = body.scope.unwrap_or(SecretScope::User);
        let description = body.description.as_ref().map(|d| d.as_str().to_owned());
        let keys = &state.master_keys;
        let secret = state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                let user_id = owner_of(tx, scope).await?;
                let slot = SecretSlot {
                    org_id: tx.org_id(),
                    user_id,
                    kind: "secret",
                    name: body.name.as_str(),
                };
                let (sealed, version) = secrets::seal(tx, keys, &slot, body.value.as_str()).await?;
                let row = tx
                    .query_one(
                        &format!(
                            "insert into app.secrets (user_id, kind, name, description, ciphertext,
                                 key_version)
                             values ($1, 'secret', $2, $3, $4, $5) returning {COLUMNS}"
                        ),
                        &[&user_id, &slot.name, &description, &sealed, &version],
                    )
                    .await?;
                Ok(Secret::from(&row))
            })
            .await?;
        Ok(CreateSecretResponse::Created(Json(secret)))
    }

    /// Update a secret
    ///
    /// A new value (sealed again) and/or description. The owner of a `user` secret; a
    /// signed-in admin or owner for an `org` one.
    #[oai(
        path = "/v1/orgs/:org_id/secrets/:name",
        method = "patch",
        operation_id = "update_secret"
    )]
    async fn update(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The secret's name.
        name: Path<String>,
        /// Its scope (default `user`: the caller's own).
        scope: Query<Option<SecretScope>>,
        body: ValidJson<UpdateSecret>,
    ) -> Result<SecretResponse, Problems<UpdateSecretErrors>> {
        if !SecretName::accepts(&name.0) {
            return Err(secret_not_found().into());
        }
        let mut v = Validator::new();
        if let Some(value) = &body.value {
            check_value(&mut v, value);
        }
        v.finish()?;
        let scope = scope.0.unwrap_or(SecretScope::User);
        let description = body.description.clone().map_value(|d| d.into_inner());
        let keys = &state.master_keys;
        let secret = state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                let user_id = owner_of(tx, scope).await?;
                let slot = SecretSlot {
                    org_id: tx.org_id(),
                    user_id,
                    kind: "secret",
                    name: &name.0,
                };
                // Locked, and 404 before any sealing when the caller sees no such row.
                tx.query_opt(
                    "select 1 from app.secrets
                      where kind = 'secret' and name = $1 and user_id is not distinct from $2
                        for update",
                    &[&slot.name, &user_id],
                )
                .await?
                .ok_or_else(secret_not_found)?;
                let sealed = match &body.value {
                    Some(value) => Some(secrets::seal(tx, keys, &slot, value.as_str()).await?),
                    None => None,
                };
                let (ciphertext, version) = sealed.unzip();
                let row = tx
                    .query_opt(
                        &format!(
                            "update app.secrets
                                set ciphertext = coalesce($3, ciphertext),
                                    key_version = coalesce($4, key_version),
                                    value_updated_at = case when $3 is null then value_updated_at
                                                            else now() end,
                                    description = case when $5 then $6 else description end,
                                    updated_at = now()
                              where kind = 'secret' and name = $1
                                and user_id is not distinct from $2
                             returning {COLUMNS}"
                        ),
                        &[
                            &slot.name,
                            &user_id,
                            &ciphertext,
                            &version,
                            &!description.is_undefined(),
                            &description.as_opt_ref(),
                        ],
                    )
                    .await?;
                row.as_ref().map(Secret::from).ok_or_else(secret_not_found)
            })
            .await?;
        Ok(SecretResponse::Ok(Json(secret)))
    }

    /// Delete a secret
    ///
    /// The owner of a `user` secret; a signed-in admin or owner for an `org` one.
    #[oai(
        path = "/v1/orgs/:org_id/secrets/:name",
        method = "delete",
        operation_id = "delete_secret"
    )]
    async fn delete(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        /// The secret's name.
        name: Path<String>,
        /// Its scope (default `user`: the caller's own).
        scope: Query<Option<SecretScope>>,
    ) -> Result<DeleteSecretResponse, Problems<DeleteSecretErrors>> {
        let scope = scope.0.unwrap_or(SecretScope::User).as_str();
        state
            .delete_in_org(
                auth.principal(),
                org_id.0,
                "delete from app.secrets
                  where kind = 'secret' and name = $1
                    and user_id is not distinct from
                        (case when $2 = 'user' then app.current_user_id() end)",
                &[&name.0, &scope],
                secret_not_found,
            )
            .await?;
        Ok(DeleteSecretResponse::NoContent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_refuse_forgeries() {
        let s = Secret {
            name: "API_TOKEN".into(),
            scope: SecretScope::Org,
            description: None,
            created_by: None,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            value_updated_at: Utc::now(),
        };
        assert_eq!(
            decode_cursor(&encode_cursor(&s)).unwrap(),
            ("org".into(), "API_TOKEN".into())
        );
        for bad in [
            "",
            "!!",
            &URL_SAFE_NO_PAD.encode("team|X"),
            &URL_SAFE_NO_PAD.encode("org|1X"),
        ] {
            assert!(decode_cursor(bad).is_err(), "{bad}");
        }
    }
}
