-- Run once in Palisade's database as a superuser, after deploy/roles.sql (the embedded
-- default runs exactly this file, src/db/bootstrap.rs; compose runs it at first start):
--
--     psql -d palisade -f deploy/database.sql
--
-- Every tenant's requests run as the same login role, and PostgreSQL lets a role cancel
-- or terminate any backend of its own role. SQL injected into one request could end
-- every other tenant's in-flight request. Nothing in Palisade needs these functions (a
-- superuser or pg_signal_backend member still can): revoke them from PUBLIC here.
-- Function privileges live in each database's catalog, hence a file of its own.
-- `palisade audit` reports a runtime role that can still signal (runtime_can_signal).
revoke execute on function pg_catalog.pg_cancel_backend(integer) from public;
revoke execute on function pg_catalog.pg_terminate_backend(integer, bigint) from public;
