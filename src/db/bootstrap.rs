//! Roles and database for the embedded cluster, created as its superuser. For an
//! external database a DBA runs the same statements once (README, "For DBAs").

use anyhow::Context;
use tokio_postgres::NoTls;

use super::{OWNER_ROLE, embedded::EmbeddedCluster};

/// The role setup, idempotent. The runtime login role can never bypass RLS and owns
/// nothing; its timeouts bound every statement, lock wait and idle transaction.
pub const ROLES_SQL: &str = r#"
do $$
begin
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'palisade_owner') then
        create role palisade_owner login nosuperuser nobypassrls nocreaterole nocreatedb;
    end if;
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'palisade_runtime') then
        create role palisade_runtime nologin nosuperuser nobypassrls noinherit;
    end if;
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'palisade_app') then
        create role palisade_app login nosuperuser nobypassrls nocreaterole nocreatedb inherit;
    end if;
end
$$;
grant palisade_runtime to palisade_app;
alter role palisade_app set statement_timeout = '5s';
alter role palisade_app set lock_timeout = '2s';
alter role palisade_app set idle_in_transaction_session_timeout = '15s';
"#;

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
    Ok(())
}
