-- functions_orgs: every write to memberships and invitations (with its audit row), and the
-- role rules they enforce. A DBA reads the whole permission model of issue 4 here.
--
-- Roles, ranked (the enum app.org_role, V5): owner > admin > member > viewer.
--   viewer  reads org data;  member  also writes tenant data (projects, ...);
--   admin   also manages members, invitations and org settings;
--   owner   also deletes the org, grants/removes the owner role, transfers ownership.
-- Rules enforced below:
--   * managing members and invitations needs admin or owner (42501 -> HTTP 403);
--   * only an owner grants, removes or invites the owner role (42501 -> 403);
--   * an org always keeps at least one owner: removing, demoting or the leaving of
--     its last owner raises PT409 / last_owner (HTTP 409);
--   * every change takes a row lock on the org first (select ... for no key update),
--     so concurrent changes to one org's members run one after the other and each
--     re-reads the owners (and the caller's own role) after the lock: two owners
--     demoting themselves at once cannot leave zero owners.
--   * invitation tokens are matched by SHA-256 only; accept/decline require the
--     signed-in user's email to equal the invited one (PT403 / invitation_email_mismatch).
-- Each change appends to the org's audit log (audit_log.sql) in the same transaction.
--
-- Custom errors: SQLSTATE 'PT' || HTTP status, HINT = the problem's stable `code`
-- (src/db/errors.rs maps them; src/api/problem.rs lists the known codes).
-- Every function acts for the user of the verified request context (context.sql), never
-- for a user named in an argument. Definer functions run as the owner of schema app
-- (app.is_definer() is true inside), pin search_path, and are granted to the request
-- role palisade_runtime only. Helpers without security definer are granted to no one:
-- only these functions call them.

-- ---------------------------------------------------------------------------
-- Helpers (not callable by the runtime role)
-- ---------------------------------------------------------------------------

-- Raises a rule violation the API answers with HTTP p_status and problem code p_code.
create or replace function app.refuse(p_status integer, p_code text, p_message text) returns void
    language plpgsql volatile
    set search_path = pg_catalog, pg_temp
    as $$
    begin
        raise exception using errcode = 'PT' || p_status::text, message = p_message, hint = p_code;
    end
    $$;

-- org_events became the audit log (V12, audit_log.sql): its writer is gone.
drop function if exists app.record_org_event(uuid, text, uuid, text, jsonb);


-- Locks org p_org_id against concurrent membership changes and returns the role of the
-- user in context in it, read after the lock. Not a member (or no such org): 404, so
-- another tenant's org is never confirmed to exist.
create or replace function app.lock_org_for_change(p_org_id uuid) returns app.org_role
    language plpgsql volatile
    set search_path = pg_catalog, pg_temp
    as $$
    declare
        v_role app.org_role;
    begin
        perform 1 from app.orgs o where o.id = p_org_id for no key update;
        select m.role into v_role from app.memberships m
         where m.org_id = p_org_id and m.user_id = app.current_user_id();
        if v_role is null then
            perform app.refuse(404, 'not_found', 'organization not found');
        end if;
        return v_role;
    end
    $$;

-- The seat limit is the plan's (app.take_quota(org, 'seats', n), functions_usage.sql);
-- the hook that stood here before plans existed is gone.
drop function if exists app.org_seat_limit(uuid);

-- A user's personal organization: the one registration created for them. The one rule
-- for "where does a user work when their current org is gone": removal from an org
-- resets current_org_id to it, and GET /v1/auth/me falls back to it.
create or replace function app.personal_org_of(p_user_id uuid) returns uuid
    language sql stable
    set search_path = pg_catalog, pg_temp
    as $$
        select o.id from app.orgs o
          join app.memberships m on m.org_id = o.id and m.user_id = p_user_id
         where o.personal and o.created_by = p_user_id
         order by o.created_at
         limit 1
    $$;

-- 404 for an unknown token; 410 for one that can no longer be used.
create or replace function app.check_invitation_usable(p_status text, p_expires_at timestamptz)
returns void
    language plpgsql volatile
    set search_path = pg_catalog, pg_temp
    as $$
    begin
        if p_status is null then
            perform app.refuse(404, 'not_found', 'invitation not found');
        elsif p_status = 'revoked' then
            perform app.refuse(410, 'invitation_revoked', 'this invitation was revoked');
        elsif p_status in ('accepted', 'declined') then
            perform app.refuse(410, 'invitation_used', 'this invitation was already used');
        elsif p_status = 'expired' or p_expires_at <= now() then
            perform app.refuse(410, 'invitation_expired', 'this invitation has expired; ask for a new one');
        end if;
    end
    $$;

-- ---------------------------------------------------------------------------
-- Members (org in context = the org of the route)
-- ---------------------------------------------------------------------------

-- Sets p_user_id's role in the org in context. Admin+; the owner role (granting it or
-- taking it away) only by an owner; never demotes the last owner.
create or replace function app.change_member_role(p_user_id uuid, p_role app.org_role) returns app.org_role
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_org uuid := app.current_org_id();
    v_actor_role app.org_role := app.lock_org_for_change(v_org);
    v_old app.org_role;
begin
    perform app.require_role('admin', v_actor_role, 'changing roles needs the admin role or higher');
    select m.role into v_old from app.memberships m where m.org_id = v_org and m.user_id = p_user_id;
    if v_old is null then
        perform app.refuse(404, 'not_found', 'member not found');
    end if;
    if 'owner' in (v_old, p_role) then
        perform app.require_role('owner', v_actor_role, 'only an owner can grant or remove the owner role');
    end if;
    if v_old = p_role then
        return v_old;
    end if;
    if v_old = 'owner' and (select count(*) from app.memberships m
                             where m.org_id = v_org and m.role = 'owner') = 1 then
        perform app.refuse(409, 'last_owner', 'an organization must keep at least one owner');
    end if;
    update app.memberships set role = p_role where org_id = v_org and user_id = p_user_id;
    perform app.audit_org_event(v_org, 'member.role_changed', jsonb_build_array(app.audit_user_target(p_user_id)),
        jsonb_build_object('from', v_old, 'to', p_role));
    return p_role;
end
$$;

-- Removes p_user_id from the org in context. Yourself (leaving): any role. Someone
-- else: admin+, and an owner only by an owner. Never the last owner. The API keys they
-- created in the org are revoked with them (revoked_reason 'creator_removed').
create or replace function app.remove_member(p_user_id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_org uuid := app.current_org_id();
    v_actor_role app.org_role := app.lock_org_for_change(v_org);
    v_leaving boolean := p_user_id = app.current_user_id();
    v_role app.org_role;
    v_email text;
    v_keys integer;
begin
    if not v_leaving then
        perform app.require_role('admin', v_actor_role, 'removing members needs the admin role or higher');
    end if;
    select m.role, u.email into v_role, v_email
      from app.memberships m join app.users u on u.id = m.user_id
     where m.org_id = v_org and m.user_id = p_user_id;
    if v_role is null then
        perform app.refuse(404, 'not_found', 'member not found');
    end if;
    if v_role = 'owner' then
        perform app.require_role('owner', v_actor_role, 'only an owner can remove an owner');
        if (select count(*) from app.memberships m where m.org_id = v_org and m.role = 'owner') = 1 then
            perform app.refuse(409, 'last_owner',
                'an organization must keep at least one owner: transfer ownership first');
        end if;
    end if;
    delete from app.memberships where org_id = v_org and user_id = p_user_id;
    update app.users set current_org_id = app.personal_org_of(p_user_id)
     where id = p_user_id and current_org_id = v_org;
    -- Their API keys in this org stop working with them.
    update app.api_keys set revoked_at = now(), revoked_reason = 'creator_removed'
     where org_id = v_org and created_by = p_user_id and revoked_at is null;
    get diagnostics v_keys = row_count;
    perform app.audit_org_event(v_org, case when v_leaving then 'member.left' else 'member.removed' end,
        jsonb_build_array(app.audit_target('user', p_user_id, v_email)),
        jsonb_build_object('role', v_role, 'api_keys_revoked', v_keys));
end
$$;

-- Owner only: p_user_id (a member) becomes an owner and the caller becomes an admin.
create or replace function app.transfer_ownership(p_user_id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_org uuid := app.current_org_id();
    v_actor uuid := app.current_user_id();
    v_actor_role app.org_role := app.lock_org_for_change(v_org);
    v_old app.org_role;
begin
    perform app.require_role('owner', v_actor_role, 'only an owner can transfer ownership');
    if p_user_id = v_actor then
        perform app.refuse(409, 'transfer_to_self', 'ownership must be transferred to another member');
    end if;
    select m.role into v_old from app.memberships m where m.org_id = v_org and m.user_id = p_user_id;
    -- A body reference, not the path's resource: 409, not 404.
    if v_old is null then
        perform app.refuse(409, 'not_a_member', 'ownership can only be transferred to a member of the organization');
    end if;
    update app.memberships set role = 'owner' where org_id = v_org and user_id = p_user_id;
    update app.memberships set role = 'admin' where org_id = v_org and user_id = v_actor;
    perform app.audit_org_event(v_org, 'org.ownership_transferred', jsonb_build_array(app.audit_user_target(p_user_id)),
        jsonb_build_object('target_previous_role', v_old, 'actor_new_role', 'admin'));
end
$$;

-- The signed-in user's default organization; they must be a member (else 404).
create or replace function app.set_current_org(p_org_id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    update app.users u set current_org_id = p_org_id
     where u.id = app.current_user_id()
       and exists (select 1 from app.memberships m where m.org_id = p_org_id and m.user_id = u.id);
    if not found then
        perform app.refuse(404, 'not_found', 'organization not found');
    end if;
    perform app.audit_account_event(app.current_user_id(), 'user.current_org_changed', jsonb_build_object('org_id', p_org_id),
        jsonb_build_array(app.audit_target('org', p_org_id)));
end
$$;

-- ---------------------------------------------------------------------------
-- Organizations created by the signed-in user
-- ---------------------------------------------------------------------------

-- Creates an organization owned by the user in context (never a personal one: those
-- come only with registration). 409 slug_taken for a taken explicit slug.
create or replace function app.create_org(p_name text, p_slug text) returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_user uuid := app.current_user_id();
begin
    if v_user is null then
        raise exception 'no user in context' using errcode = 'insufficient_privilege';
    end if;
    return app.create_org_for(v_user, p_name, p_slug, false);
end
$$;

-- ---------------------------------------------------------------------------
-- Invitations, managed by admins of the org in context
-- ---------------------------------------------------------------------------

-- Invites p_email with p_role, valid p_ttl, and queues the invitation email (sealed by
-- the server, carrying the token whose SHA-256 is p_token_hash) to that address in this
-- transaction. Admin+; the owner role only by an owner. 409 already_member /
-- invitation_pending; 402 plan_limit_reached when the plan has no seat left.
create or replace function app.create_invitation(
    p_email text, p_role app.org_role, p_token_hash bytea, p_ttl interval, p_subject text, p_body_sealed bytea)
returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_org uuid := app.current_org_id();
    v_actor_role app.org_role := app.lock_org_for_change(v_org);
    v_email text := lower(btrim(p_email));
    v_id uuid;
begin
    perform app.require_role('admin', v_actor_role, 'inviting needs the admin role or higher');
    if p_role = 'owner' then
        perform app.require_role('owner', v_actor_role, 'only an owner can invite an owner');
    end if;
    if exists (select 1 from app.memberships m join app.users u on u.id = m.user_id
                where m.org_id = v_org and u.email = v_email) then
        perform app.refuse(409, 'already_member', 'this person is already a member of the organization');
    end if;
    -- A pending invitation past its expiry no longer blocks a new one.
    update app.invitations set status = 'expired', responded_at = now()
     where org_id = v_org and email = v_email and status = 'pending' and expires_at <= now();
    if exists (select 1 from app.invitations i
                where i.org_id = v_org and i.email = v_email and i.status = 'pending') then
        perform app.refuse(409, 'invitation_pending',
            'this email already has a pending invitation; resend it instead');
    end if;
    -- Seats: members plus pending invitations, within the plan (402 plan_limit_reached).
    perform app.take_quota(v_org, 'seats', 1);
    insert into app.invitations (org_id, email, role, token_hash, invited_by, expires_at)
    values (v_org, v_email, p_role, p_token_hash, app.current_user_id(), now() + p_ttl)
    returning id into v_id;
    perform app.enqueue_email(v_email, null, v_org, 'invitation', p_subject, p_body_sealed);
    perform app.audit_org_event(v_org, 'invitation.created', jsonb_build_array(app.audit_target('invitation', v_id, v_email)),
        jsonb_build_object('email', v_email, 'role', p_role));
    return v_id;
end
$$;

-- Locks a pending invitation of the org in context for an admin's change: 404 unless
-- pending there; an invitation to the owner role is managed only by an owner.
create or replace function app.lock_pending_invitation(p_id uuid, p_actor_role app.org_role)
returns app.invitations
    language plpgsql volatile
    set search_path = pg_catalog, pg_temp
    as $$
    declare
        v_inv app.invitations;
    begin
        perform app.require_role('admin', p_actor_role, 'managing invitations needs the admin role or higher');
        select i.* into v_inv from app.invitations i
         where i.org_id = app.current_org_id() and i.id = p_id and i.status = 'pending'
           for update;
        if v_inv.id is null then
            perform app.refuse(404, 'not_found', 'pending invitation not found');
        end if;
        if v_inv.role = 'owner' then
            perform app.require_role('owner', p_actor_role, 'only an owner can manage an invitation to the owner role');
        end if;
        return v_inv;
    end
    $$;

-- Revokes a pending invitation: its token stops working at once.
create or replace function app.revoke_invitation(p_id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_org uuid := app.current_org_id();
    v_inv app.invitations := app.lock_pending_invitation(p_id, app.lock_org_for_change(v_org));
begin
    update app.invitations set status = 'revoked', responded_at = now()
     where org_id = v_org and id = p_id;
    perform app.audit_org_event(v_org, 'invitation.revoked', jsonb_build_array(app.audit_target('invitation', p_id, v_inv.email)),
        jsonb_build_object('email', v_inv.email, 'role', v_inv.role));
end
$$;

-- Replaces a pending invitation's token (the old one dies), restarts its validity
-- (p_ttl) and queues the email with the new token to the invited address.
create or replace function app.resend_invitation(
    p_id uuid, p_token_hash bytea, p_ttl interval, p_subject text, p_body_sealed bytea) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_org uuid := app.current_org_id();
    v_inv app.invitations := app.lock_pending_invitation(p_id, app.lock_org_for_change(v_org));
begin
    update app.invitations set token_hash = p_token_hash, expires_at = now() + p_ttl
     where org_id = v_org and id = p_id;
    perform app.enqueue_email(v_inv.email, null, v_org, 'invitation', p_subject, p_body_sealed);
    perform app.audit_org_event(v_org, 'invitation.resent', jsonb_build_array(app.audit_target('invitation', p_id, v_inv.email)),
        jsonb_build_object('email', v_inv.email, 'role', v_inv.role));
end
$$;

-- ---------------------------------------------------------------------------
-- Invitations, from the invitee's side: found by token hash (the token is the
-- capability), acted on by the signed-in user of the context
-- ---------------------------------------------------------------------------

-- Locks the org of the invitation with token p_token_hash, then the invitation (the
-- same order as the admin functions, so they cannot deadlock), checks it is usable and
-- addressed to the signed-in user. Returns the invitation.
create or replace function app.claim_invitation(p_token_hash bytea) returns app.invitations
    language plpgsql volatile
    set search_path = pg_catalog, pg_temp
    as $$
    declare
        v_inv app.invitations;
        v_email text;
    begin
        perform 1 from app.orgs o
         where o.id = (select i.org_id from app.invitations i where i.token_hash = p_token_hash)
           for no key update;
        select * into v_inv from app.invitations i where i.token_hash = p_token_hash for update;
        perform app.check_invitation_usable(v_inv.status, v_inv.expires_at);
        select u.email into v_email from app.users u where u.id = app.current_user_id();
        if v_email is null or lower(btrim(v_email)) <> v_inv.email then
            perform app.refuse(403, 'invitation_email_mismatch',
                'this invitation was sent to another email address; sign in with that address');
        end if;
        return v_inv;
    end
    $$;

-- The signed-in invitee joins the org with the invited role; it becomes their current
-- org. Returns the org id. 409 already_member.
create or replace function app.accept_invitation(p_token_hash bytea) returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_user uuid := app.current_user_id();
    v_inv app.invitations := app.claim_invitation(p_token_hash);
begin
    if exists (select 1 from app.memberships m where m.org_id = v_inv.org_id and m.user_id = v_user) then
        perform app.refuse(409, 'already_member', 'you are already a member of this organization');
    end if;
    -- The pending invitation already holds a seat; an org over its plan's seats (after a
    -- downgrade) admits nobody until it is under (402 plan_limit_reached).
    perform app.take_quota(v_inv.org_id, 'seats', 0);
    insert into app.memberships (org_id, user_id, role) values (v_inv.org_id, v_user, v_inv.role);
    update app.invitations
       set status = 'accepted', accepted_by = v_user, responded_at = now()
     where org_id = v_inv.org_id and id = v_inv.id;
    -- Accepting proves the invitee reads the invited mailbox (the emails are equal): the
    -- address counts as verified from now on.
    update app.users
       set current_org_id = v_inv.org_id, email_verified_at = coalesce(email_verified_at, now())
     where id = v_user;
    perform app.audit_org_event(v_inv.org_id, 'invitation.accepted',
        jsonb_build_array(app.audit_target('invitation', v_inv.id, v_inv.email), app.audit_user_target(v_user)),
        jsonb_build_object('email', v_inv.email, 'role', v_inv.role, 'invited_by', v_inv.invited_by));
    return v_inv.org_id;
end
$$;

-- The signed-in invitee declines: the token stops working.
create or replace function app.decline_invitation(p_token_hash bytea) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_inv app.invitations := app.claim_invitation(p_token_hash);
begin
    update app.invitations set status = 'declined', responded_at = now()
     where org_id = v_inv.org_id and id = v_inv.id;
    perform app.audit_org_event(v_inv.org_id, 'invitation.declined',
        jsonb_build_array(app.audit_target('invitation', v_inv.id, v_inv.email)),
        jsonb_build_object('email', v_inv.email, 'role', v_inv.role));
end
$$;

-- ---------------------------------------------------------------------------
-- Triggers on app.orgs: creation and settings changes are events too; a personal
-- org cannot be deleted (the owner-only delete policy is in orgs.sql).
-- ---------------------------------------------------------------------------

create or replace function app.orgs_record_event() returns trigger
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if tg_op = 'INSERT' then
        perform app.audit_org_event(new.id, 'org.created', jsonb_build_array(app.audit_target('org', new.id, new.name)),
            jsonb_build_object('name', new.name, 'slug', new.slug, 'personal', new.personal,
                               'owner', new.created_by), new.created_by);
    elsif tg_op = 'UPDATE' then
        perform app.audit_org_event(new.id, 'org.updated', jsonb_build_array(app.audit_target('org', new.id, new.name)),
            jsonb_build_object('changes', app.audit_changes(
                jsonb_build_object('name', old.name, 'slug', old.slug),
                jsonb_build_object('name', new.name, 'slug', new.slug), array['name', 'slug'])));
    else
        -- The log outlives the org (no foreign key) for AUDIT_RETENTION_DAYS.
        perform app.audit_org_event(old.id, 'org.deleted', jsonb_build_array(app.audit_target('org', old.id, old.name)),
            jsonb_build_object('name', old.name, 'slug', old.slug));
        return null;
    end if;
    return null;
end
$$;

-- Runs as the deleting (runtime) role, so it raises directly rather than through
-- app.refuse(). A security definer function (say, a future account deletion) may
-- delete a personal org; request SQL never can.
create or replace function app.orgs_refuse_personal_delete() returns trigger
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    if old.personal and not app.is_definer() then
        raise exception 'a personal organization cannot be deleted'
            using errcode = 'PT409', hint = 'personal_org';
    end if;
    return old;
end
$$;

create or replace trigger orgs_record_created after insert on app.orgs
    for each row execute function app.orgs_record_event();
create or replace trigger orgs_record_updated after update on app.orgs
    for each row when (old.name is distinct from new.name or old.slug is distinct from new.slug)
    execute function app.orgs_record_event();
create or replace trigger orgs_record_deleted after delete on app.orgs
    for each row execute function app.orgs_record_event();
create or replace trigger orgs_refuse_personal_delete before delete on app.orgs
    for each row execute function app.orgs_refuse_personal_delete();

-- ---------------------------------------------------------------------------
-- What each function is, for \df+ and the audit
-- ---------------------------------------------------------------------------

comment on function app.refuse(integer, text, text) is
    'Raises a rule violation: SQLSTATE PT<status>, HINT = the problem code. Internal.';
comment on function app.lock_org_for_change(uuid) is
    'Locks an org against concurrent membership changes; returns the caller''s role read after the lock, 404 if none. Internal.';
comment on function app.personal_org_of(uuid) is
    'The personal org registration created for a user: where they work when their current org is gone.';
comment on function app.check_invitation_usable(text, timestamptz) is
    'Raises 404 for an unknown invitation and 410 for an expired, revoked or used one. Internal.';
comment on function app.create_org(text, text) is
    'Creates a (non-personal) org owned by the user in context. Request role.';
comment on function app.change_member_role(uuid, app.org_role) is
    'Sets a member''s role in the org in context (admin+, owner role by owners, never the last owner). Request role.';
comment on function app.remove_member(uuid) is
    'Removes a member of the org in context, or the caller themselves (leaving); never the last owner. Request role.';
comment on function app.transfer_ownership(uuid) is
    'Owner only: the member becomes an owner, the caller an admin. Request role.';
comment on function app.set_current_org(uuid) is
    'Sets the default org of the user in context (they must be a member). Request role.';
comment on function app.create_invitation(text, app.org_role, bytea, interval, text, bytea) is
    'Invites an email to the org in context and queues the invitation email (admin+). Request role.';
comment on function app.lock_pending_invitation(uuid, app.org_role) is
    'Locks a pending invitation of the org in context for an admin''s change. Internal.';
comment on function app.revoke_invitation(uuid) is 'Revokes a pending invitation of the org in context (admin+). Request role.';
comment on function app.resend_invitation(uuid, bytea, interval, text, bytea) is
    'New token and validity for a pending invitation of the org in context, emailed again (admin+). Request role.';
comment on function app.claim_invitation(bytea) is
    'Locks an invitation by token hash and checks it is usable by the user in context. Internal.';
comment on function app.accept_invitation(bytea) is
    'The user in context joins the org of the invitation (their email must be the invited one). Request role.';
comment on function app.decline_invitation(bytea) is
    'The user in context declines the invitation (their email must be the invited one). Request role.';
comment on function app.orgs_record_event() is 'Trigger: org.created / org.updated / org.deleted audit rows.';
comment on function app.orgs_refuse_personal_delete() is 'Trigger: a personal org cannot be deleted by request SQL.';

-- ---------------------------------------------------------------------------
-- Grants
-- ---------------------------------------------------------------------------

revoke all on function app.refuse(integer, text, text),
    app.lock_org_for_change(uuid),
    app.personal_org_of(uuid),
    app.check_invitation_usable(text, timestamptz), app.lock_pending_invitation(uuid, app.org_role),
    app.claim_invitation(bytea), app.orgs_record_event(), app.orgs_refuse_personal_delete(),
    app.create_org(text, text), app.change_member_role(uuid, app.org_role), app.remove_member(uuid),
    app.transfer_ownership(uuid), app.set_current_org(uuid),
    app.create_invitation(text, app.org_role, bytea, interval, text, bytea),
    app.revoke_invitation(uuid), app.resend_invitation(uuid, bytea, interval, text, bytea),
    app.accept_invitation(bytea), app.decline_invitation(bytea)
    from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant execute on function
    app.create_org(text, text), app.change_member_role(uuid, app.org_role), app.remove_member(uuid),
    app.transfer_ownership(uuid), app.set_current_org(uuid),
    app.create_invitation(text, app.org_role, bytea, interval, text, bytea),
    app.revoke_invitation(uuid), app.resend_invitation(uuid, bytea, interval, text, bytea),
    app.accept_invitation(bytea), app.decline_invitation(bytea)
    to palisade_runtime;
-- GET /v1/auth/me falls back to the personal org (src/api/identity/me.rs).
grant execute on function app.personal_org_of(uuid) to palisade_runtime, palisade_credentials;
