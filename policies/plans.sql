-- plans, plan_limits, org_plans: the catalogue is public (anyone may read what plans
-- exist, signed in or not); an org's entitlement is read by its members and keys. Nobody
-- but the schema owner (a DBA, the migrations) and the definer functions of
-- functions_usage.sql writes them: `palisade orgs set-plan` calls app.set_org_plan() as the
-- owner, and billing (a later issue) will get its own function.
alter table app.plans enable row level security;
alter table app.plans force row level security;

-- No org_id: the catalogue is shared by every tenant. The restrictive guard still states
-- the rule: reading is open, writing is the owner's.
drop policy if exists plans_guard on app.plans;
create policy plans_guard on app.plans as restrictive for all
    using (true)
    with check ((select app.is_definer()));

drop policy if exists plans_select_all on app.plans;
create policy plans_select_all on app.plans for select using (true);

drop policy if exists plans_all_definer on app.plans;
create policy plans_all_definer on app.plans for all to palisade_owner
    using (true) with check (true);

revoke all on app.plans from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select on app.plans to palisade_runtime, palisade_credentials, palisade_jobs;

comment on policy plans_guard on app.plans is
    'Restrictive: the catalogue is readable by all, written only by the schema owner (a DBA, migrations).';
comment on policy plans_select_all on app.plans is 'GET /v1/plans: public catalogue.';
comment on policy plans_all_definer on app.plans is 'A DBA edits plans in SQL as the schema owner.';

alter table app.plan_limits enable row level security;
alter table app.plan_limits force row level security;

drop policy if exists plan_limits_guard on app.plan_limits;
create policy plan_limits_guard on app.plan_limits as restrictive for all
    using (true)
    with check ((select app.is_definer()));

drop policy if exists plan_limits_select_all on app.plan_limits;
create policy plan_limits_select_all on app.plan_limits for select using (true);

drop policy if exists plan_limits_all_definer on app.plan_limits;
create policy plan_limits_all_definer on app.plan_limits for all to palisade_owner
    using (true) with check (true);

revoke all on app.plan_limits from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select on app.plan_limits to palisade_runtime, palisade_credentials, palisade_jobs;

comment on policy plan_limits_guard on app.plan_limits is
    'Restrictive: limits are readable by all, written only by the schema owner.';
comment on policy plan_limits_select_all on app.plan_limits is 'GET /v1/plans: public catalogue.';
comment on policy plan_limits_all_definer on app.plan_limits is 'A DBA edits limits in SQL as the schema owner.';

alter table app.org_plans enable row level security;
alter table app.org_plans force row level security;

drop policy if exists org_plans_guard on app.org_plans;
create policy org_plans_guard on app.org_plans as restrictive for all
    to palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (false);

drop policy if exists org_plans_guard_runtime on app.org_plans;
create policy org_plans_guard_runtime on app.org_plans as restrictive for all to palisade_runtime
    using (org_id = (select app.current_org_id()))
    with check (false);

drop policy if exists org_plans_select_member on app.org_plans;
create policy org_plans_select_member on app.org_plans for select using (true);

drop policy if exists org_plans_all_definer on app.org_plans;
create policy org_plans_all_definer on app.org_plans for all to palisade_owner
    using (true) with check (true);

revoke all on app.org_plans from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select on app.org_plans to palisade_runtime;

comment on policy org_plans_guard on app.org_plans is
    'Restrictive tenant guard for the credential and worker lanes: only rows of the org in context. The runtime lane meets org_plans_guard_runtime alone (one context check a statement, not two), the owner''s definer functions org_plans_all_definer.';
comment on policy org_plans_guard_runtime on app.org_plans is
    'The tenant guard for the runtime role in index-friendly form; the runtime role never writes an entitlement.';
comment on policy org_plans_select_member on app.org_plans is
    'Members and keys of the org read its plan (GET /v1/orgs/{org_id}/plan).';
comment on policy org_plans_all_definer on app.org_plans is
    'app.orgs_start_on_default_plan() (trigger), app.set_org_plan() (owner: palisade orgs set-plan).';
