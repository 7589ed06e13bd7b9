-- context: the small, stable helpers every policy reads the request context through.
--
-- The server sets app.current_user_id / app.current_session_id / app.current_org_id /
-- app.current_org_role transaction-locally (set_config(..., true)) through
-- app.set_request_context() in functions_auth.sql, as the first statement of each
-- request transaction. Unset (NULL) and reset ('') both read as NULL here, so a
-- policy comparing against them matches nothing: fail closed.
-- Policies call these wrapped in (select ...) so PostgreSQL evaluates them once per
-- statement (an InitPlan), not once per row.

create or replace function app.current_user_id() returns uuid
    language sql stable parallel safe
    as $$ select nullif(pg_catalog.current_setting('app.current_user_id', true), '')::uuid $$;

create or replace function app.current_session_id() returns uuid
    language sql stable parallel safe
    as $$ select nullif(pg_catalog.current_setting('app.current_session_id', true), '')::uuid $$;

create or replace function app.current_org_id() returns uuid
    language sql stable parallel safe
    as $$ select nullif(pg_catalog.current_setting('app.current_org_id', true), '')::uuid $$;

create or replace function app.current_org_role() returns text
    language sql stable parallel safe
    as $$ select nullif(pg_catalog.current_setting('app.current_org_role', true), '') $$;

-- owner > admin > member > viewer; anything else (no membership) ranks 0.
create or replace function app.role_rank(p_role text) returns integer
    language sql immutable parallel safe
    as $$
        select case p_role
            when 'owner' then 4 when 'admin' then 3 when 'member' then 2 when 'viewer' then 1
            else 0 end
    $$;

-- True when the current org role ranks at least p_min; used in read-only checks.
create or replace function app.has_org_role(p_min text) returns boolean
    language sql stable parallel safe
    as $$ select app.role_rank(app.current_org_role()) >= app.role_rank(p_min) $$;

-- Like has_org_role, but raises insufficient_privilege (42501, mapped to HTTP 403
-- `forbidden`) instead of returning false, so a write refused for the caller's role
-- is told apart from a row that does not exist (404). Only evaluated once a row of
-- the caller's own org reached the check: it never reveals another org's rows.
create or replace function app.assert_org_role(p_min text) returns boolean
    language plpgsql stable parallel safe
    as $$
    begin
        if app.role_rank(app.current_org_role()) < app.role_rank(p_min) then
            raise exception 'this action needs the % role or higher in the organization', p_min
                using errcode = 'insufficient_privilege';
        end if;
        return true;
    end
    $$;

-- True only inside the security definer functions of policies/functions_*.sql, which
-- run as the owner of schema app. The runtime role never is, and can never become,
-- that owner (the server checks it at start), so this cannot be switched on by
-- request SQL. It is what lets those audited functions cross tenants while RLS stays
-- forced for everyone, the owner included.
create or replace function app.is_definer() returns boolean
    language sql stable parallel safe
    as $$
        select current_user::text = (
            select pg_catalog.pg_get_userbyid(n.nspowner)::text
              from pg_catalog.pg_namespace n where n.nspname = 'app')
    $$;

revoke all on schema app from public;
grant usage on schema app to palisade_runtime;

revoke all on function app.current_user_id(), app.current_session_id(), app.current_org_id(),
    app.current_org_role(), app.role_rank(text), app.has_org_role(text),
    app.assert_org_role(text), app.is_definer() from public;
grant execute on function app.current_user_id(), app.current_session_id(), app.current_org_id(),
    app.current_org_role(), app.role_rank(text), app.has_org_role(text),
    app.assert_org_role(text), app.is_definer() to palisade_runtime;
