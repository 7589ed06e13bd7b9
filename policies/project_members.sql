-- project_members: who is in a restricted project. Everyone who sees the project reads
-- its members; org admins and project admins add, change and remove them (signed-in users
-- only: keys do not govern access). The member must be a member of the org (foreign key),
-- and leaving the org removes them from its projects (cascade).
alter table app.project_members enable row level security;
alter table app.project_members force row level security;

drop policy if exists project_members_guard on app.project_members;
create policy project_members_guard on app.project_members as restrictive for all
    to palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (org_id = (select app.current_org_id()));

drop policy if exists project_members_guard_runtime on app.project_members;
create policy project_members_guard_runtime on app.project_members as restrictive for all to palisade_runtime
    using (org_id = (select app.current_org_id()) and not (project_id = any ((select app.hidden_projects())::uuid[])))
    with check (org_id = (select app.current_org_id()) and not (project_id = any ((select app.hidden_projects())::uuid[])));

drop policy if exists project_members_select on app.project_members;
create policy project_members_select on app.project_members for select using (true);

drop policy if exists project_members_insert_admin on app.project_members;
create policy project_members_insert_admin on app.project_members for insert to palisade_runtime
    with check (app.require_project_admin(project_id));

drop policy if exists project_members_update_admin on app.project_members;
create policy project_members_update_admin on app.project_members for update to palisade_runtime
    using (true) with check (app.require_project_admin(project_id));

drop policy if exists project_members_delete_admin on app.project_members;
create policy project_members_delete_admin on app.project_members for delete to palisade_runtime
    using (case when org_id = (select app.current_org_id()) then app.require_project_admin(project_id) else false end);

drop policy if exists project_members_all_definer on app.project_members;
create policy project_members_all_definer on app.project_members for all to palisade_owner
    using (true) with check (true);

revoke all on app.project_members from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select, delete on app.project_members to palisade_runtime;
grant insert (project_id, user_id, role) on app.project_members to palisade_runtime;
grant update (role) on app.project_members to palisade_runtime;

comment on policy project_members_guard on app.project_members is
    'Restrictive tenant guard for the credential and worker lanes: only rows of the org in context. The runtime lane meets project_members_guard_runtime alone (one context check a statement, not two), the owner''s definer functions project_members_all_definer.';
comment on policy project_members_guard_runtime on app.project_members is
    'The runtime sees the members of the projects it sees (not of hidden restricted ones).';
comment on policy project_members_select on app.project_members is 'Whoever sees the project reads its members.';
comment on policy project_members_insert_admin on app.project_members is
    'Org admins and project admins add members (app.require_project_admin, else 403).';
comment on policy project_members_update_admin on app.project_members is
    'Org admins and project admins change a member''s project role.';
comment on policy project_members_delete_admin on app.project_members is
    'Org admins and project admins remove members.';
comment on policy project_members_all_definer on app.project_members is
    'Definer functions: the creator of a restricted project becomes its admin (projects_access_rules).';
