//! Authentication primitives. Pure: no HTTP types, no database access.

pub mod jwt;
pub mod password;
pub mod tokens;
