-- The roles Palisade needs, in one place. Run once per cluster as a superuser (or a
-- CREATEROLE role); idempotent. The embedded default runs exactly this file
-- (src/db/bootstrap.rs); compose runs it at first start; for your own database, run it
-- with psql, then set a password on each LOGIN role.
--
--   palisade_owner        LOGIN   owns schema app and every object in it; runs migrations
--                                 and applies policies/. Never serves requests.
--   palisade_runtime      NOLOGIN the request role: tenant SQL, under RLS, with the
--                                 grants in policies/. Member: palisade_app.
--   palisade_credentials  NOLOGIN the credential role: sign-in, sessions, refresh, password
--                                 reset, email verification, invitation lookup by token.
--                                 Member: palisade_auth.
--   palisade_jobs         NOLOGIN the worker role: the email outbox, password-reset mail,
--                                 retention. Member: palisade_worker.
--
-- Three pools, three login roles, none a member of another: SQL that runs on the request
-- pool (the one that runs tenant queries) cannot execute a credential or worker function
-- at all. Every login role is NOSUPERUSER NOBYPASSRLS and owns nothing; the server checks
-- it at start and refuses to serve otherwise. The statement, lock and idle-in-transaction
-- timeouts below are also set by the server on every connection it opens (a role can
-- ALTER ROLE itself), and `palisade audit` reports role settings that differ from these.
do $$
declare
    r record;
begin
    for r in select * from (values
            ('palisade_owner', true), ('palisade_runtime', false), ('palisade_credentials', false),
            ('palisade_jobs', false), ('palisade_app', true), ('palisade_auth', true),
            ('palisade_worker', true)) as t(name, login)
    loop
        if not exists (select 1 from pg_catalog.pg_roles where rolname = r.name) then
            execute pg_catalog.format('create role %I %s nosuperuser nobypassrls nocreaterole nocreatedb noreplication',
                                      r.name, case when r.login then 'login' else 'nologin' end);
        end if;
    end loop;
end
$$;
grant palisade_runtime to palisade_app;
grant palisade_credentials to palisade_auth;
grant palisade_jobs to palisade_worker;
alter role palisade_app set statement_timeout = '5s';
alter role palisade_app set lock_timeout = '2s';
alter role palisade_app set idle_in_transaction_session_timeout = '15s';
alter role palisade_auth set statement_timeout = '5s';
alter role palisade_auth set lock_timeout = '2s';
alter role palisade_auth set idle_in_transaction_session_timeout = '15s';
alter role palisade_worker set statement_timeout = '30s';
alter role palisade_worker set lock_timeout = '2s';
alter role palisade_worker set idle_in_transaction_session_timeout = '60s';
