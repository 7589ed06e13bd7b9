-- functions_api_keys: authenticating a request with an API key, and managing keys.
-- All security definer with search_path pinned; executable by the request role only.
-- Management acts for the signed-in user of the verified context (never a user named in
-- an argument) and needs the admin role in the org in context.

-- V18 added app.api_keys.secret_hash (the current secret's SHA-256) and creator_disabled
-- (a copy of the creator's disabled flag). They are filled here, idempotently, in the
-- transaction that installs the functions below: the functions before V18, which served
-- until this commits, kept each key's current secret in app.api_key_secrets (expires_at
-- NULL), including one created or rotated after the migration -- it moves onto its key --
-- and then no current secret is left there. creator_disabled is synced with
-- app.users.disabled_at (the trigger users_disabled_api_keys keeps it; this repairs any
-- drift at every start).
update app.api_keys k set secret_hash = s.secret_hash
  from app.api_key_secrets s
 where s.key_id = k.id and s.expires_at is null and k.secret_hash is distinct from s.secret_hash;
delete from app.api_key_secrets where expires_at is null;
alter table app.api_keys alter column secret_hash set not null;
alter table app.api_key_secrets alter column expires_at set not null;
update app.api_keys k set creator_disabled = (u.disabled_at is not null)
  from app.users u
 where u.id = k.created_by and k.creator_disabled is distinct from (u.disabled_at is not null);

-- The first statement of a request authenticated by an API key: the counterpart of
-- app.set_request_context(). p_secret is the key itself, matched by its SHA-256 (so the
-- stored hash is not a credential): the key's current secret (app.api_keys.secret_hash)
-- or, only when it is not that, one a rotation replaced (app.api_key_secrets). A key works
-- only while it is not revoked, not expired (nor its secret past a rotation's grace
-- window), and its creator is still a member of its org and not disabled
-- (api_key_creator_disabled, until they are enabled again); its role is the lower of its
-- own and its creator's current role, so a demoted creator's keys shrink with them.
-- Binds the sealed context with the key and no user: org data only, never a person's. A
-- route of another org binds no org (every tenant policy matches nothing: HTTP 404) and
-- returns NULL. Raises PT401 with the problem code as HINT (invalid_api_key,
-- api_key_revoked, api_key_expired, api_key_creator_disabled). Two index probes for a
-- current secret (the key, the creator's membership), as a session's context has two.
drop function if exists app.set_api_key_context(text, uuid);
create or replace function app.set_api_key_context(p_secret text, p_org_id uuid, p_meta jsonb default null)
returns app.org_role
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_hash bytea := pg_catalog.sha256(pg_catalog.convert_to(p_secret, 'UTF8'));
    v_key uuid;
    v_org uuid;
    v_key_role app.org_role;
    v_creator uuid;
    v_revoked timestamptz;
    v_expires timestamptz;
    v_creator_disabled boolean;
    v_secret_expires timestamptz;
    v_member app.org_role;
    v_role app.org_role;
begin
    select k.id, k.org_id, k.role, k.created_by, k.revoked_at, k.expires_at, k.creator_disabled
      into v_key, v_org, v_key_role, v_creator, v_revoked, v_expires, v_creator_disabled
      from app.api_keys k
     where k.secret_hash = v_hash;
    if not found then
        select k.id, k.org_id, k.role, k.created_by, k.revoked_at, k.expires_at, k.creator_disabled,
               s.expires_at
          into v_key, v_org, v_key_role, v_creator, v_revoked, v_expires, v_creator_disabled,
               v_secret_expires
          from app.api_key_secrets s join app.api_keys k on k.id = s.key_id
         where s.secret_hash = v_hash;
        if not found then
            perform app.refuse(401, 'invalid_api_key', 'this API key does not exist');
        end if;
    end if;
    if v_revoked is not null then
        perform app.refuse(401, 'api_key_revoked', 'this API key has been revoked');
    end if;
    if v_expires <= now() then
        perform app.refuse(401, 'api_key_expired', 'this API key has expired');
    end if;
    if v_secret_expires <= now() then
        perform app.refuse(401, 'api_key_expired',
            'this secret was replaced by a rotation and its grace period has ended');
    end if;
    select m.role into v_member from app.memberships m
     where m.org_id = v_org and m.user_id = v_creator;
    if v_member is null then
        -- app.remove_member() revokes a leaving creator's keys; this is the backstop.
        perform app.refuse(401, 'api_key_revoked',
            'the member who created this API key is no longer in the organization');
    end if;
    if v_creator_disabled then
        -- The creator's current role bounds the key's; a disabled account has none. Not
        -- revoked: enabling the account (palisade users enable) brings the key back.
        perform app.refuse(401, 'api_key_creator_disabled',
            'the account that created this API key is disabled');
    end if;
    if p_org_id is distinct from v_org then
        perform app.bind_context(null, null, null, null, v_key);
        return null;
    end if;
    v_role := least(v_key_role, v_member);
    perform app.bind_context(null, null, v_org, v_role, v_key);
    if p_meta is not null then
        perform app.bind_request_meta(p_meta);
    end if;
    return v_role;
end
$$;
comment on function app.set_api_key_context(text, uuid, jsonb) is
    'Authenticates an API key (by SHA-256; live, not expired, creator still a member and not disabled) and binds the sealed context for its org with role least(key, creator). Returns the role in p_org_id or NULL. Request role.';

-- The role check of key management: a signed-in admin (or owner) of the org in context,
-- read under the org lock. Returns that role.
create or replace function app.lock_org_for_key_admin() returns app.org_role
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_role app.org_role;
begin
    perform app.require_signed_in_user();
    v_role := app.lock_org_for_change(app.current_org_id());
    perform app.require_role('admin', v_role, 'managing API keys needs the admin role or higher');
    return v_role;
end
$$;

-- Creates a key in the org in context for the signed-in admin; p_role at most their own.
-- The server generated the secret: only its SHA-256 and display start come here.
create or replace function app.create_api_key(
    p_name text, p_role app.org_role, p_expires_at timestamptz, p_secret_hash bytea, p_start text)
returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_org uuid := app.current_org_id();
    v_actor_role app.org_role := app.lock_org_for_key_admin();
    v_id uuid;
    v_creator_disabled boolean;
begin
    if p_role > v_actor_role or p_role = 'owner' then
        perform app.refuse(403, 'forbidden', pg_catalog.format(
            'a key''s role cannot exceed your own (%s) and is never owner', v_actor_role));
    end if;
    if p_expires_at is not null and p_expires_at <= now() then
        perform app.refuse(422, 'validation_failed', 'expires_at must be in the future');
    end if;
    -- Live keys count against the plan (402 plan_limit_reached).
    perform app.take_quota(v_org, 'api_keys', 1);
    -- The creator's account row, shared until the commit: an operator disabling them
    -- waits for this key, and its trigger then suspends it, or this waits for the
    -- disable and stores the key suspended (app.api_keys.creator_disabled).
    select u.disabled_at is not null into v_creator_disabled
      from app.users u where u.id = app.current_user_id() for share;
    insert into app.api_keys (org_id, name, role, start, created_by, expires_at, secret_hash,
                              creator_disabled)
    values (v_org, p_name, p_role, p_start, app.current_user_id(), p_expires_at, p_secret_hash,
            coalesce(v_creator_disabled, false))
    returning id into v_id;
    perform app.audit_org_event(v_org, 'api_key.created', pg_catalog.jsonb_build_array(app.audit_target('api_key', v_id, p_name)),
        pg_catalog.jsonb_build_object('name', p_name, 'role', p_role, 'start', p_start, 'expires_at', p_expires_at));
    return v_id;
end
$$;
comment on function app.create_api_key(text, app.org_role, timestamptz, bytea, text) is
    'Creates an API key in the org in context (signed-in admin+, role at most the creator''s, never owner); stores only the secret''s SHA-256. Request role.';

-- For a signed-in admin (app.lock_org_for_key_admin), the live key p_key_id of the org in
-- context, locked; 404 when there is none (or it is revoked: a revoked key is gone for the
-- API).
create or replace function app.lock_live_api_key(p_key_id uuid) returns app.api_keys
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_key app.api_keys;
begin
    perform app.lock_org_for_key_admin();
    select * into v_key from app.api_keys k
     where k.org_id = app.current_org_id() and k.id = p_key_id and k.revoked_at is null
       for update;
    if not found then
        perform app.refuse(404, 'not_found', 'API key not found');
    end if;
    return v_key;
end
$$;

-- Renames a live key of the org in context.
create or replace function app.rename_api_key(p_key_id uuid, p_name text) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_key app.api_keys := app.lock_live_api_key(p_key_id);
begin
    update app.api_keys set name = p_name where id = v_key.id;
    perform app.audit_org_event(v_key.org_id, 'api_key.updated', pg_catalog.jsonb_build_array(app.audit_target('api_key', v_key.id, p_name)),
        pg_catalog.jsonb_build_object('changes', pg_catalog.jsonb_build_object(
            'name', pg_catalog.jsonb_build_object('from', v_key.name, 'to', p_name))));
end
$$;
comment on function app.rename_api_key(uuid, text) is 'Renames a live API key of the org in context (signed-in admin+). Request role.';

-- Rotates a live key: the new secret works at once; every older secret of the key keeps
-- working until now() + p_grace (or its own earlier end), then dies.
create or replace function app.rotate_api_key(
    p_key_id uuid, p_secret_hash bytea, p_start text, p_grace interval) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_key app.api_keys := app.lock_live_api_key(p_key_id);
begin
    if p_grace < interval '0' or p_grace > interval '7 days' then
        perform app.refuse(422, 'validation_failed', 'grace_seconds must be between 0 and 604800');
    end if;
    -- Secrets replaced before keep their own end if it comes sooner; the current one
    -- moves to app.api_key_secrets until the end of this grace window.
    update app.api_key_secrets set expires_at = least(expires_at, now() + p_grace)
     where key_id = v_key.id;
    insert into app.api_key_secrets (secret_hash, key_id, expires_at)
    values (v_key.secret_hash, v_key.id, now() + p_grace);
    update app.api_keys set secret_hash = p_secret_hash, start = p_start, rotated_at = now()
     where id = v_key.id;
    perform app.audit_org_event(v_key.org_id, 'api_key.rotated', pg_catalog.jsonb_build_array(app.audit_target('api_key', v_key.id, v_key.name)),
        pg_catalog.jsonb_build_object('start', p_start, 'grace_seconds', extract(epoch from p_grace)::bigint));
end
$$;
comment on function app.rotate_api_key(uuid, bytea, text, interval) is
    'Rotates a live API key of the org in context (signed-in admin+): a new secret now, older ones end after p_grace (0 to 7 days). Request role.';

-- Revokes a live key of the org in context: effective on the very next request.
create or replace function app.revoke_api_key(p_key_id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_key app.api_keys := app.lock_live_api_key(p_key_id);
begin
    update app.api_keys set revoked_at = now(), revoked_reason = 'revoked' where id = v_key.id;
    perform app.audit_org_event(v_key.org_id, 'api_key.revoked', pg_catalog.jsonb_build_array(app.audit_target('api_key', v_key.id, v_key.name)),
        pg_catalog.jsonb_build_object('reason', 'revoked'));
end
$$;
comment on function app.revoke_api_key(uuid) is
    'Revokes a live API key of the org in context (signed-in admin+); the key stops working at once. Request role.';

-- Revocation is one-way, as for sessions.
create or replace function app.api_keys_revocation_is_final() returns trigger
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    if old.revoked_at is not null and (new.revoked_at is distinct from old.revoked_at
                                       or new.revoked_reason is distinct from old.revoked_reason) then
        raise exception 'a revoked API key stays revoked' using errcode = 'insufficient_privilege';
    end if;
    return new;
end
$$;
comment on function app.api_keys_revocation_is_final() is 'Trigger: a revoked API key can never be un-revoked.';
create or replace trigger api_keys_revocation_is_final before update on app.api_keys
    for each row execute function app.api_keys_revocation_is_final();

-- app.api_keys.creator_disabled follows the creator's app.users.disabled_at, whoever
-- changes it (palisade users disable / enable, or a DBA by hand): the key's context
-- statement reads it from the key's row instead of joining app.users.
create or replace function app.api_keys_follow_creator_disabled() returns trigger
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    update app.api_keys k set creator_disabled = (new.disabled_at is not null)
     where k.created_by = new.id and k.creator_disabled is distinct from (new.disabled_at is not null);
    return null;
end
$$;
comment on function app.api_keys_follow_creator_disabled() is
    'Trigger on app.users: sets app.api_keys.creator_disabled of the keys the user created when their disabled_at is set or cleared.';
create or replace trigger users_disabled_api_keys after update of disabled_at on app.users
    for each row when ((old.disabled_at is null) is distinct from (new.disabled_at is null))
    execute function app.api_keys_follow_creator_disabled();

comment on function app.lock_org_for_key_admin() is
    'Locks the org in context and checks the caller is a signed-in admin+; returns their role. Internal.';
comment on function app.lock_live_api_key(uuid) is
    'For a signed-in admin+, the live (unrevoked) API key p_key_id of the org in context, locked for update; 404 otherwise. Internal.';

revoke all on function app.set_api_key_context(text, uuid, jsonb), app.lock_org_for_key_admin(),
    app.create_api_key(text, app.org_role, timestamptz, bytea, text), app.lock_live_api_key(uuid),
    app.rename_api_key(uuid, text), app.rotate_api_key(uuid, bytea, text, interval),
    app.revoke_api_key(uuid), app.api_keys_revocation_is_final(),
    app.api_keys_follow_creator_disabled()
    from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant execute on function app.set_api_key_context(text, uuid, jsonb),
    app.create_api_key(text, app.org_role, timestamptz, bytea, text),
    app.rename_api_key(uuid, text), app.rotate_api_key(uuid, bytea, text, interval),
    app.revoke_api_key(uuid)
    to palisade_runtime;
