-- functions_operator: what the operator CLI changes (`palisade users disable|enable|
-- reset-password`, `palisade sessions revoke`, `palisade outbox retry`; src/operator.rs).
-- They run as the schema owner, from the command line, never over HTTP: no runtime role
-- may execute any of them (revoked from every lane, granted to none). They are not
-- security definer: their only caller already is the owner, for whom app.is_definer() is
-- true, so the forced policies let them through exactly as they let app.set_org_plan()
-- (`palisade orgs set-plan`). Each takes the account or email it acts on from its
-- argument -- the operator named it -- and records what it did in the audit log, actor
-- `system`, metadata {"via": "cli"}. The CLI's reads (users list/show, orgs list/show,
-- outbox status) are plain owner SELECTs in src/operator.rs.

-- An operator's change to account p_user: in the account's chain and in the chain of
-- every org it belongs to (their admins see what happened to a member), the account as
-- the target. Orgs in id order, as app.audit_sign_in() takes the chains' locks.
create or replace function app.operator_audit_user(p_user uuid, p_action text, p_metadata jsonb default '{}')
returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_org uuid;
    v_metadata jsonb := p_metadata || pg_catalog.jsonb_build_object('via', 'cli');
    v_target jsonb := pg_catalog.jsonb_build_array(app.audit_user_target(p_user));
begin
    perform app.audit_account_event(p_user, p_action, v_metadata, v_target, true);
    for v_org in select m.org_id from app.memberships m where m.user_id = p_user order by m.org_id loop
        perform app.audit_org_event(v_org, p_action, v_target, v_metadata);
    end loop;
end
$$;

-- 404 unless account p_user exists; locks it (an operator's changes to one account
-- take turns, and a sign-in's app.create_session() waits for them).
create or replace function app.operator_lock_user(p_user uuid) returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    perform 1 from app.users u where u.id = p_user for no key update;
    if not found then
        perform app.refuse(404, 'not_found', 'no such user');
    end if;
end
$$;

-- Revokes every live session of p_user (each session's refresh tokens die with it: a
-- refresh needs a live session); returns how many. No audit row: its callers write one.
create or replace function app.operator_end_sessions(p_user uuid) returns integer
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_revoked integer;
begin
    update app.sessions s set revoked_at = now()
     where s.user_id = p_user and s.revoked_at is null and s.expires_at > now();
    get diagnostics v_revoked = row_count;
    return v_revoked;
end
$$;

-- `palisade sessions revoke --user`: signs the account out everywhere; returns how many
-- sessions were live. Its access tokens fail on their next request (the request context
-- proves a live session), its refresh tokens at their next exchange.
create or replace function app.operator_revoke_sessions(p_user uuid) returns integer
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_revoked integer;
begin
    perform app.operator_lock_user(p_user);
    v_revoked := app.operator_end_sessions(p_user);
    perform app.audit_account_event(p_user, 'session.all_revoked',
        pg_catalog.jsonb_build_object('via', 'cli', 'sessions_revoked', v_revoked),
        pg_catalog.jsonb_build_array(app.audit_user_target(p_user)), true);
    return v_revoked;
end
$$;

-- `palisade users disable`: sets disabled_at and revokes every session in the same
-- transaction. From then on app.create_session() refuses the account (403
-- account_disabled), app.refresh_session() answers 'disabled', and
-- app.set_api_key_context() refuses the keys it created (401 api_key_creator_disabled).
-- changed is false when it already was disabled (its sessions are revoked again anyway,
-- and nothing is recorded).
create or replace function app.operator_disable_user(
    p_user uuid, out changed boolean, out sessions_revoked integer)
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    perform app.operator_lock_user(p_user);
    update app.users u set disabled_at = now() where u.id = p_user and u.disabled_at is null;
    changed := found;
    sessions_revoked := app.operator_end_sessions(p_user);
    if changed then
        perform app.operator_audit_user(p_user, 'user.disabled',
            pg_catalog.jsonb_build_object('sessions_revoked', sessions_revoked));
    end if;
end
$$;

-- `palisade users enable`: clears disabled_at; the account signs in again and its keys
-- work again (its old sessions stay revoked). False when it was not disabled.
create or replace function app.operator_enable_user(p_user uuid) returns boolean
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    perform app.operator_lock_user(p_user);
    update app.users u set disabled_at = null where u.id = p_user and u.disabled_at is not null;
    if not found then
        return false;
    end if;
    perform app.operator_audit_user(p_user, 'user.enabled');
    return true;
end
$$;

-- `palisade users reset-password`: queues the same request POST /v1/auth/password-reset
-- queues (app.request_password_reset); the worker mints the token and sends the email
-- (app.issue_password_reset, at most one per account a minute), so no token ever passes
-- through the CLI. With p_revoke_sessions, also signs the account out everywhere.
-- Returns how many sessions were revoked.
create or replace function app.operator_password_reset(p_user uuid, p_revoke_sessions boolean)
returns integer
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_revoked integer := 0;
begin
    perform app.operator_lock_user(p_user);
    insert into app.password_reset_requests (email) select u.email from app.users u where u.id = p_user;
    if p_revoke_sessions then
        v_revoked := app.operator_end_sessions(p_user);
    end if;
    perform app.audit_account_event(p_user, 'user.password_reset_queued',
        pg_catalog.jsonb_build_object('via', 'cli', 'sessions_revoked', v_revoked),
        pg_catalog.jsonb_build_array(app.audit_user_target(p_user)), true);
    return v_revoked;
end
$$;

-- `palisade outbox retry`: failed emails (not sent, with a last error -- retrying or
-- given up after 10 attempts) become due now with a fresh budget of attempts. p_id NULL:
-- every failed email; else that one (none when it is not a failed email). Returns the
-- emails made due; each is recorded in its org's chain, else its account's.
create or replace function app.operator_retry_emails(p_id uuid)
returns table (id uuid, template text, to_email text)
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_email record;
begin
    for v_email in
        update app.email_outbox o set attempts = 0, next_attempt_at = now()
         where o.sent_at is null and o.last_error is not null and (p_id is null or o.id = p_id)
        returning o.id, o.user_id, o.org_id, o.template, o.to_email
    loop
        if v_email.org_id is not null then
            perform app.audit_org_event(v_email.org_id, 'email.retried',
                pg_catalog.jsonb_build_array(app.audit_target('email', v_email.id, v_email.template)),
                pg_catalog.jsonb_build_object('via', 'cli', 'template', v_email.template));
        elsif v_email.user_id is not null then
            perform app.audit_account_event(v_email.user_id, 'email.retried',
                pg_catalog.jsonb_build_object('via', 'cli', 'template', v_email.template),
                pg_catalog.jsonb_build_array(app.audit_target('email', v_email.id, v_email.template)), true);
        end if;
        id := v_email.id;
        template := v_email.template;
        to_email := v_email.to_email;
        return next;
    end loop;
end
$$;

comment on function app.operator_audit_user(uuid, text, jsonb) is
    'Records an operator''s change to an account in its chain and its orgs'' (actor system, via cli). Owner only.';
comment on function app.operator_lock_user(uuid) is 'Locks an account for an operator''s change; 404 if none. Owner only.';
comment on function app.operator_end_sessions(uuid) is 'Revokes every live session of an account; returns how many. Owner only.';
comment on function app.operator_revoke_sessions(uuid) is
    'Signs an account out everywhere and records it; returns how many sessions were live. Owner only: palisade sessions revoke.';
comment on function app.operator_disable_user(uuid) is
    'Disables an account (no sign-in, no refresh, its API keys refused) and revokes its sessions. Owner only: palisade users disable.';
comment on function app.operator_enable_user(uuid) is
    'Enables a disabled account again. Owner only: palisade users enable.';
comment on function app.operator_password_reset(uuid, boolean) is
    'Queues a password-reset email for an account (the worker sends it), optionally revoking its sessions. Owner only: palisade users reset-password.';
comment on function app.operator_retry_emails(uuid) is
    'Makes failed outbox emails due again (one, or all). Owner only: palisade outbox retry.';

revoke all on function app.operator_audit_user(uuid, text, jsonb), app.operator_lock_user(uuid),
    app.operator_end_sessions(uuid), app.operator_revoke_sessions(uuid),
    app.operator_disable_user(uuid), app.operator_enable_user(uuid),
    app.operator_password_reset(uuid, boolean), app.operator_retry_emails(uuid)
    from public, palisade_runtime, palisade_credentials, palisade_jobs;
