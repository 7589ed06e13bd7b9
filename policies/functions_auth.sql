-- functions_auth: the only paths that cross tenants, all security definer and audited here.
--
-- Each function runs as the owner of schema app (so app.is_definer() is true inside
-- it), pins search_path, is revoked from public and granted to palisade_runtime only.
-- They exist because some operations cannot know the tenant up front: registration,
-- login by email, and validating the session of an access token.

-- Lower-case ASCII slug from free text: 'Acme, Inc.' -> 'acme-inc'.
create or replace function app.slugify(p_text text) returns text
    language sql immutable parallel safe
    set search_path = pg_catalog, pg_temp
    as $$
        select coalesce(nullif(btrim(left(btrim(regexp_replace(lower(p_text), '[^a-z0-9]+', '-', 'g'), '-'), 48), '-'), ''), 'org')
    $$;

-- Creates an organization owned by the user in context. An explicit slug that is
-- taken raises unique_violation on orgs_slug_key (HTTP 409 `slug_taken`); without
-- one, a slug is derived from the name and suffixed until it is free.
create or replace function app.create_org(p_name text, p_slug text, p_personal boolean)
returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_user uuid := app.current_user_id();
    v_org uuid;
    v_slug text := p_slug;
begin
    if v_user is null then
        raise exception 'no user in context' using errcode = 'insufficient_privilege';
    end if;
    if v_slug is null then
        v_slug := app.slugify(p_name);
        while exists (select 1 from app.orgs o where o.slug = v_slug) loop
            v_slug := app.slugify(p_name) || '-' || substr(md5(random()::text), 1, 6);
        end loop;
    end if;
    insert into app.orgs (name, slug, personal, created_by)
        values (p_name, v_slug, p_personal, v_user)
        returning id into v_org;
    insert into app.memberships (org_id, user_id, role) values (v_org, v_user, 'owner');
    return v_org;
end
$$;

-- Registration: the user and their personal organization, in the caller's transaction.
-- A taken email raises unique_violation on users_email_key (HTTP 409 `email_taken`).
-- Leaves app.current_user_id set to the new user for the rest of the transaction, so
-- the caller can read back what it created (and nothing else).
create or replace function app.register_user(p_email text, p_name text, p_password_hash text)
returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_user uuid;
    v_org uuid;
begin
    insert into app.users (email, name, password_hash)
        values (p_email, p_name, p_password_hash)
        returning id into v_user;
    perform pg_catalog.set_config('app.current_user_id', v_user::text, true);
    v_org := app.create_org(p_name, null, true);
    update app.users set current_org_id = v_org where id = v_user;
    return v_user;
end
$$;

-- Login step 1: the stored hash for an email, so the server can verify the password
-- (argon2 runs in the server, off the database). Returns no row for an unknown email;
-- the server then verifies against a dummy hash so timing does not tell.
create or replace function app.login_lookup(p_email text)
returns table (user_id uuid, password_hash text)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select u.id, u.password_hash from app.users u where u.email = p_email
$$;

-- Login step 2: a new session for a user whose password the server just verified, with
-- its first refresh token (the server keeps only its SHA-256).
create or replace function app.create_session(
    p_user_id uuid, p_ttl interval, p_user_agent text, p_ip inet, p_refresh_hash bytea)
returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_session uuid;
begin
    insert into app.sessions (user_id, expires_at, user_agent, ip)
        values (p_user_id, now() + p_ttl, left(p_user_agent, 512), p_ip)
        returning id into v_session;
    insert into app.refresh_tokens (session_id, token_hash) values (v_session, p_refresh_hash);
    return v_session;
end
$$;

-- The first statement of every authenticated request transaction. Validates that the
-- access token's session is live (not revoked, not expired) -- so revocation takes
-- effect on the very next request with no extra round trip -- and, when the request
-- names an org, looks up the caller's membership. Then sets the context
-- transaction-locally. Not a member: the org context is '' and every tenant policy
-- matches nothing (the API answers 404). Raises SQLSTATE PT401 for a dead session.
create or replace function app.set_request_context(p_session_id uuid, p_user_id uuid, p_org_id uuid)
returns text
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_role text;
begin
    perform 1 from app.sessions s
     where s.id = p_session_id and s.user_id = p_user_id
       and s.revoked_at is null and s.expires_at > now();
    if not found then
        raise exception 'session is not active' using errcode = 'PT401';
    end if;
    if p_org_id is not null then
        select m.role into v_role from app.memberships m
         where m.org_id = p_org_id and m.user_id = p_user_id;
    end if;
    perform pg_catalog.set_config('app.current_user_id', p_user_id::text, true),
            pg_catalog.set_config('app.current_session_id', p_session_id::text, true),
            pg_catalog.set_config('app.current_org_id',
                case when v_role is null then '' else p_org_id::text end, true),
            pg_catalog.set_config('app.current_org_role', coalesce(v_role, ''), true);
    return v_role;
end
$$;

-- For GET /ready: the newest applied migration, readable without any table grant.
create or replace function app.schema_version() returns integer
    language sql stable security definer
    set search_path = pg_catalog, pg_temp
    as $$ select max(version)::integer from public.refinery_schema_history $$;

revoke all on function app.slugify(text), app.create_org(text, text, boolean),
    app.register_user(text, text, text), app.login_lookup(text),
    app.create_session(uuid, interval, text, inet, bytea), app.set_request_context(uuid, uuid, uuid),
    app.schema_version() from public;
grant execute on function app.slugify(text), app.create_org(text, text, boolean),
    app.register_user(text, text, text), app.login_lookup(text),
    app.create_session(uuid, interval, text, inet, bytea), app.set_request_context(uuid, uuid, uuid),
    app.schema_version() to palisade_runtime;
