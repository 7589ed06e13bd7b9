-- meters, usage_events, usage_periods, usage_days, usage_distinct, usage_api_calls,
-- usage_notices: tenant tables. Every member and key of the org in context reads its
-- usage. Customer-defined meters are created by admins (and admin keys) of a plan with the
-- custom_meters feature, through RLS; everything else is written only by the metering
-- functions of functions_usage.sql, so no request SQL can lower (or inflate) a count that
-- billing reads.
alter table app.meters enable row level security;
alter table app.meters force row level security;

drop policy if exists meters_guard on app.meters;
create policy meters_guard on app.meters as restrictive for all
    to palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (org_id = (select app.current_org_id()));

drop policy if exists meters_guard_runtime on app.meters;
create policy meters_guard_runtime on app.meters as restrictive for all to palisade_runtime
    using (org_id = (select app.current_org_id()))
    with check (org_id = (select app.current_org_id()));

drop policy if exists meters_select_member on app.meters;
create policy meters_select_member on app.meters for select using (true);

-- Role first (403 forbidden), then the plan's feature (403 plan_feature_unavailable).
drop policy if exists meters_insert_admin on app.meters;
create policy meters_insert_admin on app.meters for insert to palisade_runtime
    with check ((select app.require_role('admin')) and (select app.require_feature('custom_meters'))
                and created_by is not distinct from (select app.current_user_id()));

drop policy if exists meters_all_definer on app.meters;
create policy meters_all_definer on app.meters for all to palisade_owner
    using (true) with check (true);

revoke all on app.meters from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select on app.meters to palisade_runtime;
grant insert (key, name, aggregation, value_property, unit, created_by) on app.meters to palisade_runtime;

comment on policy meters_guard on app.meters is
    'Restrictive tenant guard for the credential and worker lanes: only rows of the org in context. The runtime lane meets meters_guard_runtime alone (one context check a statement, not two), the owner''s definer functions meters_all_definer.';
comment on policy meters_guard_runtime on app.meters is
    'The tenant guard for the runtime role in index-friendly form (no definer OR).';
comment on policy meters_select_member on app.meters is 'Members and keys of the org read its meters.';
comment on policy meters_insert_admin on app.meters is
    'Admins (users or admin keys) create meters, on a plan with custom_meters (else 403 plan_feature_unavailable), as themselves (created_by = the user in context, NULL for a key). Meters are never updated or deleted: their events and rollups refer to them.';
comment on policy meters_all_definer on app.meters is 'Definer functions (none write meters today).';

alter table app.usage_events enable row level security;
alter table app.usage_events force row level security;

drop policy if exists usage_events_guard on app.usage_events;
create policy usage_events_guard on app.usage_events as restrictive for all
    to palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (false);

drop policy if exists usage_events_guard_runtime on app.usage_events;
create policy usage_events_guard_runtime on app.usage_events as restrictive for all to palisade_runtime
    using (org_id = (select app.current_org_id()))
    with check (false);

drop policy if exists usage_events_select_member on app.usage_events;
create policy usage_events_select_member on app.usage_events for select using (true);

drop policy if exists usage_events_all_definer on app.usage_events;
create policy usage_events_all_definer on app.usage_events for all to palisade_owner
    using (true) with check (true);

revoke all on app.usage_events from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select on app.usage_events to palisade_runtime;

comment on policy usage_events_guard on app.usage_events is
    'Restrictive tenant guard for the credential and worker lanes: only rows of the org in context. The runtime lane meets usage_events_guard_runtime alone (one context check a statement, not two), the owner''s definer functions usage_events_all_definer.';
comment on policy usage_events_guard_runtime on app.usage_events is
    'The tenant guard for the runtime role in index-friendly form; the runtime role never writes usage.';
comment on policy usage_events_select_member on app.usage_events is 'Members and keys of the org read its usage.';
comment on policy usage_events_all_definer on app.usage_events is 'Written only by app.ingest_usage_events().';

alter table app.usage_periods enable row level security;
alter table app.usage_periods force row level security;

drop policy if exists usage_periods_guard on app.usage_periods;
create policy usage_periods_guard on app.usage_periods as restrictive for all
    to palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (false);

drop policy if exists usage_periods_guard_runtime on app.usage_periods;
create policy usage_periods_guard_runtime on app.usage_periods as restrictive for all to palisade_runtime
    using (org_id = (select app.current_org_id()))
    with check (false);

drop policy if exists usage_periods_select_member on app.usage_periods;
create policy usage_periods_select_member on app.usage_periods for select using (true);

drop policy if exists usage_periods_all_definer on app.usage_periods;
create policy usage_periods_all_definer on app.usage_periods for all to palisade_owner
    using (true) with check (true);

revoke all on app.usage_periods from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select on app.usage_periods to palisade_runtime;

comment on policy usage_periods_guard on app.usage_periods is
    'Restrictive tenant guard for the credential and worker lanes: only rows of the org in context. The runtime lane meets usage_periods_guard_runtime alone (one context check a statement, not two), the owner''s definer functions usage_periods_all_definer.';
comment on policy usage_periods_guard_runtime on app.usage_periods is
    'The tenant guard for the runtime role in index-friendly form; the runtime role never writes usage.';
comment on policy usage_periods_select_member on app.usage_periods is 'Members and keys of the org read its usage.';
comment on policy usage_periods_all_definer on app.usage_periods is 'Written only by app.ingest_usage_events(), app.flush_api_calls().';

alter table app.usage_days enable row level security;
alter table app.usage_days force row level security;

drop policy if exists usage_days_guard on app.usage_days;
create policy usage_days_guard on app.usage_days as restrictive for all
    to palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (false);

drop policy if exists usage_days_guard_runtime on app.usage_days;
create policy usage_days_guard_runtime on app.usage_days as restrictive for all to palisade_runtime
    using (org_id = (select app.current_org_id()))
    with check (false);

drop policy if exists usage_days_select_member on app.usage_days;
create policy usage_days_select_member on app.usage_days for select using (true);

drop policy if exists usage_days_all_definer on app.usage_days;
create policy usage_days_all_definer on app.usage_days for all to palisade_owner
    using (true) with check (true);

revoke all on app.usage_days from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select on app.usage_days to palisade_runtime;

comment on policy usage_days_guard on app.usage_days is
    'Restrictive tenant guard for the credential and worker lanes: only rows of the org in context. The runtime lane meets usage_days_guard_runtime alone (one context check a statement, not two), the owner''s definer functions usage_days_all_definer.';
comment on policy usage_days_guard_runtime on app.usage_days is
    'The tenant guard for the runtime role in index-friendly form; the runtime role never writes usage.';
comment on policy usage_days_select_member on app.usage_days is 'Members and keys of the org read its usage.';
comment on policy usage_days_all_definer on app.usage_days is 'Written only by app.ingest_usage_events(), app.flush_api_calls().';

alter table app.usage_distinct enable row level security;
alter table app.usage_distinct force row level security;

drop policy if exists usage_distinct_guard on app.usage_distinct;
create policy usage_distinct_guard on app.usage_distinct as restrictive for all
    to palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (false);

drop policy if exists usage_distinct_guard_runtime on app.usage_distinct;
create policy usage_distinct_guard_runtime on app.usage_distinct as restrictive for all to palisade_runtime
    using (org_id = (select app.current_org_id()))
    with check (false);

drop policy if exists usage_distinct_select_member on app.usage_distinct;
create policy usage_distinct_select_member on app.usage_distinct for select using (true);

drop policy if exists usage_distinct_all_definer on app.usage_distinct;
create policy usage_distinct_all_definer on app.usage_distinct for all to palisade_owner
    using (true) with check (true);

revoke all on app.usage_distinct from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select on app.usage_distinct to palisade_runtime;

comment on policy usage_distinct_guard on app.usage_distinct is
    'Restrictive tenant guard for the credential and worker lanes: only rows of the org in context. The runtime lane meets usage_distinct_guard_runtime alone (one context check a statement, not two), the owner''s definer functions usage_distinct_all_definer.';
comment on policy usage_distinct_guard_runtime on app.usage_distinct is
    'The tenant guard for the runtime role in index-friendly form; the runtime role never writes usage.';
comment on policy usage_distinct_select_member on app.usage_distinct is 'Members and keys of the org read its usage.';
comment on policy usage_distinct_all_definer on app.usage_distinct is 'Written only by app.ingest_usage_events().';

alter table app.usage_api_calls enable row level security;
alter table app.usage_api_calls force row level security;

drop policy if exists usage_api_calls_guard on app.usage_api_calls;
create policy usage_api_calls_guard on app.usage_api_calls as restrictive for all
    to palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (false);

drop policy if exists usage_api_calls_guard_runtime on app.usage_api_calls;
create policy usage_api_calls_guard_runtime on app.usage_api_calls as restrictive for all to palisade_runtime
    using (org_id = (select app.current_org_id()))
    with check (false);

drop policy if exists usage_api_calls_select_member on app.usage_api_calls;
create policy usage_api_calls_select_member on app.usage_api_calls for select using (true);

drop policy if exists usage_api_calls_all_definer on app.usage_api_calls;
create policy usage_api_calls_all_definer on app.usage_api_calls for all to palisade_owner
    using (true) with check (true);

revoke all on app.usage_api_calls from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select on app.usage_api_calls to palisade_runtime;

comment on policy usage_api_calls_guard on app.usage_api_calls is
    'Restrictive tenant guard for the credential and worker lanes: only rows of the org in context. The runtime lane meets usage_api_calls_guard_runtime alone (one context check a statement, not two), the owner''s definer functions usage_api_calls_all_definer.';
comment on policy usage_api_calls_guard_runtime on app.usage_api_calls is
    'The tenant guard for the runtime role in index-friendly form; the runtime role never writes usage.';
comment on policy usage_api_calls_select_member on app.usage_api_calls is 'Members and keys of the org read its usage.';
comment on policy usage_api_calls_all_definer on app.usage_api_calls is 'Written only by app.flush_api_calls().';

alter table app.usage_notices enable row level security;
alter table app.usage_notices force row level security;

drop policy if exists usage_notices_guard on app.usage_notices;
create policy usage_notices_guard on app.usage_notices as restrictive for all
    to palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (false);

drop policy if exists usage_notices_guard_runtime on app.usage_notices;
create policy usage_notices_guard_runtime on app.usage_notices as restrictive for all to palisade_runtime
    using (org_id = (select app.current_org_id()))
    with check (false);

drop policy if exists usage_notices_select_member on app.usage_notices;
create policy usage_notices_select_member on app.usage_notices for select using (true);

drop policy if exists usage_notices_all_definer on app.usage_notices;
create policy usage_notices_all_definer on app.usage_notices for all to palisade_owner
    using (true) with check (true);

revoke all on app.usage_notices from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select on app.usage_notices to palisade_runtime;

comment on policy usage_notices_guard on app.usage_notices is
    'Restrictive tenant guard for the credential and worker lanes: only rows of the org in context. The runtime lane meets usage_notices_guard_runtime alone (one context check a statement, not two), the owner''s definer functions usage_notices_all_definer.';
comment on policy usage_notices_guard_runtime on app.usage_notices is
    'The tenant guard for the runtime role in index-friendly form; the runtime role never writes usage.';
comment on policy usage_notices_select_member on app.usage_notices is 'Members and keys of the org read its usage.';
comment on policy usage_notices_all_definer on app.usage_notices is 'Written only by app.note_usage() (from the quota and metering functions), app.claim_usage_notices(), app.mark_usage_notice_emailed().';
