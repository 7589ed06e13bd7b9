//! Authentication primitives. Pure: no HTTP types, no database access.

pub mod api_key;
pub mod common_passwords;
pub mod jwt;
pub mod password;
