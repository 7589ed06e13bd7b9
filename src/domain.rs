//! Domain types shared by the kernel and the resources: the organization role, mirrored
//! one to one by the PostgreSQL enum `app.org_role` (sql/V5__org_role_type.sql).
//!
//! A `Role` goes to PostgreSQL as the enum and comes back as text: queries select
//! `role::text` (see `crate::db`, "results carry built-in types only").

use std::{error::Error, fmt};

use bytes::BytesMut;
use poem_openapi::Enum;
use tokio_postgres::types::{FromSql, IsNull, ToSql, Type, to_sql_checked};

/// A role in an organization, ranked `owner` > `admin` > `member` > `viewer`.
#[derive(Enum, serde::Serialize, Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[oai(rename_all = "lowercase")]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Reads org data.
    Viewer,
    /// Reads org data and creates or edits projects and other tenant data.
    Member,
    /// Everything a member can, plus: manage members, invitations and org settings.
    Admin,
    /// Everything an admin can, plus: delete the org, grant or remove the owner role,
    /// transfer ownership.
    Owner,
}

/// The PostgreSQL type this mirrors.
const PG_TYPE: &str = "org_role";

impl Role {
    pub const ALL: [Role; 4] = [Role::Viewer, Role::Member, Role::Admin, Role::Owner];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Admin => "admin",
            Role::Member => "member",
            Role::Viewer => "viewer",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == text)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

// Enum values travel as their label, in text and binary alike.
impl ToSql for Role {
    fn to_sql(&self, _: &Type, out: &mut BytesMut) -> Result<IsNull, Box<dyn Error + Sync + Send>> {
        out.extend_from_slice(self.as_str().as_bytes());
        Ok(IsNull::No)
    }

    fn accepts(ty: &Type) -> bool {
        ty.name() == PG_TYPE
    }

    to_sql_checked!();
}

impl<'a> FromSql<'a> for Role {
    fn from_sql(_: &Type, raw: &'a [u8]) -> Result<Self, Box<dyn Error + Sync + Send>> {
        let text = std::str::from_utf8(raw)?;
        Role::parse(text).ok_or_else(|| format!("unknown {PG_TYPE} value {text:?}").into())
    }

    fn accepts(ty: &Type) -> bool {
        ty.name() == PG_TYPE || *ty == Type::TEXT
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranks_in_declaration_order_like_the_sql_enum() {
        assert!(
            Role::Owner > Role::Admin && Role::Admin > Role::Member && Role::Member > Role::Viewer
        );
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()), Some(role));
        }
        assert_eq!(Role::parse("root"), None);
    }
}
