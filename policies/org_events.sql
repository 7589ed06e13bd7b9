-- org_events: append-only; admins and owners of the org in context read it; only the
-- definer functions of functions_orgs.sql write it, in the transaction of the change.
alter table app.org_events enable row level security;
alter table app.org_events force row level security;

drop policy if exists org_events_guard on app.org_events;
create policy org_events_guard on app.org_events as restrictive for all
    using ((select app.is_definer()) or org_id = (select app.current_org_id()))
    with check ((select app.is_definer()) or org_id = (select app.current_org_id()));

-- The same guard for the runtime role without the definer escape, so the planner gets a
-- plain `org_id = <param>` index condition (an OR with the definer check is none).
drop policy if exists org_events_guard_runtime on app.org_events;
create policy org_events_guard_runtime on app.org_events as restrictive for all to palisade_runtime
    using (org_id = (select app.current_org_id()))
    with check (org_id = (select app.current_org_id()));

drop policy if exists org_events_select_admin on app.org_events;
create policy org_events_select_admin on app.org_events for select
    using (((select app.has_org_role('admin')) and (select app.current_user_id()) is not null)
           or (select app.is_definer()));

drop policy if exists org_events_insert_definer on app.org_events;
create policy org_events_insert_definer on app.org_events for insert
    with check ((select app.is_definer()));

-- Deliberately no update or delete policy: not even the definer functions can rewrite
-- history (rows go only with their org, by the foreign key's cascade).
revoke all on app.org_events from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select on app.org_events to palisade_runtime;

comment on policy org_events_guard on app.org_events is
    'Restrictive tenant guard: only events of the org in context (or the audited definer functions).';
comment on policy org_events_guard_runtime on app.org_events is
    'The tenant guard for the runtime role in index-friendly form (no definer OR).';
comment on policy org_events_select_admin on app.org_events is
    'Signed-in admins and owners read their org''s events; members, viewers and API keys see none.';
comment on policy org_events_insert_definer on app.org_events is
    'Written only by app.record_org_event(), called from the definer functions in functions_orgs.sql.';
