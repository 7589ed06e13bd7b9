//! Organization settings (one row per org, app.org_settings) and the secret-valued
//! settings -- the org's LLM, search and sandbox API keys, and each member's own LLM key
//! -- which are sealed with the org's data key (`crate::secrets`) into app.secrets
//! (kind `setting`). Reads show a secret setting only as a hint: whether it is set and
//! its last four characters. Who may read and change what is policies/settings.sql and
//! policies/secrets.sql: every member and API key reads; signed-in admins and owners
//! change; a member's own LLM key is theirs alone.

use chrono::{DateTime, Utc};
use poem::web::Data;
use poem_openapi::{
    ApiResponse, Enum, Object, OpenApi, param::Path, payload::Json, types::MaybeUndefined,
};
use serde_json::Value;
use tokio_postgres::Row;

use crate::api::changes::Changes;
use uuid::Uuid;

use crate::{
    api::ApiTags,
    db::{Access, Tx},
    error_set,
    http::{
        errors::{AUTHENTICATED, IN_ORG, JSON_BODY, KEY_OR_USER, Problems},
        problem::ApiError,
        security::{BearerAuth, OrgAuth},
        validate::{Credential, LongLine, Name, ValidJson, Validator},
    },
    secrets::{self, SecretSlot},
    state::State,
};

pub struct SettingsApi;

/// The secret-valued settings of an org (app.secrets, kind `setting`, org-wide).
pub const SECRET_SETTINGS: [&str; 3] = ["llm_api_key", "search_api_key", "sandbox_api_key"];

/// The one secret-valued setting each member has for themselves.
pub const MEMBER_LLM_KEY: &str = "llm_api_key";

/// What the agent's actions are checked with.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum SecurityAnalyzer {
    Llm,
    Invariant,
}

impl SecurityAnalyzer {
    fn as_str(self) -> &'static str {
        match self {
            SecurityAnalyzer::Llm => "llm",
            SecurityAnalyzer::Invariant => "invariant",
        }
    }
    fn parse(s: &str) -> Option<Self> {
        match s {
            "llm" => Some(SecurityAnalyzer::Llm),
            "invariant" => Some(SecurityAnalyzer::Invariant),
            _ => None,
        }
    }
}

/// The text search configuration (language) documents are indexed and searched with.
#[derive(Enum, Debug, Clone, Copy, PartialEq, Eq)]
#[oai(rename_all = "lowercase")]
pub enum SearchLanguage {
    Simple,
    English,
    French,
    German,
    Spanish,
    Italian,
    Portuguese,
    Dutch,
    Swedish,
    Danish,
    Norwegian,
    Finnish,
    Russian,
}

impl SearchLanguage {
    const ALL: [SearchLanguage; 13] = [
        SearchLanguage::Simple,
        SearchLanguage::English,
        SearchLanguage::French,
        SearchLanguage::German,
        SearchLanguage::Spanish,
        SearchLanguage::Italian,
        SearchLanguage::Portuguese,
        SearchLanguage::Dutch,
        SearchLanguage::Swedish,
        SearchLanguage::Danish,
        SearchLanguage::Norwegian,
        SearchLanguage::Finnish,
        SearchLanguage::Russian,
    ];

    fn as_str(self) -> &'static str {
        match self {
            SearchLanguage::Simple => "simple",
            SearchLanguage::English => "english",
            SearchLanguage::French => "french",
            SearchLanguage::German => "german",
            SearchLanguage::Spanish => "spanish",
            SearchLanguage::Italian => "italian",
            SearchLanguage::Portuguese => "portuguese",
            SearchLanguage::Dutch => "dutch",
            SearchLanguage::Swedish => "swedish",
            SearchLanguage::Danish => "danish",
            SearchLanguage::Norwegian => "norwegian",
            SearchLanguage::Finnish => "finnish",
            SearchLanguage::Russian => "russian",
        }
    }
    fn parse(s: &str) -> Self {
        Self::ALL
            .into_iter()
            .find(|l| l.as_str() == s)
            .unwrap_or(SearchLanguage::Simple)
    }
}

/// A secret-valued setting as reads show it: never its value.
#[derive(Object, Debug, Clone, PartialEq, Eq)]
pub struct SecretHint {
    /// Whether a value is stored.
    pub set: bool,
    /// The value's last four characters (fewer for a shorter value); null when unset.
    pub last4: Option<String>,
}

impl SecretHint {
    fn of(hint: Option<String>) -> Self {
        Self {
            set: hint.is_some(),
            last4: hint,
        }
    }
}

/// An organization's settings. Secret-valued settings appear only as hints.
#[derive(Object, Debug, Clone)]
pub struct OrgSettings {
    pub org_id: Uuid,
    /// The agent the assistant runs (null: the default).
    pub agent: Option<String>,
    /// The most iterations an agent may run per task (null: the default).
    pub max_iterations: Option<i32>,
    /// What checks the agent's actions (null: none).
    pub security_analyzer: Option<SecurityAnalyzer>,
    /// Whether the agent asks before acting.
    pub confirmation_mode: bool,
    /// The model (null: the server's default).
    pub llm_model: Option<String>,
    /// The model endpoint (null: the server's default).
    pub llm_base_url: Option<String>,
    /// Price of the model's input, US dollars per million tokens.
    pub llm_input_price_per_mtok: f64,
    /// Price of the model's output, US dollars per million tokens.
    pub llm_output_price_per_mtok: f64,
    /// MCP servers' configuration (a JSON object), or null.
    pub mcp_config: Option<Value>,
    /// US dollars one assistant conversation may spend (null: no budget).
    pub max_budget_per_task: Option<f64>,
    /// Seconds an idle conversation is kept (null: forever).
    pub conversation_expiration: Option<i32>,
    pub enable_default_condenser: bool,
    /// Multiplier applied on top of the model's price (0.2 = +20 %).
    pub billing_margin: f64,
    /// The language documents are indexed and searched with.
    pub search_language: SearchLanguage,
    /// The org's LLM API key (used when the member has none of their own).
    pub llm_api_key: SecretHint,
    /// The org's search API key.
    pub search_api_key: SecretHint,
    /// The org's sandbox API key.
    pub sandbox_api_key: SecretHint,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str = "org_id, agent, max_iterations, security_analyzer, confirmation_mode, \
     llm_model, llm_base_url, llm_input_price_per_mtok::float8, llm_output_price_per_mtok::float8, \
     mcp_config, max_budget_per_task::float8, conversation_expiration, enable_default_condenser, \
     billing_margin::float8, search_language::text, updated_at";

/// The org's secret settings' hints, as one JSON object `{name: last4}` (RLS: this org's).
const HINTS: &str = "(select coalesce(jsonb_object_agg(s.name, s.hint), '{}')
                        from app.secrets s where s.kind = 'setting' and s.user_id is null)";

impl OrgSettings {
    /// A row of `select {COLUMNS}, {HINTS}`.
    fn from_row(r: &Row) -> Self {
        let hints: Value = r.get(16);
        let hint = |name: &str| SecretHint::of(hints[name].as_str().map(str::to_owned));
        Self {
            org_id: r.get(0),
            agent: r.get(1),
            max_iterations: r.get(2),
            security_analyzer: r
                .get::<_, Option<&str>>(3)
                .and_then(SecurityAnalyzer::parse),
            confirmation_mode: r.get(4),
            llm_model: r.get(5),
            llm_base_url: r.get(6),
            llm_input_price_per_mtok: r.get(7),
            llm_output_price_per_mtok: r.get(8),
            mcp_config: r.get(9),
            max_budget_per_task: r.get(10),
            conversation_expiration: r.get(11),
            enable_default_condenser: r.get(12),
            billing_margin: r.get(13),
            search_language: SearchLanguage::parse(r.get(14)),
            updated_at: r.get(15),
            llm_api_key: hint("llm_api_key"),
            search_api_key: hint("search_api_key"),
            sandbox_api_key: hint("sandbox_api_key"),
        }
    }
}

/// Settings to change: absent fields stay as they are, `null` resets a nullable one (for
/// a secret setting: deletes it). Unknown fields are refused (400 `invalid_body`): a
/// misspelt setting is never silently ignored.
#[derive(Object)]
#[oai(deny_unknown_fields)]
pub struct UpdateOrgSettings {
    pub agent: MaybeUndefined<Name>,
    #[oai(validator(minimum(value = "1"), maximum(value = "10000")))]
    pub max_iterations: MaybeUndefined<i32>,
    pub security_analyzer: MaybeUndefined<SecurityAnalyzer>,
    pub confirmation_mode: Option<bool>,
    pub llm_model: MaybeUndefined<LongLine>,
    /// An `http` or `https` URL with a host, without credentials, query or fragment; at
    /// most 2048 characters.
    #[oai(validator(min_length = 8, max_length = 2048))]
    pub llm_base_url: MaybeUndefined<String>,
    /// US dollars per million input tokens, 0-10000.
    #[oai(validator(minimum(value = "0"), maximum(value = "10000")))]
    pub llm_input_price_per_mtok: Option<f64>,
    /// US dollars per million output tokens, 0-10000.
    #[oai(validator(minimum(value = "0"), maximum(value = "10000")))]
    pub llm_output_price_per_mtok: Option<f64>,
    /// A JSON object of at most 65,536 bytes (serialized), with no NUL character (U+0000)
    /// in any key or string.
    pub mcp_config: MaybeUndefined<std::collections::BTreeMap<String, Value>>,
    /// US dollars, 0.0001-100000.
    #[oai(validator(minimum(value = "0.0001"), maximum(value = "100000")))]
    pub max_budget_per_task: MaybeUndefined<f64>,
    /// Seconds, 60-315360000 (ten years).
    #[oai(validator(minimum(value = "60"), maximum(value = "315360000")))]
    pub conversation_expiration: MaybeUndefined<i32>,
    pub enable_default_condenser: Option<bool>,
    /// 0-10 (0.2 = +20 %).
    #[oai(validator(minimum(value = "0"), maximum(value = "10")))]
    pub billing_margin: Option<f64>,
    pub search_language: Option<SearchLanguage>,
    /// The org's LLM API key; `null` deletes it.
    pub llm_api_key: MaybeUndefined<Credential>,
    /// The org's search API key; `null` deletes it.
    pub search_api_key: MaybeUndefined<Credential>,
    /// The org's sandbox API key; `null` deletes it.
    pub sandbox_api_key: MaybeUndefined<Credential>,
}

/// A member's own LLM API key.
#[derive(Object)]
pub struct SetLlmKey {
    pub api_key: Credential,
}

#[derive(ApiResponse)]
pub enum OrgSettingsResponse {
    /// The organization's settings.
    #[oai(status = 200)]
    Ok(Json<OrgSettings>),
}

#[derive(ApiResponse)]
pub enum SecretHintResponse {
    /// Stored (sealed); only its hint is returned.
    #[oai(status = 200)]
    Ok(Json<SecretHint>),
}

#[derive(ApiResponse)]
pub enum DeleteLlmKeyResponse {
    /// Deleted.
    #[oai(status = 204)]
    NoContent,
}

const NOT_ADMIN: &str = "Below admin, or an API key: settings are changed by signed-in admins \
     and owners (`forbidden`, `api_key_not_allowed`).";
const NO_MEMBER_KEY: &str = "No such organization for the caller (`not_found`).";

error_set! {
    pub GetSettingsErrors: [KEY_OR_USER, IN_ORG] {}
    pub UpdateSettingsErrors: [KEY_OR_USER, IN_ORG, JSON_BODY] { 403 => NOT_ADMIN }
    pub SetLlmKeyErrors: [AUTHENTICATED, IN_ORG, JSON_BODY] {}
    pub DeleteLlmKeyErrors: [AUTHENTICATED] { 404 => NO_MEMBER_KEY }
}

/// The largest `mcp_config`, serialized (the `org_settings_mcp_config_object` constraint).
pub const MCP_CONFIG_MAX_BYTES: usize = 65_536;

/// Why `url` is not an acceptable model endpoint, if it is not: an absolute `http` or
/// `https` URL with a host, no credentials, query or fragment, at most 2048 characters.
pub fn base_url_problem(url: &str) -> Option<&'static str> {
    if url.len() > 2048 {
        return Some("must be at most 2048 characters");
    }
    let Ok(parsed) = reqwest::Url::parse(url) else {
        return Some("must be an absolute http or https URL");
    };
    if !matches!(parsed.scheme(), "http" | "https") {
        return Some("must be an http or https URL");
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Some("must name a host");
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Some("must not carry credentials (send the key as llm_api_key)");
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Some("must not have a query or fragment");
    }
    None
}

/// The checks of an update no schema expresses (the URL's parts, the serialized size).
fn check_update(body: &UpdateOrgSettings) -> Result<(), ApiError> {
    let mut v = Validator::new();
    if let MaybeUndefined::Value(url) = &body.llm_base_url
        && let Some(problem) = base_url_problem(url)
    {
        v.add("llm_base_url", "invalid_url", problem);
    }
    if let MaybeUndefined::Value(config) = &body.mcp_config {
        let bytes = serde_json::to_vec(config).map_or(usize::MAX, |b| b.len());
        if bytes > MCP_CONFIG_MAX_BYTES {
            v.add(
                "mcp_config",
                "too_long",
                format!("must be at most {MCP_CONFIG_MAX_BYTES} bytes serialized"),
            );
        } else if crate::http::validate::entries_have_nul(config) {
            v.add(
                "mcp_config",
                "invalid_text",
                "must not contain the NUL character (U+0000) in any key or string",
            );
        }
    }
    v.finish()
}

/// Seals `value` into the secret setting `slot` (insert or replace), or deletes it
/// (`None`): in the caller's transaction, under the policies of app.secrets. Returns
/// whether a row was there to delete.
async fn store_setting(
    tx: &Tx,
    keys: &secrets::MasterKeys,
    slot: &SecretSlot<'_>,
    value: Option<&str>,
) -> Result<bool, ApiError> {
    match value {
        Some(value) => {
            let (sealed, version) = secrets::seal(tx, keys, slot, value).await?;
            tx.execute(
                "insert into app.secrets (user_id, kind, name, ciphertext, key_version, hint)
                 values ($1, 'setting', $2, $3, $4, $5)
                 on conflict on constraint secrets_scope_name_key do update
                    set ciphertext = excluded.ciphertext, key_version = excluded.key_version,
                        hint = excluded.hint, updated_at = now(), value_updated_at = now()",
                &[
                    &slot.user_id,
                    &slot.name,
                    &sealed,
                    &version,
                    &secrets::hint(value),
                ],
            )
            .await?;
            Ok(true)
        }
        None => {
            let deleted = tx
                .execute(
                    "delete from app.secrets
                      where kind = 'setting' and name = $1 and user_id is not distinct from $2",
                    &[&slot.name, &slot.user_id],
                )
                .await?;
            Ok(deleted > 0)
        }
    }
}

/// The signed-in caller's id, as the request context holds it (never from input).
pub(crate) async fn caller_id(tx: &Tx) -> Result<Uuid, ApiError> {
    tx.query_one("select app.current_user_id()", &[])
        .await?
        .get::<_, Option<Uuid>>(0)
        .ok_or_else(crate::http::security::api_key_not_allowed)
}

#[OpenApi(tag = "ApiTags::Settings")]
impl SettingsApi {
    /// Get the organization's settings
    ///
    /// Every member and API key of the organization. Secret-valued settings (the LLM,
    /// search and sandbox API keys) are shown only as `{set, last4}`: their values are
    /// never returned by any operation.
    #[oai(
        path = "/v1/orgs/:org_id/settings",
        method = "get",
        operation_id = "get_org_settings"
    )]
    async fn get(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
    ) -> Result<OrgSettingsResponse, Problems<GetSettingsErrors>> {
        let rows = state
            .read_in_org(
                auth.principal(),
                org_id.0,
                &format!("select {COLUMNS}, {HINTS} from app.org_settings"),
                &[],
            )
            .await?;
        let settings = rows
            .first()
            .map(OrgSettings::from_row)
            .ok_or_else(crate::http::kernel::org_not_found)?;
        Ok(OrgSettingsResponse::Ok(Json(settings)))
    }

    /// Update the organization's settings
    ///
    /// Signed-in admins and owners; API keys never (a leaked key must not point the
    /// organization's model elsewhere). Every change, secret settings included, is made
    /// in one transaction: all of it or, on any invalid field, none. Secret settings are
    /// sealed with the organization's data key (envelope encryption) and are write-only.
    #[oai(
        path = "/v1/orgs/:org_id/settings",
        method = "patch",
        operation_id = "update_org_settings"
    )]
    async fn update(
        &self,
        state: Data<&State>,
        auth: OrgAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        body: ValidJson<UpdateOrgSettings>,
    ) -> Result<OrgSettingsResponse, Problems<UpdateSettingsErrors>> {
        let mut changes = Changes::default();
        let text = |m: &MaybeUndefined<Name>| m.clone().map_value(|t| t.into_inner());
        changes.maybe("agent", "", &text(&body.agent));
        changes.maybe("max_iterations", "", &body.max_iterations);
        changes.maybe(
            "security_analyzer",
            "",
            &body.security_analyzer.map_value(|a| a.as_str()),
        );
        changes.some("confirmation_mode", "", body.confirmation_mode);
        changes.maybe(
            "llm_model",
            "",
            &body.llm_model.clone().map_value(|t| t.into_inner()),
        );
        changes.maybe("llm_base_url", "", &body.llm_base_url);
        changes.some(
            "llm_input_price_per_mtok",
            "::float8",
            body.llm_input_price_per_mtok,
        );
        changes.some(
            "llm_output_price_per_mtok",
            "::float8",
            body.llm_output_price_per_mtok,
        );
        changes.maybe(
            "mcp_config",
            "::jsonb",
            &body
                .mcp_config
                .clone()
                .map_value(|m| Value::Object(m.into_iter().collect())),
        );
        changes.maybe("max_budget_per_task", "::float8", &body.max_budget_per_task);
        changes.maybe("conversation_expiration", "", &body.conversation_expiration);
        changes.some(
            "enable_default_condenser",
            "",
            body.enable_default_condenser,
        );
        changes.some("billing_margin", "::float8", body.billing_margin);
        changes.some(
            "search_language",
            "::text::regconfig",
            body.search_language.map(|l| l.as_str()),
        );
        // Nothing to set: no update (and no row lock held for nothing).
        let any_column = !changes.sets.is_empty();
        changes.sets.push("updated_at = now()".into());
        let sql = format!(
            "update app.org_settings set {} returning org_id",
            changes.sets.join(", ")
        );
        let params = changes.params();
        let secret_changes: Vec<(&str, Option<String>)> = [
            ("llm_api_key", &body.llm_api_key),
            ("search_api_key", &body.search_api_key),
            ("sandbox_api_key", &body.sandbox_api_key),
        ]
        .into_iter()
        .filter_map(|(name, value)| match value {
            MaybeUndefined::Undefined => None,
            MaybeUndefined::Null => Some((name, None)),
            MaybeUndefined::Value(v) => Some((name, Some(v.as_str().to_owned()))),
        })
        .collect();
        let keys = &state.master_keys;
        let settings = state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                // Refused first, for secret settings as for the others: 403 below admin,
                // 403 api_key_not_allowed for a key (the update policy says the same).
                tx.require_signed_in_admin().await?;
                check_update(&body)?;
                if any_column {
                    tx.execute(&sql, &params).await?;
                }
                for (name, value) in &secret_changes {
                    let slot = SecretSlot {
                        org_id: tx.org_id(),
                        user_id: None,
                        kind: "setting",
                        name,
                    };
                    store_setting(tx, keys, &slot, value.as_deref()).await?;
                }
                // No row: the org was deleted while this request ran (its settings went
                // with it) -- 404, as the next request would answer.
                let row = tx
                    .query_opt(
                        &format!("select {COLUMNS}, {HINTS} from app.org_settings"),
                        &[],
                    )
                    .await?
                    .ok_or_else(crate::http::kernel::org_not_found)?;
                Ok(OrgSettings::from_row(&row))
            })
            .await?;
        Ok(OrgSettingsResponse::Ok(Json(settings)))
    }

    /// Set my LLM API key in this organization
    ///
    /// Any signed-in member, for themselves: the assistant uses it instead of the
    /// organization's key. Sealed with the organization's data key; only its hint is
    /// ever returned, and no other member (admins and owners included) can read or
    /// change it. API keys: 403 `api_key_not_allowed`.
    #[oai(
        path = "/v1/orgs/:org_id/members/me/llm-key",
        method = "put",
        operation_id = "set_my_llm_key"
    )]
    async fn set_my_llm_key(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
        body: ValidJson<SetLlmKey>,
    ) -> Result<SecretHintResponse, Problems<SetLlmKeyErrors>> {
        let keys = &state.master_keys;
        let value = body.api_key.as_str();
        state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                let user = caller_id(tx).await?;
                let slot = SecretSlot {
                    org_id: tx.org_id(),
                    user_id: Some(user),
                    kind: "setting",
                    name: MEMBER_LLM_KEY,
                };
                store_setting(tx, keys, &slot, Some(value)).await
            })
            .await?;
        Ok(SecretHintResponse::Ok(Json(SecretHint::of(Some(
            secrets::hint(value),
        )))))
    }

    /// Delete my LLM API key in this organization
    ///
    /// The assistant then uses the organization's key. Idempotent: 204 when there is none.
    #[oai(
        path = "/v1/orgs/:org_id/members/me/llm-key",
        method = "delete",
        operation_id = "delete_my_llm_key"
    )]
    async fn delete_my_llm_key(
        &self,
        state: Data<&State>,
        auth: BearerAuth,
        /// The organization's id.
        org_id: Path<Uuid>,
    ) -> Result<DeleteLlmKeyResponse, Problems<DeleteLlmKeyErrors>> {
        let keys = &state.master_keys;
        state
            .in_org(auth.principal(), org_id.0, Access::ReadWrite, async |tx| {
                let user = caller_id(tx).await?;
                let slot = SecretSlot {
                    org_id: tx.org_id(),
                    user_id: Some(user),
                    kind: "setting",
                    name: MEMBER_LLM_KEY,
                };
                // Idempotent: no key is what was asked for.
                store_setting(tx, keys, &slot, None).await?;
                Ok(())
            })
            .await?;
        Ok(DeleteLlmKeyResponse::NoContent)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_urls_are_http_with_a_host_and_nothing_else() {
        assert_eq!(base_url_problem("https://api.example.com/v1"), None);
        assert_eq!(base_url_problem("http://10.0.0.1:8080"), None);
        for bad in [
            "ftp://example.com",
            "https://user:pw@example.com",
            "https://user@example.com",
            "https://example.com/?key=x",
            "https://example.com/#x",
            "http://",
            "example.com",
            "file:///etc/passwd",
        ] {
            assert!(base_url_problem(bad).is_some(), "{bad}");
        }
        let long = format!("https://example.com/{}", "a".repeat(2048));
        assert!(base_url_problem(&long).is_some());
    }
}
