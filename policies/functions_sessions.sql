-- functions_sessions: the request context and what a signed-in user does with their own
-- account and sessions. Executable by the request role (palisade_runtime); each acts
-- only for the user of the verified request context, never for a user named in an
-- argument. All security definer, search_path pinned.

-- The first statement of every request transaction. Proves the session -- p_proof is the
-- server's HMAC of the session id, checked against its SHA-256 in app.sessions (so
-- knowing a session id is not enough) -- and that it is live (not revoked, not expired:
-- revocation takes effect on the very next request, with no extra round trip). The user
-- is the session's. When the request names an org, looks up the user's membership of
-- it. Then binds the sealed context (context.sql) transaction-locally. Not a member: the
-- org is not bound, every tenant policy matches nothing (HTTP 404), and NULL is
-- returned. Returns the caller's role in p_org_id. Raises SQLSTATE PT401 for a dead or
-- unproven session. p_meta (write transactions): the audit context to seal with it.
drop function if exists app.set_request_context(uuid, bytea, uuid);
create or replace function app.set_request_context(p_session_id uuid, p_proof bytea, p_org_id uuid,
                                                   p_meta jsonb default null)
returns app.org_role
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_user uuid;
    v_role app.org_role;
begin
    select s.user_id into v_user from app.sessions s
     where s.id = p_session_id and s.proof_hash = pg_catalog.sha256(p_proof)
       and s.revoked_at is null and s.expires_at > now();
    if v_user is null then
        raise exception 'session is not active' using errcode = 'PT401';
    end if;
    if p_org_id is not null then
        select m.role into v_role from app.memberships m
         where m.org_id = p_org_id and m.user_id = v_user;
    end if;
    perform app.bind_context(v_user, p_session_id, case when v_role is null then null else p_org_id end, v_role);
    if p_meta is not null then
        perform app.bind_request_meta(p_meta);
    end if;
    return v_role;
end
$$;
comment on function app.set_request_context(uuid, bytea, uuid, jsonb) is
    'Proves the session (id + server proof), checks it is live and the membership of p_org_id, binds the sealed context. Returns the role in p_org_id or NULL. Request role.';

-- Signs out: revokes the session of the context.
create or replace function app.end_current_session() returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    update app.sessions set revoked_at = now()
     where id = app.current_session_id() and user_id = app.current_user_id() and revoked_at is null;
    if found then
        perform app.audit_account_event(app.current_user_id(), 'auth.logout', '{}',
            jsonb_build_array(app.audit_target('session', app.current_session_id())));
    end if;
end
$$;
comment on function app.end_current_session() is 'Revokes the session of the verified context (sign out). Request role.';

-- Revokes one live session of the signed-in user; false when they have no such session.
create or replace function app.revoke_session(p_session_id uuid) returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    update app.sessions set revoked_at = now()
     where id = p_session_id and user_id = app.current_user_id() and revoked_at is null
       and expires_at > now();
    if not found then
        return false;
    end if;
    perform app.audit_account_event(app.current_user_id(), 'session.revoked', '{}',
        jsonb_build_array(app.audit_target('session', p_session_id)));
    return true;
end
$$;
comment on function app.revoke_session(uuid) is
    'Revokes one live session of the user in context; false if they have none with this id. Request role.';

-- Revokes every other live session of the signed-in user; returns how many.
create or replace function app.revoke_other_sessions() returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_revoked integer;
begin
    update app.sessions set revoked_at = now()
     where user_id = app.current_user_id() and id is distinct from app.current_session_id()
       and revoked_at is null and expires_at > now();
    get diagnostics v_revoked = row_count;
    perform app.audit_account_event(app.current_user_id(), 'session.others_revoked',
        jsonb_build_object('sessions_revoked', v_revoked));
    return v_revoked;
end
$$;
comment on function app.revoke_other_sessions() is
    'Revokes every other live session of the user in context; returns the count. Request role.';

-- The signed-in user's password hash, so the server can verify the current password
-- before a change. The column itself is not readable by any runtime role.
create or replace function app.current_password_hash() returns text
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$ select u.password_hash from app.users u where u.id = app.current_user_id() $$;
comment on function app.current_password_hash() is
    'The password hash of the user in context (to verify the current password before a change). Request role.';

-- Sets the signed-in user's password and revokes every other session of theirs.
create or replace function app.change_password(p_new_hash text) returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_user uuid := app.current_user_id();
    v_revoked integer;
begin
    if v_user is null then
        raise exception 'no user in context' using errcode = 'insufficient_privilege';
    end if;
    update app.users set password_hash = p_new_hash where id = v_user;
    update app.sessions set revoked_at = now()
     where user_id = v_user and id is distinct from app.current_session_id() and revoked_at is null;
    get diagnostics v_revoked = row_count;
    perform app.audit_account_event(v_user, 'user.password_changed',
        jsonb_build_object('sessions_revoked', v_revoked));
    return v_revoked;
end
$$;
comment on function app.change_password(text) is
    'Sets the password hash of the user in context and revokes their other sessions. Request role.';

-- A verification token for the signed-in user (earlier unused ones die) and the email
-- carrying it, queued to the user's own address in this transaction. Also run by the
-- credential role right after registration (app.register_user binds the new user).
create or replace function app.issue_email_verification(
    p_token_hash bytea, p_ttl interval, p_subject text, p_body_sealed bytea) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_user uuid := app.current_user_id();
    v_email text;
begin
    select u.email into v_email from app.users u where u.id = v_user;
    if v_email is null then
        raise exception 'no user in context' using errcode = 'insufficient_privilege';
    end if;
    update app.user_tokens set used_at = now()
     where user_id = v_user and purpose = 'verify_email' and used_at is null;
    insert into app.user_tokens (user_id, purpose, token_hash, expires_at)
    values (v_user, 'verify_email', p_token_hash, now() + p_ttl);
    perform app.enqueue_email(v_email, v_user, null, 'verify_email', p_subject, p_body_sealed);
    perform app.audit_account_event(v_user, 'user.email_verification_requested');
end
$$;
comment on function app.issue_email_verification(bytea, interval, text, bytea) is
    'A verification token for the user in context, emailed to their own address. Request and credential roles.';

-- For GET /ready: the newest applied migration, readable without any table grant.
create or replace function app.schema_version() returns integer
    language sql stable security definer
    set search_path = pg_catalog, pg_temp
    as $$ select max(version)::integer from public.refinery_schema_history $$;
comment on function app.schema_version() is 'The newest applied migration (readiness). Every runtime role.';

-- Revocation is one-way: once revoked_at is set, nothing changes it, not even a
-- definer function.
create or replace function app.sessions_revocation_is_final() returns trigger
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    if old.revoked_at is not null and new.revoked_at is distinct from old.revoked_at then
        raise exception 'a revoked session stays revoked' using errcode = 'insufficient_privilege';
    end if;
    return new;
end
$$;
comment on function app.sessions_revocation_is_final() is 'Trigger: a revoked session can never be un-revoked.';
create or replace trigger sessions_revocation_is_final before update on app.sessions
    for each row execute function app.sessions_revocation_is_final();

revoke all on function app.set_request_context(uuid, bytea, uuid, jsonb), app.end_current_session(),
    app.revoke_session(uuid), app.revoke_other_sessions(), app.current_password_hash(),
    app.change_password(text), app.issue_email_verification(bytea, interval, text, bytea),
    app.schema_version(), app.sessions_revocation_is_final()
    from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant execute on function app.set_request_context(uuid, bytea, uuid, jsonb), app.end_current_session(),
    app.revoke_session(uuid), app.revoke_other_sessions(), app.current_password_hash(),
    app.change_password(text), app.issue_email_verification(bytea, interval, text, bytea)
    to palisade_runtime;
grant execute on function app.issue_email_verification(bytea, interval, text, bytea) to palisade_credentials;
grant execute on function app.schema_version() to palisade_runtime, palisade_credentials, palisade_jobs;
