-- functions_orgs: every write to memberships, invitations and org_events, and the
-- role rules they enforce. A DBA reads the whole permission model of issue 4 here.
--
-- Roles, ranked (app.role_rank): owner > admin > member > viewer.
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
-- Each change writes an app.org_events row in the same transaction.
--
-- Custom errors: SQLSTATE 'PT' || HTTP status, HINT = the problem's stable `code`
-- (src/db/errors.rs maps them; src/api/problem.rs lists the known codes).
-- Definer functions run as the owner of schema app (app.is_definer() is true inside),
-- pin search_path, are revoked from public and granted to palisade_runtime only.
-- Helpers without security definer are revoked from public and granted to no one:
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

-- Raises insufficient_privilege (HTTP 403 `forbidden`) unless p_role ranks at least p_min.
create or replace function app.require_rank(p_role text, p_min text, p_message text) returns void
    language plpgsql volatile
    set search_path = pg_catalog, pg_temp
    as $$
    begin
        if app.role_rank(p_role) < app.role_rank(p_min) then
            raise exception '%', p_message using errcode = 'insufficient_privilege';
        end if;
    end
    $$;

-- Appends an event for p_org_id, acted by the user in context.
create or replace function app.record_org_event(
    p_org_id uuid, p_action text, p_target_user_id uuid, p_target_email text, p_metadata jsonb)
returns void
    language sql volatile
    set search_path = pg_catalog, pg_temp
    as $$
        insert into app.org_events (org_id, actor_user_id, action, target_user_id, target_email, metadata)
        values (p_org_id, app.current_user_id(), p_action, p_target_user_id, p_target_email,
                coalesce(p_metadata, '{}'::jsonb))
    $$;

-- Locks org p_org_id against concurrent membership changes and returns the role of the
-- user in context in it, read after the lock. Not a member (or no such org): 404, so
-- another tenant's org is never confirmed to exist.
create or replace function app.lock_org_for_change(p_org_id uuid) returns text
    language plpgsql volatile
    set search_path = pg_catalog, pg_temp
    as $$
    declare
        v_role text;
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

-- Seat limit hook for the plans issue: the most members (plus pending invitations) an
-- org may have; null = unlimited. Today every org is unlimited.
create or replace function app.org_seat_limit(p_org_id uuid) returns integer
    language sql stable
    set search_path = pg_catalog, pg_temp
    as $$ select null::integer $$;

-- The organization a user works in when theirs goes away: their personal org.
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
create or replace function app.change_member_role(p_user_id uuid, p_role text) returns text
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_org uuid := app.current_org_id();
    v_actor_role text := app.lock_org_for_change(v_org);
    v_old text;
begin
    perform app.require_rank(v_actor_role, 'admin', 'changing roles needs the admin role or higher');
    if app.role_rank(p_role) = 0 then
        perform app.refuse(422, 'validation_failed', 'role must be owner, admin, member or viewer');
    end if;
    select m.role into v_old from app.memberships m where m.org_id = v_org and m.user_id = p_user_id;
    if v_old is null then
        perform app.refuse(404, 'not_found', 'member not found');
    end if;
    if 'owner' in (v_old, p_role) then
        perform app.require_rank(v_actor_role, 'owner', 'only an owner can grant or remove the owner role');
    end if;
    if v_old = p_role then
        return v_old;
    end if;
    if v_old = 'owner' and (select count(*) from app.memberships m
                             where m.org_id = v_org and m.role = 'owner') = 1 then
        perform app.refuse(409, 'last_owner', 'an organization must keep at least one owner');
    end if;
    update app.memberships set role = p_role, updated_at = now()
     where org_id = v_org and user_id = p_user_id;
    perform app.record_org_event(v_org, 'member_role_changed', p_user_id, null,
        jsonb_build_object('from', v_old, 'to', p_role));
    return p_role;
end
$$;

-- Removes p_user_id from the org in context. Yourself (leaving): any role. Someone
-- else: admin+, and an owner only by an owner. Never the last owner.
create or replace function app.remove_member(p_user_id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_org uuid := app.current_org_id();
    v_actor_role text := app.lock_org_for_change(v_org);
    v_leaving boolean := p_user_id = app.current_user_id();
    v_role text;
    v_email text;
begin
    if not v_leaving then
        perform app.require_rank(v_actor_role, 'admin', 'removing members needs the admin role or higher');
    end if;
    select m.role, u.email into v_role, v_email
      from app.memberships m join app.users u on u.id = m.user_id
     where m.org_id = v_org and m.user_id = p_user_id;
    if v_role is null then
        perform app.refuse(404, 'not_found', 'member not found');
    end if;
    if v_role = 'owner' then
        perform app.require_rank(v_actor_role, 'owner', 'only an owner can remove an owner');
        if (select count(*) from app.memberships m where m.org_id = v_org and m.role = 'owner') = 1 then
            perform app.refuse(409, 'last_owner',
                'an organization must keep at least one owner: transfer ownership first');
        end if;
    end if;
    delete from app.memberships where org_id = v_org and user_id = p_user_id;
    update app.users set current_org_id = app.personal_org_of(p_user_id), updated_at = now()
     where id = p_user_id and current_org_id = v_org;
    perform app.record_org_event(v_org, case when v_leaving then 'member_left' else 'member_removed' end,
        p_user_id, v_email, jsonb_build_object('role', v_role));
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
    v_actor_role text := app.lock_org_for_change(v_org);
    v_old text;
begin
    perform app.require_rank(v_actor_role, 'owner', 'only an owner can transfer ownership');
    if p_user_id = v_actor then
        perform app.refuse(422, 'validation_failed', 'ownership must be transferred to another member');
    end if;
    select m.role into v_old from app.memberships m where m.org_id = v_org and m.user_id = p_user_id;
    if v_old is null then
        perform app.refuse(404, 'not_found', 'member not found');
    end if;
    update app.memberships set role = 'owner', updated_at = now()
     where org_id = v_org and user_id = p_user_id;
    update app.memberships set role = 'admin', updated_at = now()
     where org_id = v_org and user_id = v_actor;
    perform app.record_org_event(v_org, 'ownership_transferred', p_user_id, null,
        jsonb_build_object('target_previous_role', v_old, 'actor_new_role', 'admin'));
end
$$;

-- The signed-in user's default organization; they must be a member (else 404).
create or replace function app.set_current_org(p_org_id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    update app.users u set current_org_id = p_org_id, updated_at = now()
     where u.id = app.current_user_id()
       and exists (select 1 from app.memberships m where m.org_id = p_org_id and m.user_id = u.id);
    if not found then
        perform app.refuse(404, 'not_found', 'organization not found');
    end if;
end
$$;

-- ---------------------------------------------------------------------------
-- Invitations, managed by admins of the org in context
-- ---------------------------------------------------------------------------

-- Invites p_email with p_role; the token (whose SHA-256 is p_token_hash) is emailed by
-- the caller in the same transaction. Valid 7 days. Admin+; the owner role only by an
-- owner. 409 already_member / invitation_pending / seat_limit_reached.
create or replace function app.create_invitation(p_email text, p_role text, p_token_hash bytea)
returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_org uuid := app.current_org_id();
    v_actor_role text := app.lock_org_for_change(v_org);
    v_email text := lower(btrim(p_email));
    v_limit integer;
    v_id uuid;
begin
    perform app.require_rank(v_actor_role, 'admin', 'inviting needs the admin role or higher');
    if app.role_rank(p_role) = 0 then
        perform app.refuse(422, 'validation_failed', 'role must be owner, admin, member or viewer');
    end if;
    if p_role = 'owner' then
        perform app.require_rank(v_actor_role, 'owner', 'only an owner can invite an owner');
    end if;
    if exists (select 1 from app.memberships m join app.users u on u.id = m.user_id
                where m.org_id = v_org and u.email = v_email) then
        perform app.refuse(409, 'already_member', 'this person is already a member of the organization');
    end if;
    -- A pending invitation past its expiry no longer blocks a new one.
    update app.invitations set status = 'expired', responded_at = now(), updated_at = now()
     where org_id = v_org and email = v_email and status = 'pending' and expires_at <= now();
    if exists (select 1 from app.invitations i
                where i.org_id = v_org and i.email = v_email and i.status = 'pending') then
        perform app.refuse(409, 'invitation_pending',
            'this email already has a pending invitation; resend it instead');
    end if;
    v_limit := app.org_seat_limit(v_org);
    if v_limit is not null
       and (select count(*) from app.memberships m where m.org_id = v_org)
         + (select count(*) from app.invitations i where i.org_id = v_org and i.status = 'pending')
           >= v_limit then
        perform app.refuse(409, 'seat_limit_reached', 'the organization has no free seat for another member');
    end if;
    insert into app.invitations (org_id, email, role, token_hash, invited_by, expires_at)
    values (v_org, v_email, p_role, p_token_hash, app.current_user_id(), now() + interval '7 days')
    returning id into v_id;
    perform app.record_org_event(v_org, 'invitation_created', null, v_email,
        jsonb_build_object('invitation_id', v_id, 'role', p_role));
    return v_id;
end
$$;

-- Locks a pending invitation of the org in context for an admin's change: 404 unless
-- pending there; an invitation to the owner role is managed only by an owner.
create or replace function app.lock_pending_invitation(p_id uuid, p_actor_role text) returns text
    language plpgsql volatile
    set search_path = pg_catalog, pg_temp
    as $$
    declare
        v_role text;
    begin
        perform app.require_rank(p_actor_role, 'admin', 'managing invitations needs the admin role or higher');
        select i.role into v_role from app.invitations i
         where i.org_id = app.current_org_id() and i.id = p_id and i.status = 'pending'
           for update;
        if v_role is null then
            perform app.refuse(404, 'not_found', 'pending invitation not found');
        end if;
        if v_role = 'owner' then
            perform app.require_rank(p_actor_role, 'owner', 'only an owner can manage an invitation to the owner role');
        end if;
        return v_role;
    end
    $$;

-- Revokes a pending invitation: its token stops working at once.
create or replace function app.revoke_invitation(p_id uuid) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_org uuid := app.current_org_id();
    v_role text := app.lock_pending_invitation(p_id, app.lock_org_for_change(v_org));
    v_email text;
begin
    update app.invitations set status = 'revoked', responded_at = now(), updated_at = now()
     where org_id = v_org and id = p_id
    returning email into v_email;
    perform app.record_org_event(v_org, 'invitation_revoked', null, v_email,
        jsonb_build_object('invitation_id', p_id, 'role', v_role));
end
$$;

-- Replaces a pending invitation's token (the old one dies) and restarts its 7 days.
create or replace function app.resend_invitation(p_id uuid, p_token_hash bytea) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_org uuid := app.current_org_id();
    v_role text := app.lock_pending_invitation(p_id, app.lock_org_for_change(v_org));
    v_email text;
begin
    update app.invitations
       set token_hash = p_token_hash, expires_at = now() + interval '7 days', updated_at = now()
     where org_id = v_org and id = p_id
    returning email into v_email;
    perform app.record_org_event(v_org, 'invitation_resent', null, v_email,
        jsonb_build_object('invitation_id', p_id, 'role', v_role));
end
$$;

-- ---------------------------------------------------------------------------
-- Invitations, from the invitee's side: cross-tenant by nature, found by token hash
-- ---------------------------------------------------------------------------

-- What the invitee sees before accepting (no sign-in needed: the token is the
-- capability). 404 unknown token; 410 expired, revoked or used.
create or replace function app.invitation_lookup(p_token_hash bytea)
returns table (org_id uuid, org_name text, inviter_name text, email text, role text,
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
    insert into app.memberships (org_id, user_id, role) values (v_inv.org_id, v_user, v_inv.role);
    update app.invitations
       set status = 'accepted', accepted_by = v_user, responded_at = now(), updated_at = now()
     where org_id = v_inv.org_id and id = v_inv.id;
    -- Accepting proves the invitee reads the invited mailbox (the emails are equal): the
    -- address counts as verified from now on.
    update app.users
       set current_org_id = v_inv.org_id, email_verified_at = coalesce(email_verified_at, now()),
           updated_at = now()
     where id = v_user;
    perform app.record_org_event(v_inv.org_id, 'invitation_accepted', v_user, v_inv.email,
        jsonb_build_object('invitation_id', v_inv.id, 'role', v_inv.role,
                           'invited_by', v_inv.invited_by));
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
    update app.invitations set status = 'declined', responded_at = now(), updated_at = now()
     where org_id = v_inv.org_id and id = v_inv.id;
    perform app.record_org_event(v_inv.org_id, 'invitation_declined', app.current_user_id(),
        v_inv.email, jsonb_build_object('invitation_id', v_inv.id, 'role', v_inv.role));
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
        perform app.record_org_event(new.id, 'org_created', new.created_by, null,
            jsonb_build_object('name', new.name, 'slug', new.slug, 'personal', new.personal,
                               'owner', new.created_by));
    else
        perform app.record_org_event(new.id, 'org_updated', null, null,
            jsonb_build_object('from', jsonb_build_object('name', old.name, 'slug', old.slug),
                               'to', jsonb_build_object('name', new.name, 'slug', new.slug)));
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
create or replace trigger orgs_refuse_personal_delete before delete on app.orgs
    for each row execute function app.orgs_refuse_personal_delete();

-- ---------------------------------------------------------------------------
-- Grants
-- ---------------------------------------------------------------------------

revoke all on function app.refuse(integer, text, text), app.require_rank(text, text, text),
    app.record_org_event(uuid, text, uuid, text, jsonb), app.lock_org_for_change(uuid),
    app.org_seat_limit(uuid), app.personal_org_of(uuid),
    app.check_invitation_usable(text, timestamptz), app.lock_pending_invitation(uuid, text),
    app.claim_invitation(bytea), app.orgs_record_event(), app.orgs_refuse_personal_delete(),
    app.change_member_role(uuid, text), app.remove_member(uuid), app.transfer_ownership(uuid),
    app.set_current_org(uuid), app.create_invitation(text, text, bytea),
    app.revoke_invitation(uuid), app.resend_invitation(uuid, bytea),
    app.invitation_lookup(bytea), app.accept_invitation(bytea), app.decline_invitation(bytea)
    from public;
grant execute on function
    app.change_member_role(uuid, text), app.remove_member(uuid), app.transfer_ownership(uuid),
    app.set_current_org(uuid), app.create_invitation(text, text, bytea),
    app.revoke_invitation(uuid), app.resend_invitation(uuid, bytea),
    app.invitation_lookup(bytea), app.accept_invitation(bytea), app.decline_invitation(bytea)
    to palisade_runtime;
