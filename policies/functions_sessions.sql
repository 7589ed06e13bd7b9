-- functions_sessions: refresh-token rotation, login throttling, password changes and
-- single-use email tokens. All security definer; the tables they touch have no
-- runtime grants at all, so these functions are the whole story.

-- Exchanges a refresh token. Outcomes (returned, not raised, so a revocation commits):
--   'rotated'  the token was live: a successor (p_new_hash) now is; the session lives on.
--   'grace'    the token was rotated less than p_grace ago (two tabs refreshing at once):
--              the same successor is returned (sealed), no new token is minted.
--   'reused'   the token was rotated longer ago: someone replayed it. The whole session
--              is revoked, so every token of it stops working.
--   'invalid'  unknown token, or its session is revoked or expired.
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
        return query select 'rotated'::text, v_session.user_id, v_session.id, null::bytea;
    elsif v_token.rotated_at > now() - p_grace and v_token.successor_sealed is not null then
        return query select 'grace'::text, v_session.user_id, v_session.id, v_token.successor_sealed;
    else
        update app.sessions s set revoked_at = now() where s.id = v_session.id;
        return query select 'reused'::text, v_session.user_id, v_session.id, null::bytea;
    end if;
end
$$;

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

-- Ends a password check. 'succeeded' forgets the account's failures; 'failed' stays
-- counted until it leaves the window (no permanent lockout); 'aborted' (the check never
-- ran, e.g. the hashing pool was saturated) is simply dropped.
create or replace function app.login_attempt_end(p_attempt_id bigint, p_outcome text)
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_account bytea;
begin
    if p_outcome = 'failed' then
        update app.login_attempts a set status = 'failed' where a.id = p_attempt_id;
        return;
    end if;
    delete from app.login_attempts a where a.id = p_attempt_id returning a.account_key into v_account;
    if p_outcome = 'succeeded' then
        delete from app.login_attempts a where a.account_key = v_account;
    end if;
end
$$;

-- The signed-in user's password hash, so the server can verify the current password
-- before a change. The column itself is not readable by the runtime role.
create or replace function app.current_password_hash() returns text
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$ select u.password_hash from app.users u where u.id = app.current_user_id() $$;

-- Sets the signed-in user's password and revokes every other session of theirs.
create or replace function app.change_password(p_new_hash text) returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_revoked integer;
begin
    update app.users set password_hash = p_new_hash, updated_at = now() where id = app.current_user_id();
    update app.sessions set revoked_at = now()
     where user_id = app.current_user_id() and id is distinct from app.current_session_id()
       and revoked_at is null;
    get diagnostics v_revoked = row_count;
    return v_revoked;
end
$$;

-- A verification token for the signed-in user (earlier unused ones die).
create or replace function app.issue_email_verification(p_token_hash bytea, p_ttl interval) returns void
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    update app.user_tokens set used_at = now()
     where user_id = app.current_user_id() and purpose = 'verify_email' and used_at is null;
    insert into app.user_tokens (user_id, purpose, token_hash, expires_at)
    values (app.current_user_id(), 'verify_email', p_token_hash, now() + p_ttl);
$$;

-- Consumes a verification token: marks the email verified. NULL when the token is
-- unknown, used or expired.
create or replace function app.confirm_email(p_token_hash bytea) returns uuid
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    with used as (
        update app.user_tokens t set used_at = now()
         where t.token_hash = p_token_hash and t.purpose = 'verify_email'
           and t.used_at is null and t.expires_at > now()
        returning t.user_id
    )
    update app.users u set email_verified_at = coalesce(u.email_verified_at, now()), updated_at = now()
      from used where u.id = used.user_id
    returning u.id
$$;

-- Forgot password. For a known email: a reset token (earlier unused ones die) and the
-- email carrying it, in this transaction. For an unknown email: nothing. Either way the
-- caller answers 202 after the same statements.
create or replace function app.request_password_reset(
    p_email text, p_token_hash bytea, p_ttl interval, p_subject text, p_body_sealed bytea)
returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_user uuid;
begin
    select u.id into v_user from app.users u where u.email = p_email;
    if v_user is null then
        return;
    end if;
    update app.user_tokens set used_at = now()
     where user_id = v_user and purpose = 'password_reset' and used_at is null;
    insert into app.user_tokens (user_id, purpose, token_hash, expires_at)
        values (v_user, 'password_reset', p_token_hash, now() + p_ttl);
    perform app.enqueue_email(p_email, v_user, null, 'password_reset', p_subject, p_body_sealed);
end
$$;

-- Consumes a reset token: sets the new password and revokes every session of the
-- user. NULL when the token is unknown, used or expired.
create or replace function app.reset_password(p_token_hash bytea, p_new_hash text) returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_user uuid;
begin
    update app.user_tokens t set used_at = now()
     where t.token_hash = p_token_hash and t.purpose = 'password_reset'
       and t.used_at is null and t.expires_at > now()
    returning t.user_id into v_user;
    if v_user is null then
        return null;
    end if;
    update app.users set password_hash = p_new_hash, updated_at = now() where id = v_user;
    update app.sessions set revoked_at = now() where user_id = v_user and revoked_at is null;
    return v_user;
end
$$;

revoke all on function
    app.refresh_session(bytea, bytea, bytea, interval),
    app.login_attempt_begin(bytea, inet, interval, integer, integer),
    app.login_attempt_end(bigint, text),
    app.current_password_hash(),
    app.change_password(text),
    app.issue_email_verification(bytea, interval),
    app.confirm_email(bytea),
    app.request_password_reset(text, bytea, interval, text, bytea),
    app.reset_password(bytea, text)
    from public;
grant execute on function
    app.refresh_session(bytea, bytea, bytea, interval),
    app.login_attempt_begin(bytea, inet, interval, integer, integer),
    app.login_attempt_end(bigint, text),
    app.current_password_hash(),
    app.change_password(text),
    app.issue_email_verification(bytea, interval),
    app.confirm_email(bytea),
    app.request_password_reset(text, bytea, interval, text, bytea),
    app.reset_password(bytea, text)
    to palisade_runtime;
