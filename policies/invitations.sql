-- invitations: admins and owners of the org in context read its invitations; nobody
-- writes them directly (only the definer functions of functions_orgs.sql), and no one
-- but those functions ever reads token_hash.
alter table app.invitations enable row level security;
alter table app.invitations force row level security;

drop policy if exists invitations_guard on app.invitations;
create policy invitations_guard on app.invitations as restrictive for all
    to palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (org_id = (select app.current_org_id()));

-- The same guard for the runtime role without the definer escape, so the planner gets a
-- plain `org_id = <param>` index condition (an OR with the definer check is none).
drop policy if exists invitations_guard_runtime on app.invitations;
create policy invitations_guard_runtime on app.invitations as restrictive for all to palisade_runtime
    using (org_id = (select app.current_org_id()))
    with check (org_id = (select app.current_org_id()));

drop policy if exists invitations_select_admin on app.invitations;
create policy invitations_select_admin on app.invitations for select to palisade_runtime
    using ((select app.has_org_role('admin')) and (select app.current_user_id()) is not null);

drop policy if exists invitations_all_definer on app.invitations;
create policy invitations_all_definer on app.invitations for all to palisade_owner
    using (true) with check (true);

-- No insert/update/delete grant: app.create_invitation(), app.revoke_invitation(),
-- app.resend_invitation(), app.accept_invitation(), app.decline_invitation() only.
-- token_hash is absent from the select grant: request SQL can never read it.
revoke all on app.invitations from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select (org_id, id, email, role, status, invited_by, expires_at, responded_at,
              accepted_by, created_at, updated_at)
    on app.invitations to palisade_runtime;

comment on policy invitations_guard on app.invitations is
    'Restrictive tenant guard for the credential and worker lanes: only rows of the org in context. The runtime lane meets invitations_guard_runtime alone (one context check a statement, not two), the owner''s definer functions invitations_all_definer.';
comment on policy invitations_guard_runtime on app.invitations is
    'The tenant guard for the runtime role in index-friendly form (no definer OR).';
comment on policy invitations_select_admin on app.invitations is
    'Signed-in admins and owners read the org''s invitations; members, viewers and API keys see none.';
comment on policy invitations_all_definer on app.invitations is
    'Every write, and every lookup by token hash, goes through the functions in functions_orgs.sql.';
