-- context: the request context, sealed, and the only way policies read it.
--
-- A request transaction starts with app.set_request_context() (functions_sessions.sql),
-- which proves the session and the membership and then binds the context with
-- app.bind_context(): transaction-local settings app.current_user_id,
-- app.current_session_id, app.current_org_id, app.current_org_role and
-- app.current_api_key_id, plus
-- app.context_mac = HMAC-SHA256(key, backend pid | transaction start | those five values),
-- keyed by app.context_key, which only the owner's security definer functions can read.
--
-- The helpers below return the context only while that MAC verifies; otherwise NULL,
-- which matches nothing. SQL that writes the settings itself -- set_config(..., true or
-- false), SET, SET LOCAL -- gets no context at all, and neither does a MAC replayed from
-- another transaction or another connection (the pid and the transaction start time are
-- in it). That holds even for SQL injected into the request role's own statements.
--
-- One function verifies, app.verified_context(): security definer (to read the key),
-- PL/pgSQL. The helpers policies call -- app.current_*(), app.has_org_role(),
-- app.is_definer() -- are plain SQL expressions over it, neither definer nor with a SET
-- clause (every name in them is schema-qualified, operators too), so the planner inlines
-- them into the policy. Policies wrap them in (select ...), so each is evaluated once per
-- statement; all are parallel restricted (a parallel worker has another pid). Unset and ''
-- read as NULL: fail closed. Guards test `(select app.is_definer())` first: an initplan runs
-- only when the OR reaches it, so the definer functions' own reads never verify a context.
--
-- Why this shape: a SQL function that cannot be inlined (security definer, or a SET
-- clause) is parsed and planned again at every call. Measured (10,000 calls in one
-- session): the old SQL app.context_mac 129 us a call, app.is_definer 48 us, each
-- app.current_*() about 200 us; with this shape the list transaction's throughput is
-- back near what it was before the context was sealed (benches/README-performance.md).

-- True only inside the security definer functions of policies/, which run as the owner
-- of schema app. No runtime role is, or can become, that owner (the server checks it at
-- start), so request SQL cannot switch this on. It is what lets those audited functions
-- cross tenants while RLS stays forced for everyone, the owner included.
-- Written with the owner's name as a constant (read from the catalog when this file is
-- applied, by the owner), so it is a plain expression the planner inlines: no catalog
-- lookup in every policy check. Re-applying policies/ after an ownership change updates it.
do $$
begin
    execute pg_catalog.format(
        'create or replace function app.is_definer() returns boolean
             language sql stable parallel safe
             as %L',
        pg_catalog.format('select current_user operator(pg_catalog.=) %L::name',
            (select pg_catalog.pg_get_userbyid(n.nspowner) from pg_catalog.pg_namespace n
              where n.nspname = 'app')));
end
$$;
comment on function app.is_definer() is
    'True only inside the security definer functions of policies/ (they run as the schema owner).';

-- The context key: created once, here, from 366 bits of pg_strong_random() (three v4
-- UUIDs) hashed to 256. Rotating it (update app.context_key) only invalidates contexts
-- of transactions in flight.
insert into app.context_key (inner_pad, outer_pad)
select pg_catalog.decode(pg_catalog.string_agg(pg_catalog.lpad(pg_catalog.to_hex(pg_catalog.get_byte(k.key, i) # 54), 2, '0'), '' order by i), 'hex'),
       pg_catalog.decode(pg_catalog.string_agg(pg_catalog.lpad(pg_catalog.to_hex(pg_catalog.get_byte(k.key, i) # 92), 2, '0'), '' order by i), 'hex')
  from (select pg_catalog.sha256(pg_catalog.convert_to(
                   pg_catalog.gen_random_uuid()::text || pg_catalog.gen_random_uuid()::text
                   || pg_catalog.gen_random_uuid()::text, 'UTF8'))
               || pg_catalog.decode(pg_catalog.repeat('00', 32), 'hex') as key) k
 cross join pg_catalog.generate_series(0, 63) as i
where not exists (select 1 from app.context_key)
group by k.key;

alter table app.context_key enable row level security;
alter table app.context_key force row level security;
drop policy if exists context_key_guard on app.context_key;
create policy context_key_guard on app.context_key as restrictive for all
    to palisade_runtime, palisade_credentials, palisade_jobs
    using (false) with check (false);
drop policy if exists context_key_all_definer on app.context_key;
create policy context_key_all_definer on app.context_key for all to palisade_owner
    using (true) with check (true);
revoke all on app.context_key from public, palisade_runtime, palisade_credentials, palisade_jobs;
comment on policy context_key_guard on app.context_key is
    'Restrictive: no lane reads the key. Only the security definer functions of context.sql do, through context_key_all_definer (no policy expression in a verification, which every request statement runs).';
comment on policy context_key_all_definer on app.context_key is
    'app.context_mac() reads it; nothing else does.';

-- The context's shape changed (issue 10 added the API key): drop the old signatures.
drop function if exists app.context_mac(text, text, text, text);
drop function if exists app.bind_context(uuid, uuid, uuid, app.org_role);
do $$
begin
    if exists (select 1 from pg_catalog.pg_proc p
                where p.oid = pg_catalog.to_regprocedure('app.verified_context()')
                  and pg_catalog.pg_get_function_result(p.oid) not like '%api_key_id%') then
        drop function app.verified_context();
    end if;
end
$$;

-- The MAC of a context, as text values, bound to this backend and this transaction, under
-- the key's pads (read by the caller from app.context_key). An expression, so the planner
-- inlines it into the definer functions that use it.
drop function if exists app.context_mac(text, text, text, text, text);
create or replace function app.context_mac(
    p_inner bytea, p_outer bytea, p_user text, p_session text, p_org text, p_role text, p_key text)
returns bytea
language sql stable parallel restricted
as $$
    select pg_catalog.sha256(p_outer operator(pg_catalog.||) pg_catalog.sha256(p_inner operator(pg_catalog.||)
               pg_catalog.convert_to(pg_catalog.concat_ws('|', pg_catalog.pg_backend_pid(),
                   extract(epoch from pg_catalog.transaction_timestamp()),
                   p_user, p_session, p_org, p_role, p_key), 'UTF8')))
$$;
comment on function app.context_mac(bytea, bytea, text, text, text, text, text) is
    'HMAC-SHA256 (given the key pads of app.context_key) of a request context, bound to this backend pid and transaction start. Internal.';

-- Binds a context for the rest of the transaction. Internal: called by
-- app.set_request_context(), app.set_api_key_context() and the credential functions that
-- create an account. A signed-in user's context has a user and a session; an API key's
-- has the key and no user: it reaches its org's data, never a person's.
create or replace function app.bind_context(
    p_user uuid, p_session uuid, p_org uuid, p_role app.org_role, p_api_key uuid default null)
returns void
language plpgsql volatile security definer parallel restricted
set search_path = pg_catalog, pg_temp
as $$
declare
    v_user text := coalesce(p_user::text, '');
    v_session text := coalesce(p_session::text, '');
    v_org text := coalesce(p_org::text, '');
    v_role text := coalesce(p_role::text, '');
    v_key text := coalesce(p_api_key::text, '');
begin
    perform pg_catalog.set_config('app.current_user_id', v_user, true),
            pg_catalog.set_config('app.current_session_id', v_session, true),
            pg_catalog.set_config('app.current_org_id', v_org, true),
            pg_catalog.set_config('app.current_org_role', v_role, true),
            pg_catalog.set_config('app.current_api_key_id', v_key, true),
            pg_catalog.set_config('app.context_mac', pg_catalog.encode(
                (select app.context_mac(k.inner_pad, k.outer_pad, v_user, v_session, v_org, v_role, v_key)
                   from app.context_key k), 'hex'), true);
end
$$;
comment on function app.bind_context(uuid, uuid, uuid, app.org_role, uuid) is
    'Sets the sealed request context transaction-locally. Internal: only definer functions that proved who the caller is call it.';

-- The request's audit context -- client address, user agent, request id, as the server
-- saw them -- sealed the same way: app.request_meta, and app.request_meta_mac =
-- HMAC-SHA256(key, backend pid | transaction start | 'meta' | the JSON text). The tag
-- 'meta' stands where a context has its user id (a UUID), so neither MAC can pass for
-- the other. Bound by app.set_request_context() and app.set_api_key_context() for
-- write transactions, and on the credential lane by the server (app.bind_request_meta
-- is granted to that lane only). Audit rows read it through app.request_meta(): request
-- SQL that sets the setting itself gets '{}' into the log, not its forgery.
create or replace function app.bind_request_meta(p_meta jsonb) returns void
language plpgsql volatile security definer parallel restricted
set search_path = pg_catalog, pg_temp
as $$
declare
    v_meta text := coalesce(p_meta, '{}'::jsonb)::text;
begin
    if pg_catalog.jsonb_typeof(p_meta) is distinct from 'object' or pg_catalog.octet_length(v_meta) > 2048 then
        raise exception 'request meta must be a JSON object of at most 2048 bytes' using errcode = '22023';
    end if;
    perform pg_catalog.set_config('app.request_meta', v_meta, true),
            pg_catalog.set_config('app.request_meta_mac', pg_catalog.encode(
                (select app.context_mac(k.inner_pad, k.outer_pad, 'meta', v_meta, '', '', '')
                   from app.context_key k), 'hex'), true);
end
$$;
comment on function app.bind_request_meta(jsonb) is
    'Seals the request''s audit context (ip, user agent, request id) for this transaction. Internal, and the credential lane''s.';

create or replace function app.request_meta() returns jsonb
language plpgsql stable security definer parallel restricted
set search_path = pg_catalog, pg_temp
as $$
declare
    v_meta text := pg_catalog.current_setting('app.request_meta', true);
    v_mac text := pg_catalog.current_setting('app.request_meta_mac', true);
begin
    if v_meta is null or v_meta = '' or v_mac is null or v_mac = '' then
        return '{}'::jsonb;
    end if;
    if (select pg_catalog.encode(app.context_mac(k.inner_pad, k.outer_pad, 'meta', v_meta, '', '', ''), 'hex')
          from app.context_key k) is distinct from v_mac then
        return '{}'::jsonb;
    end if;
    return v_meta::jsonb;
end
$$;
comment on function app.request_meta() is
    'The sealed audit context of this request transaction when its MAC verifies, else {}. Internal: audit writers.';

-- The context, if its MAC verifies; one row of NULLs otherwise.
create or replace function app.verified_context(
    out user_id uuid, out session_id uuid, out org_id uuid, out org_role app.org_role, out api_key_id uuid)
language plpgsql stable security definer parallel restricted
set search_path = pg_catalog, pg_temp
as $$
declare
    v_user text := pg_catalog.current_setting('app.current_user_id', true);
    v_session text := pg_catalog.current_setting('app.current_session_id', true);
    v_org text := pg_catalog.current_setting('app.current_org_id', true);
    v_role text := pg_catalog.current_setting('app.current_org_role', true);
    v_key text := pg_catalog.current_setting('app.current_api_key_id', true);
    v_mac text := pg_catalog.current_setting('app.context_mac', true);
begin
    if v_mac is null or v_mac = '' or v_user is null then
        return;
    end if;
    -- `is distinct from`: with no key the MAC is NULL, and NULL must not pass.
    if (select pg_catalog.encode(app.context_mac(k.inner_pad, k.outer_pad, v_user, v_session, v_org,
                                                 v_role, v_key), 'hex')
          from app.context_key k) is distinct from v_mac then
        return;
    end if;
    -- Verified: these texts were written by app.bind_context(), so they cast cleanly.
    user_id := nullif(v_user, '')::uuid;
    session_id := nullif(v_session, '')::uuid;
    org_id := nullif(v_org, '')::uuid;
    org_role := nullif(v_role, '')::app.org_role;
    api_key_id := nullif(v_key, '')::uuid;
end
$$;
comment on function app.verified_context() is
    'The request context when its MAC verifies, else NULLs. Read through the app.current_*() helpers (which policies inline); every lane may call it.';

create or replace function app.current_user_id() returns uuid
    language sql stable parallel restricted
    as $$ select (app.verified_context()).user_id $$;
comment on function app.current_user_id() is 'The signed-in user of the verified request context, else NULL.';

create or replace function app.current_session_id() returns uuid
    language sql stable parallel restricted
    as $$ select (app.verified_context()).session_id $$;
comment on function app.current_session_id() is 'The session of the verified request context, else NULL.';

create or replace function app.current_org_id() returns uuid
    language sql stable parallel restricted
    as $$ select (app.verified_context()).org_id $$;
comment on function app.current_org_id() is
    'The org of the verified request context -- set only when the user is a member of it -- else NULL.';

create or replace function app.current_org_role() returns app.org_role
    language sql stable parallel restricted
    as $$ select (app.verified_context()).org_role $$;
comment on function app.current_org_role() is 'The caller''s role in the org of the verified request context, else NULL.';

create or replace function app.current_api_key_id() returns uuid
    language sql stable parallel restricted
    as $$ select (app.verified_context()).api_key_id $$;
comment on function app.current_api_key_id() is
    'The API key of the verified request context (a request authenticated by a key), else NULL.';

-- True when the caller's role in the org in context ranks at least p_min.
create or replace function app.has_org_role(p_min app.org_role) returns boolean
    language sql stable parallel restricted
    as $$ select coalesce((app.verified_context()).org_role operator(pg_catalog.>=) p_min, false) $$;
comment on function app.has_org_role(app.org_role) is
    'True when the caller''s role in the org in context ranks at least p_min (read-only checks).';

-- The one role check. Returns true, or raises insufficient_privilege (42501, HTTP 403
-- `forbidden`) -- so a write refused for the caller's role is told apart from a row that
-- does not exist (404). Policies call it with the context's role, and only once a row of
-- the caller's own org reached the check (it never reveals another org's rows); the
-- definer functions of functions_orgs.sql pass the role they re-read under the org lock.
create or replace function app.require_role(
    p_min app.org_role, p_have app.org_role default app.current_org_role(), p_message text default null)
returns boolean
    language plpgsql stable parallel restricted
    set search_path = pg_catalog, pg_temp
    as $$
    begin
        if not coalesce(p_have >= p_min, false) then
            raise exception '%', coalesce(p_message,
                pg_catalog.format('this action needs the %s role or higher in the organization', p_min))
                using errcode = 'insufficient_privilege';
        end if;
        return true;
    end
    $$;
comment on function app.require_role(app.org_role, app.org_role, text) is
    'True when p_have (default: the caller''s role in the org in context) ranks at least p_min; else raises 42501 (HTTP 403).';

-- Governing an org (its name, members, invitations, keys, ownership) is for signed-in
-- users: true, or raises PT403 `api_key_not_allowed` in an API key's context.
create or replace function app.require_signed_in_user() returns boolean
    language plpgsql stable parallel restricted
    set search_path = pg_catalog, pg_temp
    as $$
    begin
        if app.current_user_id() is null then
            raise exception 'this action needs a signed-in user: API keys do not govern the organization'
                using errcode = 'PT403', hint = 'api_key_not_allowed';
        end if;
        return true;
    end
    $$;
comment on function app.require_signed_in_user() is
    'True when a signed-in user is in context; raises PT403 api_key_not_allowed otherwise (an API key, or no context).';

-- True when the plan of the org in context has p_feature; else raises PT403
-- plan_feature_unavailable (HTTP 403). For policies and definer functions.
create or replace function app.require_feature(p_feature text) returns boolean
    language plpgsql stable
    set search_path = pg_catalog, pg_temp
    as $$
    declare
        v_plan text;
        v_has boolean;
    begin
        select p.id, p_feature = any (p.features) into v_plan, v_has
          from app.org_plans op join app.plans p on p.id = op.plan_id
         where op.org_id = app.current_org_id();
        if not coalesce(v_has, false) then
            raise exception using errcode = 'PT403', hint = 'plan_feature_unavailable',
                message = pg_catalog.format('the %s plan does not include %s; upgrade the plan to use it',
                                            coalesce(v_plan, 'current'), pg_catalog.replace(p_feature, '_', ' ')),
                detail = pg_catalog.jsonb_build_object('feature', p_feature, 'plan', v_plan)::text;
        end if;
        return true;
    end
    $$;
comment on function app.require_feature(text) is
    'True when the plan of the org in context has the feature; else raises PT403 plan_feature_unavailable. Policies and definer functions.';

revoke all on schema app from public;
grant usage on schema app to palisade_runtime, palisade_credentials, palisade_jobs;
grant usage on type app.org_role to palisade_runtime, palisade_credentials, palisade_jobs;

revoke all on function app.context_mac(bytea, bytea, text, text, text, text, text), app.bind_context(uuid, uuid, uuid, app.org_role, uuid),
    app.verified_context(), app.current_user_id(), app.current_session_id(), app.current_org_id(),
    app.current_api_key_id(), app.require_signed_in_user(),
    app.current_org_role(), app.has_org_role(app.org_role), app.require_role(app.org_role, app.org_role, text),
    app.is_definer(), app.require_feature(text), app.bind_request_meta(jsonb), app.request_meta()
    from public, palisade_runtime, palisade_credentials, palisade_jobs;
-- Policies call these as whichever role runs the statement.
grant execute on function app.verified_context(), app.current_user_id(), app.current_session_id(), app.current_org_id(),
    app.current_api_key_id(), app.require_signed_in_user(), app.current_org_role(), app.has_org_role(app.org_role),
    app.require_role(app.org_role, app.org_role, text), app.is_definer() to palisade_runtime, palisade_credentials, palisade_jobs;
grant execute on function app.require_feature(text) to palisade_runtime;
grant execute on function app.bind_request_meta(jsonb) to palisade_credentials;
