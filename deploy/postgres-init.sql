-- Runs once when the compose Postgres volume is created, as the superuser.
-- The same role setup a DBA runs for an external database (README "For DBAs").
-- Passwords here are for local compose use only; production refuses them.
create role palisade_owner login password 'owner-dev-password' nosuperuser nobypassrls nocreaterole nocreatedb;
create role palisade_runtime nologin nosuperuser nobypassrls noinherit;
create role palisade_app login password 'app-dev-password' nosuperuser nobypassrls nocreaterole nocreatedb inherit;
grant palisade_runtime to palisade_app;
alter role palisade_app set statement_timeout = '5s';
alter role palisade_app set lock_timeout = '2s';
alter role palisade_app set idle_in_transaction_session_timeout = '15s';
create database palisade owner palisade_owner;
