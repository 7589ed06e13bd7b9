-- orgs: a user sees the organizations they are a member of; admins edit, owners delete.
-- Also on this table (functions_orgs.sql): a trigger refusing to delete a personal org
-- (409 personal_org) and triggers recording org_created / org_updated events.
alter table app.orgs enable row level security;
alter table app.orgs force row level security;

-- Scoped to the lanes, the owner admitted by orgs_all_definer alone: as users_guard
-- (users.sql), so the membership subquery is not set up on every definer statement.
drop policy if exists orgs_guard on app.orgs;
create policy orgs_guard on app.orgs as restrictive for all
    to palisade_runtime, palisade_credentials, palisade_jobs
    using (
        id = (select app.current_org_id())
        or exists (select 1 from app.memberships m
                    where m.org_id = orgs.id and m.user_id = (select app.current_user_id()))
    );

drop policy if exists orgs_select_member on app.orgs;
create policy orgs_select_member on app.orgs for select
    using (true);

drop policy if exists orgs_update_admin on app.orgs;
create policy orgs_update_admin on app.orgs for update to palisade_runtime
    using (id = (select app.current_org_id()))
    with check (id = (select app.current_org_id()) and (select app.require_role('admin'))
                and (select app.require_signed_in_user()));

drop policy if exists orgs_delete_owner on app.orgs;
create policy orgs_delete_owner on app.orgs for delete to palisade_runtime
    using (case when id = (select app.current_org_id())
                then (select app.require_role('owner')) and (select app.require_signed_in_user())
                else false end);

drop policy if exists orgs_all_definer on app.orgs;
create policy orgs_all_definer on app.orgs for all to palisade_owner
    using (true) with check (true);

revoke all on app.orgs from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select on app.orgs to palisade_runtime, palisade_credentials;
grant update (name, slug) on app.orgs to palisade_runtime;
grant delete on app.orgs to palisade_runtime;

comment on policy orgs_guard on app.orgs is
    'Restrictive, for every lane (the owner -- the definer functions -- is admitted by orgs_all_definer): an org is visible only to its members or to an API key of its own (the org in context).';
comment on policy orgs_select_member on app.orgs is 'Members read their orgs.';
comment on policy orgs_update_admin on app.orgs is
    'Admins and owners edit the org in context; lower roles get insufficient_privilege (403), API keys api_key_not_allowed (403).';
comment on policy orgs_delete_owner on app.orgs is
    'Only an owner (a signed-in user, never an API key) deletes the org in context (and never a personal org: trigger orgs_refuse_personal_delete).';
comment on policy orgs_all_definer on app.orgs is
    'Org creation (creator becomes owner) goes through app.create_org() and app.register_user().';
