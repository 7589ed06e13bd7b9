//! SQLSTATE mapping: the only place that knows PostgreSQL error codes.

use deadpool_postgres::PoolError;
use tokio_postgres::error::SqlState;

/// Raised by app.set_request_context() when the token's session is revoked or expired.
const SESSION_INACTIVE: &str = "PT401";
/// SQLSTATE class of the rules in policies/ (`app.refuse()`): `PT` + an HTTP status.
const RULE_CLASS: &str = "PT";

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database pool: {0}")]
    Pool(#[from] PoolError),
    /// For the log: the SQLSTATE and the server's message (clients never see it).
    #[error("database: {}", describe(.0))]
    Pg(#[from] tokio_postgres::Error),
}

fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!(
            "{} {}{}",
            db.code().code(),
            db.message(),
            db.where_().map(|w| format!(" ({w})")).unwrap_or_default()
        ),
        None => err.to_string(),
    }
}

/// What a database error means to a client.
#[derive(Debug, PartialEq, Eq)]
pub enum DbFailure {
    /// A unique constraint, by name (e.g. `users_email_key`).
    UniqueViolation(String),
    /// A check constraint, by name.
    CheckViolation(String),
    /// A foreign key, by name.
    ForeignKeyViolation(String),
    /// A policy or grant refused the action (42501), with PostgreSQL's message.
    InsufficientPrivilege(String),
    /// The access token's session was revoked or has expired.
    SessionInactive,
    /// A rule in policies/ refused the request: SQLSTATE `PT4xx` (e.g. `PT409`), where
    /// `4xx` is the HTTP status, with the problem's stable code as the HINT (e.g.
    /// `last_owner`) and a client-safe MESSAGE. Raised through `app.refuse()`.
    Rule {
        status: u16,
        code: String,
        message: String,
        /// The rule's DETAIL: a JSON object of problem extension members (e.g.
        /// `plan_limit_reached`'s `limit`, `used`, `plan`), or empty.
        detail: String,
    },
    /// Malformed input reached SQL (e.g. invalid text representation).
    InvalidInput(String),
    /// The database is unreachable, overloaded or timed out: retry later.
    Unavailable,
    /// Anything else: a bug.
    Other,
}

impl DbError {
    /// The SQLSTATE class (its first two characters), `pool` for a pool error and
    /// `connection` for an error without a SQLSTATE (I/O, a closed connection).
    pub fn sqlstate_class(&self) -> &str {
        match self {
            DbError::Pool(_) => "pool",
            DbError::Pg(err) => err
                .as_db_error()
                .and_then(|db| db.code().code().get(..2))
                .unwrap_or("connection"),
        }
    }

    pub fn failure(&self) -> DbFailure {
        let err = match self {
            DbError::Pool(_) => return DbFailure::Unavailable,
            DbError::Pg(err) => err,
        };
        let Some(db) = err.as_db_error() else {
            // I/O errors, closed connections.
            return DbFailure::Unavailable;
        };
        let constraint = || db.constraint().unwrap_or_default().to_owned();
        let code = db.code();
        // app.set_request_context() raises a bare PT401; PT401 with a hint is a rule's.
        if code.code() == SESSION_INACTIVE && db.hint().is_none_or(str::is_empty) {
            return DbFailure::SessionInactive;
        }
        if let Some(status) = code
            .code()
            .strip_prefix(RULE_CLASS)
            .and_then(|s| s.parse::<u16>().ok())
            .filter(|s| (400..500).contains(s))
        {
            return DbFailure::Rule {
                status,
                code: db.hint().unwrap_or_default().to_owned(),
                message: db.message().to_owned(),
                detail: db.detail().unwrap_or_default().to_owned(),
            };
        }
        match *code {
            SqlState::UNIQUE_VIOLATION => DbFailure::UniqueViolation(constraint()),
            SqlState::CHECK_VIOLATION => DbFailure::CheckViolation(constraint()),
            SqlState::FOREIGN_KEY_VIOLATION => DbFailure::ForeignKeyViolation(constraint()),
            SqlState::INSUFFICIENT_PRIVILEGE => {
                DbFailure::InsufficientPrivilege(db.message().to_owned())
            }
            SqlState::INVALID_TEXT_REPRESENTATION
            | SqlState::CHARACTER_NOT_IN_REPERTOIRE
            | SqlState::UNTRANSLATABLE_CHARACTER
            | SqlState::STRING_DATA_RIGHT_TRUNCATION
            | SqlState::NUMERIC_VALUE_OUT_OF_RANGE => {
                DbFailure::InvalidInput(db.message().to_owned())
            }
            SqlState::QUERY_CANCELED
            | SqlState::LOCK_NOT_AVAILABLE
            | SqlState::T_R_SERIALIZATION_FAILURE
            | SqlState::T_R_DEADLOCK_DETECTED
            | SqlState::TOO_MANY_CONNECTIONS
            | SqlState::ADMIN_SHUTDOWN
            | SqlState::CRASH_SHUTDOWN
            | SqlState::CANNOT_CONNECT_NOW => DbFailure::Unavailable,
            _ => DbFailure::Other,
        }
    }
}
