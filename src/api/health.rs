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
        503 => "The database is unreachable, or its migrations are behind this build (`not_ready`); \
                see `Retry-After`.",
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
    /// 503 (with `Retry-After`) while the database is unreachable or its schema is older
    /// than this build; suitable for a load balancer's readiness probe.
    #[oai(path = "/ready", method = "get", operation_id = "ready")]
    async fn ready(&self, state: Data<&State>) -> Result<ReadyResponse, Problems<ReadyErrors>> {
        let expected = migrate::latest_version();
        let version = state.db.schema_version().await.map_err(|e| {
            tracing::warn!(error = %e, "readiness check failed");
            ApiError::unavailable("the database is not reachable", 2)
        })?;
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
