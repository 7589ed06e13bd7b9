-- billing_customers, billing_subscriptions, billing_sessions, billing_events: an org's
-- billing is read by its admins and owners (signed in: API keys never see billing) and
-- written by nobody but the definer functions of functions_billing.sql -- the checkout
-- functions for the owner, the webhook receiver, and the worker that applies what Stripe
-- reports. The events table is the receiver's and the worker's alone.
alter table app.billing_customers enable row level security;
alter table app.billing_customers force row level security;

drop policy if exists billing_customers_guard on app.billing_customers;
create policy billing_customers_guard on app.billing_customers as restrictive for all
    to palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (false);

drop policy if exists billing_customers_guard_runtime on app.billing_customers;
create policy billing_customers_guard_runtime on app.billing_customers as restrictive for all to palisade_runtime
    using (org_id = (select app.current_org_id()))
    with check (false);

drop policy if exists billing_customers_select_admin on app.billing_customers;
create policy billing_customers_select_admin on app.billing_customers for select to palisade_runtime
    using ((select app.has_org_role('admin')) and (select app.current_user_id()) is not null);

drop policy if exists billing_customers_all_definer on app.billing_customers;
create policy billing_customers_all_definer on app.billing_customers for all to palisade_owner
    using (true) with check (true);

revoke all on app.billing_customers from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select on app.billing_customers to palisade_runtime;

comment on policy billing_customers_guard on app.billing_customers is
    'Restrictive tenant guard for the credential and worker lanes: only rows of the org in context. The runtime lane meets billing_customers_guard_runtime alone (one context check a statement, not two), the owner''s definer functions billing_customers_all_definer.';
comment on policy billing_customers_guard_runtime on app.billing_customers is
    'The tenant guard for the runtime role in index-friendly form; the runtime role never writes billing.';
comment on policy billing_customers_select_admin on app.billing_customers is
    'Signed-in admins and owners read their org''s billing (GET /v1/orgs/{org_id}/billing...). API keys see nothing.';
comment on policy billing_customers_all_definer on app.billing_customers is
    'functions_billing.sql: the checkout functions (owner), the webhook receiver, the worker applying events.';

alter table app.billing_subscriptions enable row level security;
alter table app.billing_subscriptions force row level security;

drop policy if exists billing_subscriptions_guard on app.billing_subscriptions;
create policy billing_subscriptions_guard on app.billing_subscriptions as restrictive for all
    to palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (false);

drop policy if exists billing_subscriptions_guard_runtime on app.billing_subscriptions;
create policy billing_subscriptions_guard_runtime on app.billing_subscriptions as restrictive for all to palisade_runtime
    using (org_id = (select app.current_org_id()))
    with check (false);

drop policy if exists billing_subscriptions_select_admin on app.billing_subscriptions;
create policy billing_subscriptions_select_admin on app.billing_subscriptions for select to palisade_runtime
    using ((select app.has_org_role('admin')) and (select app.current_user_id()) is not null);

drop policy if exists billing_subscriptions_all_definer on app.billing_subscriptions;
create policy billing_subscriptions_all_definer on app.billing_subscriptions for all to palisade_owner
    using (true) with check (true);

revoke all on app.billing_subscriptions from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select on app.billing_subscriptions to palisade_runtime;

comment on policy billing_subscriptions_guard on app.billing_subscriptions is
    'Restrictive tenant guard for the credential and worker lanes: only rows of the org in context. The runtime lane meets billing_subscriptions_guard_runtime alone (one context check a statement, not two), the owner''s definer functions billing_subscriptions_all_definer.';
comment on policy billing_subscriptions_guard_runtime on app.billing_subscriptions is
    'The tenant guard for the runtime role in index-friendly form; the runtime role never writes billing.';
comment on policy billing_subscriptions_select_admin on app.billing_subscriptions is
    'Signed-in admins and owners read their org''s billing (GET /v1/orgs/{org_id}/billing...). API keys see nothing.';
comment on policy billing_subscriptions_all_definer on app.billing_subscriptions is
    'functions_billing.sql: the checkout functions (owner), the webhook receiver, the worker applying events.';

alter table app.billing_sessions enable row level security;
alter table app.billing_sessions force row level security;

drop policy if exists billing_sessions_guard on app.billing_sessions;
create policy billing_sessions_guard on app.billing_sessions as restrictive for all
    to palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (false);

drop policy if exists billing_sessions_guard_runtime on app.billing_sessions;
create policy billing_sessions_guard_runtime on app.billing_sessions as restrictive for all to palisade_runtime
    using (org_id = (select app.current_org_id()))
    with check (false);

drop policy if exists billing_sessions_select_admin on app.billing_sessions;
create policy billing_sessions_select_admin on app.billing_sessions for select to palisade_runtime
    using ((select app.has_org_role('admin')) and (select app.current_user_id()) is not null);

drop policy if exists billing_sessions_all_definer on app.billing_sessions;
create policy billing_sessions_all_definer on app.billing_sessions for all to palisade_owner
    using (true) with check (true);

revoke all on app.billing_sessions from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select on app.billing_sessions to palisade_runtime;

comment on policy billing_sessions_guard on app.billing_sessions is
    'Restrictive tenant guard for the credential and worker lanes: only rows of the org in context. The runtime lane meets billing_sessions_guard_runtime alone (one context check a statement, not two), the owner''s definer functions billing_sessions_all_definer.';
comment on policy billing_sessions_guard_runtime on app.billing_sessions is
    'The tenant guard for the runtime role in index-friendly form; the runtime role never writes billing.';
comment on policy billing_sessions_select_admin on app.billing_sessions is
    'Signed-in admins and owners read their org''s billing (GET /v1/orgs/{org_id}/billing...). API keys see nothing.';
comment on policy billing_sessions_all_definer on app.billing_sessions is
    'functions_billing.sql: the checkout functions (owner), the webhook receiver, the worker applying events.';

alter table app.billing_events enable row level security;
alter table app.billing_events force row level security;

drop policy if exists billing_events_guard on app.billing_events;
create policy billing_events_guard on app.billing_events as restrictive for all
    to palisade_runtime, palisade_credentials, palisade_jobs
    using (false) with check (false);

drop policy if exists billing_events_all_definer on app.billing_events;
create policy billing_events_all_definer on app.billing_events for all to palisade_owner
    using (true) with check (true);

revoke all on app.billing_events from public, palisade_runtime, palisade_credentials, palisade_jobs;

comment on policy billing_events_guard on app.billing_events is
    'Restrictive: webhook events are read and written only by definer functions (receiver, worker).';
comment on policy billing_events_all_definer on app.billing_events is
    'app.billing_receive_event() (credential role, the webhook) and the worker''s claim/apply functions.';
