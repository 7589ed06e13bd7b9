//! Roles and database for the embedded cluster, created as its superuser. For an
//! external database a DBA runs the same files once (deploy/roles.sql, then
//! deploy/database.sql in the database; README, "For DBAs").

use anyhow::Context;
use tokio_postgres::NoTls;

use super::{OWNER_ROLE, embedded::EmbeddedCluster};

/// The role setup (deploy/roles.sql: the one place roles are written), idempotent.
pub const ROLES_SQL: &str = include_str!("../../deploy/roles.sql");
/// What a superuser sets in Palisade's database itself (deploy/database.sql), idempotent.
pub const DATABASE_SQL: &str = include_str!("../../deploy/database.sql");

/// Creates roles and database `dbname` (owned by the owner role) if missing.
pub async fn embedded(cluster: &EmbeddedCluster, dbname: &str) -> anyhow::Result<()> {
    let (client, conn) = cluster
        .pg_config(super::embedded::SUPERUSER, "postgres")
        .connect(NoTls)
        .await
        .context("connecting to the embedded cluster as its superuser")?;
    let conn = tokio::spawn(conn);
    client
        .batch_execute(ROLES_SQL)
        .await
        .context("creating roles")?;
    let exists = client
        .query_opt(
            "select 1 from pg_catalog.pg_database where datname = $1",
            &[&dbname],
        )
        .await?
        .is_some();
    if !exists {
        client
            .batch_execute(&format!("create database \"{dbname}\" owner {OWNER_ROLE}"))
            .await
            .context("creating the database")?;
    }
    drop(client);
    let _ = conn.await;
    let (client, conn) = cluster
        .pg_config(super::embedded::SUPERUSER, dbname)
        .connect(NoTls)
        .await
        .context("connecting to the database as the cluster's superuser")?;
    let conn = tokio::spawn(conn);
    client
        .batch_execute(DATABASE_SQL)
        .await
        .context("applying deploy/database.sql")?;
    drop(client);
    let _ = conn.await;
    Ok(())
}
