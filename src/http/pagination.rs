//! Keyset pagination: `?limit=&cursor=` -> `{ items, next_cursor }`, ordered by
//! (created_at, id). The cursor is opaque to clients. Page types are declared with
//! [`page!`](crate::page), one line each.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use chrono::{DateTime, Utc};
use poem::http::StatusCode;
use uuid::Uuid;

use super::problem::ApiError;

pub const DEFAULT_LIMIT: u32 = 20;
pub const MAX_LIMIT: u32 = 100;

/// Position after which the next page starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cursor {
    pub created_at: DateTime<Utc>,
    pub id: Uuid,
}

impl Cursor {
    pub fn encode(&self) -> String {
        URL_SAFE_NO_PAD.encode(format!(
            "{}|{}",
            self.created_at.timestamp_micros(),
            self.id
        ))
    }

    pub fn decode(text: &str) -> Result<Self, ApiError> {
        let invalid = || {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_cursor",
                "the cursor is not valid; use next_cursor from a previous page",
            )
        };
        let raw = URL_SAFE_NO_PAD.decode(text).map_err(|_| invalid())?;
        let raw = String::from_utf8(raw).map_err(|_| invalid())?;
        let (micros, id) = raw.split_once('|').ok_or_else(invalid)?;
        let created_at = DateTime::from_timestamp_micros(micros.parse().map_err(|_| invalid())?)
            .ok_or_else(invalid)?;
        // Every row was created in this era; a cursor outside it was not made by us (and
        // PostgreSQL would refuse a timestamp before 4713 BC).
        if !(1..=9999).contains(&chrono::Datelike::year(&created_at)) {
            return Err(invalid());
        }
        Ok(Cursor {
            created_at,
            id: id.parse().map_err(|_| invalid())?,
        })
    }
}

/// Declares a page of `$item`: `{ items, next_cursor }`.
#[macro_export]
macro_rules! page {
    ($(#[doc = $doc:literal])+ $name:ident of $item:ty) => {
        $(#[doc = $doc])+
        #[derive(poem_openapi::Object, serde::Serialize)]
        pub struct $name {
            pub items: Vec<$item>,
            /// Pass as `cursor` to get the next page; null on the last page.
            pub next_cursor: Option<String>,
        }

        impl $name {
            /// The page from rows fetched with `limit + 1` (see [`split_page`](crate::http::pagination::split_page)).
            pub fn from_rows(
                items: Vec<$item>,
                limit: i64,
                key: impl Fn(&$item) -> $crate::http::pagination::Cursor,
            ) -> Self {
                let (items, next_cursor) = $crate::http::pagination::split_page(items, limit, key);
                Self { items, next_cursor }
            }
        }
    };
}

/// Validated `limit` and the decoded `cursor`.
pub fn page_params(
    limit: Option<u32>,
    cursor: Option<&str>,
) -> Result<(i64, Option<Cursor>), ApiError> {
    let limit = limit.unwrap_or(DEFAULT_LIMIT);
    if !(1..=MAX_LIMIT).contains(&limit) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            format!("limit must be between 1 and {MAX_LIMIT}"),
        ));
    }
    let cursor = match cursor {
        None | Some("") => None,
        Some(text) => Some(Cursor::decode(text)?),
    };
    Ok((limit as i64, cursor))
}

/// Given rows fetched with `limit + 1`, trims the extra row and returns the next cursor.
pub fn split_page<T>(
    mut items: Vec<T>,
    limit: i64,
    key: impl Fn(&T) -> Cursor,
) -> (Vec<T>, Option<String>) {
    if items.len() as i64 > limit {
        items.truncate(limit as usize);
        let next = items.last().map(|last| key(last).encode());
        (items, next)
    } else {
        (items, None)
    }
}

/// The rows of one keyset page, oldest first: `select_where` is `select ... from ... where
/// <condition>` (the tenant filter comes from RLS; use `where true` when there is no other
/// condition) and `key` the two ordering columns, e.g. `m.created_at, m.user_id`. Fetches
/// `limit + 1` rows so [`split_page`] can tell whether a next page exists.
pub async fn fetch_page(
    tx: &crate::db::Tx,
    select_where: &str,
    key: &str,
    limit: i64,
    after: Option<Cursor>,
) -> Result<Vec<tokio_postgres::Row>, crate::db::DbError> {
    match after {
        None => {
            tx.query(
                &format!("{select_where} order by {key} limit $1"),
                &[&(limit + 1)],
            )
            .await
        }
        Some(c) => {
            tx.query(
                &format!("{select_where} and ({key}) > ($2, $3) order by {key} limit $1"),
                &[&(limit + 1), &c.created_at, &c.id],
            )
            .await
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_round_trips_and_rejects_garbage() {
        let c = Cursor {
            created_at: DateTime::from_timestamp_micros(1_700_000_000_123_456).unwrap(),
            id: Uuid::new_v4(),
        };
        assert_eq!(Cursor::decode(&c.encode()).unwrap(), c);
        assert!(Cursor::decode("!!!").is_err());
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode("12|nope")).is_err());
        let before_4713_bc = format!("{}|{}", -300_000_000_000_000_000i64, Uuid::new_v4());
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode(before_4713_bc)).is_err());
        let year_0 = format!("{}|{}", -62_167_219_200_000_000i64, Uuid::new_v4());
        assert!(Cursor::decode(&URL_SAFE_NO_PAD.encode(year_0)).is_err());
        assert!(page_params(Some(0), None).is_err());
        assert!(page_params(Some(101), None).is_err());
        assert_eq!(page_params(None, None).unwrap().0, 20);
    }
}
