-- projects: tenant data; every member of the org in context reads, members and up write.
alter table app.projects enable row level security;
alter table app.projects force row level security;

drop policy if exists projects_guard on app.projects;
create policy projects_guard on app.projects as restrictive for all
    to palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (org_id = (select app.current_org_id()));

-- The guard of the runtime role, on its own: every request statement meets this one alone.
-- Written once for everyone with a definer arm (`(select app.is_definer()) or org_id = ...`),
-- the guard was no index condition (every request scanned and sorted the whole table)
-- and, kept beside this one, made each request statement verify the context twice (two
-- InitPlans of app.current_org_id()). So the guard above names the other lanes, this one
-- the runtime lane, and the owner -- every definer function -- passes by
-- projects_all_definer (`true`): no context check inside definer functions either. The
-- isolation report's lane_unguarded and stranger_grant checks keep every other role out.
drop policy if exists projects_guard_runtime on app.projects;
create policy projects_guard_runtime on app.projects as restrictive for all to palisade_runtime
    using (org_id = (select app.current_org_id()))
    with check (org_id = (select app.current_org_id()));

-- Reading needs no role check of its own: the guards admit only rows of the org in
-- context, and an org is bound only with the caller's role in it (viewer and up, or an API
-- key's). Checking has_org_role('viewer') here cost a third MAC verification per statement.
drop policy if exists projects_select_viewer on app.projects;
create policy projects_select_viewer on app.projects for select
    using (true);

-- A restricted project (and so its conversations and documents) is visible only to its
-- project members and to org admins and owners (app.hidden_projects(), an InitPlan).
-- `access <> 'restricted'` comes first: hidden_projects() lists restricted projects only,
-- so a row that is not restricted passes either way, and PostgreSQL runs an InitPlan only
-- when a row needs its value -- a statement that meets no restricted project never
-- verifies the context or queries the org's restricted projects for it.
drop policy if exists projects_restricted_access on app.projects;
create policy projects_restricted_access on app.projects as restrictive for all
    to palisade_runtime, palisade_credentials, palisade_jobs
    using (access <> 'restricted' or not (id = any ((select app.hidden_projects())::uuid[])));

drop policy if exists projects_insert_member on app.projects;
create policy projects_insert_member on app.projects for insert to palisade_runtime
    with check ((select app.require_role('member')));

drop policy if exists projects_update_member on app.projects;
create policy projects_update_member on app.projects for update to palisade_runtime
    using (true)
    with check ((select app.require_role('member')));

drop policy if exists projects_delete_member on app.projects;
-- The CASE makes the role check bite only on a row of the org in context, whatever
-- order the planner evaluates quals in: another org's row is never a 403, only absent.
create policy projects_delete_member on app.projects for delete to palisade_runtime
    using (case when org_id = (select app.current_org_id())
                then (select app.require_role('member')) else false end);

drop policy if exists projects_all_definer on app.projects;
create policy projects_all_definer on app.projects for all to palisade_owner
    using (true) with check (true);

revoke all on app.projects from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select, delete on app.projects to palisade_runtime;
grant insert (name, description, access) on app.projects to palisade_runtime;
grant update (name, description, access) on app.projects to palisade_runtime;

comment on policy projects_guard on app.projects is
    'Restrictive tenant guard for the credential and worker lanes: only rows of the org in context. The runtime lane meets projects_guard_runtime alone (one context check a statement, not two), the owner''s definer functions projects_all_definer.';
comment on policy projects_guard_runtime on app.projects is
    'The tenant guard for the runtime role in index-friendly form (no definer OR).';
comment on policy projects_select_viewer on app.projects is
    'Any member (viewer and up) or key of the org reads: the guards already limit rows to the org in context, bound only with a role.';
comment on policy projects_restricted_access on app.projects is
    'A restricted project is seen only by its project members and org admins (app.hidden_projects()); changing access needs a project admin (trigger projects_access_rules).';
comment on policy projects_insert_member on app.projects is
    'Members and up create; viewers get insufficient_privilege (403).';
comment on policy projects_update_member on app.projects is
    'Members and up edit; a viewer''s update fails its check with insufficient_privilege (403).';
comment on policy projects_delete_member on app.projects is
    'Members and up delete; viewers get insufficient_privilege (403).';
comment on policy projects_all_definer on app.projects is
    'Audited security definer functions (none write projects today).';
