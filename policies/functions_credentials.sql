-- functions_credentials: the credential operations -- registration, sign-in, sessions,
-- refresh-token rotation, the login throttle, email confirmation, password reset and the
-- invitation lookup by token. They cannot know the tenant first, so they cross tenants
-- by nature. That is why they run only on the credential pool: each is executable by
-- palisade_credentials alone (never by the request role palisade_runtime, whose SQL runs
-- tenant queries), is security definer (runs as the owner of schema app, where
-- app.is_definer() is true), pins search_path, and acts only on what it was given and can
-- check: an email, a token's SHA-256, a user whose password the server just verified.
--
-- Custom errors: SQLSTATE 'PT' || HTTP status, HINT = the problem's stable `code`
-- (app.refuse() in functions_orgs.sql; src/db/errors.rs maps them).

-- Lower-case ASCII slug from free text: 'Acme, Inc.' -> 'acme-inc'.
create or replace function app.slugify(p_text text) returns text
    language sql immutable parallel safe
    set search_path = pg_catalog, pg_temp
    as $$
        select coalesce(nullif(btrim(left(btrim(regexp_replace(lower(p_text), '[^a-z0-9]+', '-', 'g'), '-'), 48), '-'), ''), 'org')
    $$;
comment on function app.slugify(text) is 'Lower-case ASCII slug from free text (''Acme, Inc.'' -> ''acme-inc''). Internal.';

-- Creates an organization owned by p_user. An explicit slug that is taken raises
-- unique_violation on orgs_slug_key (HTTP 409 `slug_taken`); without one, a slug is
-- derived from the name and suffixed until it is free. Internal: the request role
-- reaches it through app.create_org() (user from the verified context, never personal),
-- registration through app.register_user() (the personal org).
create or replace function app.create_org_for(p_user uuid, p_name text, p_slug text, p_personal boolean)
returns uuid
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_org uuid;
    v_slug text := p_slug;
begin
    if v_slug is null then
        v_slug := app.slugify(p_name);
        while exists (select 1 from app.orgs o where o.slug = v_slug) loop
            v_slug := app.slugify(p_name) || '-' || substr(md5(random()::text), 1, 6);
        end loop;
    end if;
    insert into app.orgs (name, slug, personal, created_by)
        values (p_name, v_slug, p_personal, p_user)
        returning id into v_org;
    insert into app.memberships (org_id, user_id, role) values (v_org, p_user, 'owner');
    return v_org;
end
$$;
comment on function app.create_org_for(uuid, text, text, boolean) is
    'Creates an org owned by p_user (personal or not). Internal: called by app.create_org() and app.register_user().';

-- Registration: the user and their personal organization, in the caller's transaction.
-- A taken email raises unique_violation on users_email_key (HTTP 409 `email_taken`).
-- Binds a context for the new user (no session, no org) for the rest of the
-- transaction, so the caller can queue the verification email and read back what it
-- created -- and nothing else.
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
    v_org := app.create_org_for(v_user, p_name, null, true);
    update app.users set current_org_id = v_org where id = v_user;
    perform app.audit_account_event(v_user, 'user.registered', jsonb_build_object('email', p_email, 'name', p_name),
        jsonb_build_array(app.audit_target('org', v_org, p_name)));
    perform app.bind_context(v_user, null, null, null);
    return v_user;
end
$$;
comment on function app.register_user(text, text, text) is
    'Creates an account and its personal org; binds a context for the new user. Credential role only.';

-- Login step 1: the stored hash for an email, so the server can verify the password
-- (argon2 runs in the server, off the database). No row for an unknown email; the server
-- then verifies against a dummy hash so timing does not tell.
create or replace function app.login_lookup(p_email text)
returns table (user_id uuid, password_hash text)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select u.id, u.password_hash from app.users u where u.email = p_email
$$;
comment on function app.login_lookup(text) is
    'The user id and password hash for an email (sign-in). Credential role only: the request role can never read a password hash.';

-- Login step 2: a session for a user whose password the server just verified, with its
-- first refresh token. The server chooses the session id (it derives the session proof
-- from it) and keeps neither the proof nor the refresh token: only their SHA-256.
-- A disabled account (app.users.disabled_at) raises PT403 / account_disabled.
create or replace function app.create_session(
    p_session_id uuid, p_user_id uuid, p_ttl interval, p_user_agent text, p_ip inet,
    p_refresh_hash bytea, p_proof_hash bytea)
returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    -- A disabled account gets no session. FOR SHARE: an operator disabling it right now
    -- (app.operator_disable_user updates the row, then revokes its sessions) waits for
    -- this session to commit, or this check waits and sees it disabled.
    perform 1 from app.users u where u.id = p_user_id and u.disabled_at is null for share;
    if not found then
        perform app.refuse(403, 'account_disabled', 'this account is disabled; contact support');
    end if;
    insert into app.sessions (id, user_id, expires_at, user_agent, ip, proof_hash)
        values (p_session_id, p_user_id, now() + p_ttl, left(p_user_agent, 512), p_ip, p_proof_hash);
    insert into app.refresh_tokens (session_id, token_hash) values (p_session_id, p_refresh_hash);
    perform app.audit_sign_in(p_user_id, 'auth.login', jsonb_build_object('session_id', p_session_id));
    return p_session_id;
end
$$;
comment on function app.create_session(uuid, uuid, interval, text, inet, bytea, bytea) is
    'Starts a session (with its first refresh token) for a user whose password the server verified; 403 account_disabled for a disabled account. Credential role only.';

-- Exchanges a refresh token. Outcomes (returned, not raised, so a revocation commits):
--   'rotated'  the token was live: a successor (p_new_hash) now is; the session lives on.
--   'grace'    the token was rotated less than p_grace ago (two tabs refreshing at once):
--              the same successor is returned (sealed), no new token is minted.
--   'reused'   the token was rotated longer ago: someone replayed it. The whole session
--              is revoked, so every token of it stops working.
--   'invalid'  unknown token, or its session is revoked or expired.
--   'disabled' the account is disabled (its sessions were revoked with it; the server
--              answers 403 account_disabled rather than a bare 401).
-- Rows are locked (FOR UPDATE), so concurrent refreshes with one token serialize and
-- converge on exactly one live successor.
create or replace function app.refresh_session(
    p_token_hash bytea, p_new_hash bytea, p_new_sealed bytea, p_grace interval)
returns table (outcome text, user_id uuid, session_id uuid, successor_sealed bytea)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_token app.refresh_tokens;
    v_session app.sessions;
    v_successor uuid;
begin
    select t.* into v_token from app.refresh_tokens t where t.token_hash = p_token_hash for update;
    if not found then
        return query select 'invalid'::text, null::uuid, null::uuid, null::bytea;
        return;
    end if;
    select s.* into v_session from app.sessions s where s.id = v_token.session_id for update;
    if exists (select 1 from app.users u where u.id = v_session.user_id and u.disabled_at is not null) then
        return query select 'disabled'::text, null::uuid, null::uuid, null::bytea;
        return;
    end if;
    if v_session.revoked_at is not null or v_session.expires_at <= now() then
        return query select 'invalid'::text, null::uuid, null::uuid, null::bytea;
        return;
    end if;
    if v_token.rotated_at is null then
        insert into app.refresh_tokens (session_id, token_hash)
            values (v_session.id, p_new_hash) returning id into v_successor;
        update app.refresh_tokens t
           set rotated_at = now(), successor_id = v_successor, successor_sealed = p_new_sealed
         where t.session_id = v_token.session_id and t.id = v_token.id;
        -- Sealed successors are only needed during their grace window.
        update app.refresh_tokens t set successor_sealed = null
         where t.session_id = v_session.id and t.rotated_at < now() - p_grace
           and t.successor_sealed is not null;
        update app.sessions s set last_used_at = now() where s.id = v_session.id;
        perform app.audit_account_event(v_session.user_id, 'session.refreshed', '{}',
            jsonb_build_array(app.audit_target('session', v_session.id)));
        return query select 'rotated'::text, v_session.user_id, v_session.id, null::bytea;
    elsif v_token.rotated_at > now() - p_grace and v_token.successor_sealed is not null then
        return query select 'grace'::text, v_session.user_id, v_session.id, v_token.successor_sealed;
    else
        update app.sessions s set revoked_at = now() where s.id = v_session.id;
        perform app.audit_account_event(v_session.user_id, 'session.refresh_token_reused',
            jsonb_build_object('session_revoked', true),
            jsonb_build_array(app.audit_target('session', v_session.id)), true);
        return query select 'reused'::text, v_session.user_id, v_session.id, null::bytea;
    end if;
end
$$;
comment on function app.refresh_session(bytea, bytea, bytea, interval) is
    'Rotates a refresh token (rotated / grace / reused -> session revoked / invalid / disabled account). Credential role only.';

-- Starts a password check. Counts this account's failed and in-flight checks in the
-- window (and this IP's); at the limit, returns how many seconds until the oldest one
-- leaves the window, and records nothing. Otherwise records a 'pending' attempt and
-- returns its id. A per-account advisory lock makes the count-then-insert atomic, so
-- concurrent guesses can never exceed the limit.
create or replace function app.login_attempt_begin(
    p_account bytea, p_ip inet, p_window interval, p_max_account integer, p_max_ip integer)
returns table (attempt_id bigint, retry_after_seconds integer)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_oldest timestamptz;
    v_count integer;
    v_id bigint;
begin
    perform pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtextextended(pg_catalog.encode(p_account, 'hex'), 1));
    select count(*), min(a.created_at) into v_count, v_oldest from app.login_attempts a
     where a.account_key = p_account and a.created_at > now() - p_window;
    if v_count >= p_max_account then
        return query select null::bigint, greatest(1, ceil(extract(epoch from v_oldest + p_window - now())))::integer;
        return;
    end if;
    if p_ip is not null then
        select count(*), min(a.created_at) into v_count, v_oldest from app.login_attempts a
         where a.ip = p_ip and a.created_at > now() - p_window and a.status = 'failed';
        if v_count >= p_max_ip then
            return query select null::bigint, greatest(1, ceil(extract(epoch from v_oldest + p_window - now())))::integer;
            return;
        end if;
    end if;
    insert into app.login_attempts (account_key, ip) values (p_account, p_ip) returning id into v_id;
    -- Old rows are useless: trim this account's history outside the window.
    delete from app.login_attempts a where a.account_key = p_account and a.created_at <= now() - p_window;
    return query select v_id, null::integer;
end
$$;
comment on function app.login_attempt_begin(bytea, inet, interval, integer, integer) is
    'Records a password check about to run, or refuses it when the account or IP has too many failures. Credential role only.';

-- Ends a password check of account p_account (the id alone is not enough: both must
-- match). 'succeeded' forgets the account's failures; 'failed' stays counted until it
-- leaves the window (no permanent lockout); 'aborted' (the check never ran, e.g. the
-- hashing pool was saturated) is simply dropped.
drop function if exists app.login_attempt_end(bigint, bytea, text);
create or replace function app.login_attempt_end(p_attempt_id bigint, p_account bytea, p_outcome text,
                                                 p_user_id uuid default null)
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if p_outcome = 'failed' then
        update app.login_attempts a set status = 'failed'
         where a.id = p_attempt_id and a.account_key = p_account;
        -- A wrong password for an existing account is in its log (and its orgs'); an
        -- unknown email has no log to be in.
        if found and p_user_id is not null then
            perform app.audit_sign_in(p_user_id, 'auth.login_failed', jsonb_build_object('reason', 'invalid_password'));
        end if;
        return;
    end if;
    delete from app.login_attempts a where a.id = p_attempt_id and a.account_key = p_account;
    if found and p_outcome = 'succeeded' then
        delete from app.login_attempts a where a.account_key = p_account;
    end if;
end
$$;
comment on function app.login_attempt_end(bigint, bytea, text, uuid) is
    'Ends a password check (succeeded / failed / aborted). Credential role only.';

-- Consumes an emailed token of p_purpose (it is used at most once): its user, or NULL
-- when the token is unknown, used or expired. Internal.
create or replace function app.consume_user_token(p_token_hash bytea, p_purpose text) returns uuid
language sql volatile
set search_path = pg_catalog, pg_temp
as $$
    update app.user_tokens t set used_at = now()
     where t.token_hash = p_token_hash and t.purpose = p_purpose
       and t.used_at is null and t.expires_at > now()
    returning t.user_id
$$;
comment on function app.consume_user_token(bytea, text) is
    'Marks an unused, unexpired emailed token used and returns its user (NULL otherwise). Internal.';

-- Consumes a verification token: marks the email verified. NULL when the token is
-- unknown, used or expired.
create or replace function app.confirm_email(p_token_hash bytea) returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_user uuid := app.consume_user_token(p_token_hash, 'verify_email');
begin
    if v_user is null then
        return null;
    end if;
    update app.users u set email_verified_at = coalesce(u.email_verified_at, now()) where u.id = v_user;
    perform app.audit_account_event(v_user, 'user.email_verified');
    return v_user;
end
$$;
comment on function app.confirm_email(bytea) is
    'Consumes a verification token and marks the address verified; NULL for an unknown, used or expired token. Credential role only.';

-- Forgot password: records the request and nothing else -- the same single insert for an
-- address with an account and one without, so the answer's timing tells nothing. The
-- worker (app.issue_password_reset) mints the token and sends the email.
create or replace function app.request_password_reset(p_email text) returns void
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    insert into app.password_reset_requests (email) values (p_email)
$$;
comment on function app.request_password_reset(text) is
    'Queues a password-reset request for the worker; the same work for known and unknown addresses. Credential role only.';

-- Consumes a reset token: sets the new password and revokes every session of the
-- user. NULL when the token is unknown, used or expired.
create or replace function app.reset_password(p_token_hash bytea, p_new_hash text) returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_user uuid := app.consume_user_token(p_token_hash, 'password_reset');
begin
    if v_user is null then
        return null;
    end if;
    update app.users set password_hash = p_new_hash where id = v_user;
    update app.sessions set revoked_at = now() where user_id = v_user and revoked_at is null;
    perform app.audit_account_event(v_user, 'user.password_reset', jsonb_build_object('all_sessions_revoked', true));
    return v_user;
end
$$;
comment on function app.reset_password(bytea, text) is
    'Consumes a reset token, sets the new password hash and revokes every session of the user. Credential role only.';

-- What the invitee sees before accepting (no sign-in needed: the token is the
-- capability). 404 unknown token; 410 expired, revoked or used.
create or replace function app.invitation_lookup(p_token_hash bytea)
returns table (org_id uuid, org_name text, inviter_name text, email text, role app.org_role,
               expires_at timestamptz)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_status text;
    v_expires timestamptz;
begin
    select i.status, i.expires_at into v_status, v_expires
      from app.invitations i where i.token_hash = p_token_hash;
    perform app.check_invitation_usable(v_status, v_expires);
    return query
        select i.org_id, o.name, u.name, i.email, i.role, i.expires_at
          from app.invitations i
          join app.orgs o on o.id = i.org_id
          left join app.users u on u.id = i.invited_by
         where i.token_hash = p_token_hash;
end
$$;
comment on function app.invitation_lookup(bytea) is
    'An invitation by token hash, for the invitee before signing in; 404 / 410 as app.check_invitation_usable() says. Credential role only.';

revoke all on function app.slugify(text), app.create_org_for(uuid, text, text, boolean), app.consume_user_token(bytea, text),
    app.register_user(text, text, text), app.login_lookup(text),
    app.create_session(uuid, uuid, interval, text, inet, bytea, bytea),
    app.refresh_session(bytea, bytea, bytea, interval),
    app.login_attempt_begin(bytea, inet, interval, integer, integer),
    app.login_attempt_end(bigint, bytea, text, uuid), app.confirm_email(bytea),
    app.request_password_reset(text), app.reset_password(bytea, text), app.invitation_lookup(bytea)
    from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant execute on function app.register_user(text, text, text), app.login_lookup(text),
    app.create_session(uuid, uuid, interval, text, inet, bytea, bytea),
    app.refresh_session(bytea, bytea, bytea, interval),
    app.login_attempt_begin(bytea, inet, interval, integer, integer),
    app.login_attempt_end(bigint, bytea, text, uuid), app.confirm_email(bytea),
    app.request_password_reset(text), app.reset_password(bytea, text), app.invitation_lookup(bytea)
    to palisade_credentials;
