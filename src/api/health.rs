//! Liveness and readiness, for load balancers.

use poem::web::Data;
use poem_openapi::{ApiResponse, Object, OpenApi, payload::Json};

use super::ApiTags;
use crate::{
    db::migrate,
    error_set,
    http::{errors::Problems, problem::ApiError},
    state::State,
};

pub struct HealthApi;

/// How long /ready waits for a connection and its one query. A database that is frozen
/// or cut off by the network (no reset, so nothing fails fast) gets a 503 within this,
/// not a probe that hangs until the request timeout.
const READY_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Liveness.
#[derive(Object)]
pub struct Health {
    /// `ok`.
    pub status: String,
}

/// Readiness.
#[derive(Object)]
pub struct Readiness {
    /// `ready`.
    pub status: String,
    /// The newest migration applied to the database.
    pub schema_version: i32,
}

#[derive(ApiResponse)]
pub enum HealthResponse {
    /// The process is up.
    #[oai(status = 200)]
    Ok(Json<Health>),
}

#[derive(ApiResponse)]
pub enum ReadyResponse {
    /// The database is reachable and its schema is current.
    #[oai(status = 200)]
    Ok(Json<Readiness>),
}

error_set! {
    pub ReadyErrors: [] {
        503 => "The database is unreachable or did not answer within 1 s, or its migrations are \
                behind this build (`not_ready`); see `Retry-After`.",
    }
}

#[OpenApi(tag = "ApiTags::Health")]
impl HealthApi {
    /// Liveness: the process is up.
    ///
    /// Touches no database; suitable for a load balancer's liveness probe.
    #[oai(path = "/health", method = "get", operation_id = "health")]
    async fn health(&self) -> HealthResponse {
        HealthResponse::Ok(Json(Health {
            status: "ok".into(),
        }))
    }

    /// Readiness: the database is reachable and migrations are current.
    ///
    /// 503 (with `Retry-After`) while the database is unreachable or does not answer
    /// within 1 s, or its schema is older than this build; suitable for a load balancer's
    /// readiness probe.
    #[oai(path = "/ready", method = "get", operation_id = "ready")]
    async fn ready(&self, state: Data<&State>) -> Result<ReadyResponse, Problems<ReadyErrors>> {
        let expected = migrate::latest_version();
        let version = match tokio::time::timeout(READY_TIMEOUT, state.db.schema_version()).await {
            Ok(version) => version.map_err(|e| {
                tracing::warn!(error = %e, "readiness check failed");
                ApiError::unavailable("the database is not reachable", 2)
            })?,
            Err(_) => {
                tracing::warn!("readiness check: no answer from the database within 1 s");
                return Err(
                    ApiError::unavailable("the database did not answer within 1 s", 2).into(),
                );
            }
        };
        match version {
            Some(v) if v >= expected => Ok(ReadyResponse::Ok(Json(Readiness {
                status: "ready".into(),
                schema_version: v,
            }))),
            other => Err(ApiError {
                code: "not_ready",
                ..ApiError::unavailable(
                    format!("database schema is at {other:?}, this build needs {expected}; run `palisade migrate`"),
                    5,
                )
            }
            .into()),
        }
    }
}
