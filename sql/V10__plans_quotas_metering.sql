-- V10: plans, each org's entitlement, quotas, and usage metering.
--
-- Why: a SaaS sells plans (issue 11). A plan's limits are enforced by PostgreSQL in the
-- transaction of the write they limit (a project, a seat, an API key: the definer
-- functions and the trigger of policies/functions_usage.sql), so no replica, race or
-- forgotten check in Rust can go past them. Usage is metered into rollups in the
-- transaction that ingests it, so reading usage never scans raw events.
--
-- Periods are calendar months in UTC, named by their first day (`period date`). An event
-- whose timestamp falls in an earlier (closed) month lands in the open one and is counted
-- as late there: a closed period's rollups never change.
--
-- Row-level security, grants and the only writers of these tables live in
-- policies/plans.sql, policies/usage.sql and policies/functions_usage.sql.

-- The catalogue. A DBA edits it in SQL (see policies/README.md, "Plans and quotas").
create table app.plans (
    id                  text        not null,
    name                text        not null,
    -- Orders the catalogue (free < pro < enterprise).
    rank                integer     not null,
    -- Flat fee per period, in the smallest unit of `currency`.
    monthly_price_cents bigint      not null default 0,
    currency            text        not null default 'usd',
    -- Requests per minute per API key and per user in an org on this plan (the server's
    -- RATE_LIMIT_* stay a ceiling); NULL: only the ceiling.
    requests_per_minute integer,
    -- Feature flags, e.g. custom_meters, audit_log, conversation_history.
    features            text[]      not null default '{}',
    -- The plan new orgs start on: exactly one.
    is_default          boolean     not null default false,
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    constraint plans_pkey primary key (id),
    constraint plans_id_format check (id ~ '^[a-z][a-z0-9_]{1,31}$'),
    constraint plans_name_length check (char_length(name) between 1 and 100),
    constraint plans_rank_key unique (rank),
    constraint plans_price_nonnegative check (monthly_price_cents >= 0),
    constraint plans_currency_format check (currency ~ '^[a-z]{3}$'),
    constraint plans_rpm_positive check (requests_per_minute is null or requests_per_minute > 0),
    constraint plans_features_format check (pg_catalog.array_to_string(features, ',') ~ '^([a-z_]{1,40}(,[a-z_]{1,40})*)?$')
);
create unique index plans_one_default_idx on app.plans ((true)) where is_default;
comment on table app.plans is
    'Plan catalogue: price, requests per minute, feature flags, default for new orgs. Limits per meter in app.plan_limits. Edited by a DBA.';

-- The built-in meters a plan limits:
--   seats, projects, api_keys, storage_bytes  counts of what an org holds (hard limits:
--                                             the write that would pass them is refused);
--   api_calls, events                         per period (hard: refused past the limit;
--                                             soft: billed as overage).
create table app.plan_limits (
    plan_id     text    not null,
    meter       text    not null,
    -- NULL: unlimited.
    included    bigint,
    enforcement text    not null default 'hard',
    -- Overage beyond `included` (soft limits): price per package of `package_size` units,
    -- in the smallest currency unit (fractions allowed).
    overage_price_cents numeric(18, 6) not null default 0,
    package_size bigint not null default 1,
    constraint plan_limits_pkey primary key (plan_id, meter),
    constraint plan_limits_plan_id_fkey foreign key (plan_id) references app.plans (id)
        on update cascade on delete cascade,
    constraint plan_limits_meter_check
        check (meter in ('seats', 'projects', 'api_keys', 'storage_bytes', 'api_calls', 'events')),
    constraint plan_limits_enforcement_check check (enforcement in ('hard', 'soft')),
    -- Counted meters can only be hard: a 51st seat has no overage price.
    constraint plan_limits_soft_per_period
        check (enforcement = 'hard' or meter in ('api_calls', 'events')),
    constraint plan_limits_included_nonnegative check (included is null or included >= 0),
    constraint plan_limits_price_nonnegative check (overage_price_cents >= 0),
    constraint plan_limits_package_positive check (package_size >= 1)
);
comment on table app.plan_limits is
    'Each plan''s limit per built-in meter: included quantity (NULL = unlimited), hard or soft, overage price per package.';

insert into app.plans (id, name, rank, monthly_price_cents, requests_per_minute, features, is_default) values
    ('free', 'Free', 0, 0, 600, '{}', true),
    ('pro', 'Pro', 1, 4900, 3000, '{custom_meters,audit_log,conversation_history}', false),
    ('enterprise', 'Enterprise', 2, 99900, null, '{custom_meters,audit_log,conversation_history,sso}', false);

insert into app.plan_limits (plan_id, meter, included, enforcement, overage_price_cents, package_size) values
    ('free', 'seats', 5, 'hard', 0, 1),
    ('free', 'projects', 10, 'hard', 0, 1),
    ('free', 'api_keys', 10, 'hard', 0, 1),
    ('free', 'storage_bytes', 1073741824, 'hard', 0, 1),
    ('free', 'api_calls', 100000, 'soft', 0, 1),
    ('free', 'events', 10000, 'hard', 0, 1),
    ('pro', 'seats', 50, 'hard', 0, 1),
    ('pro', 'projects', 200, 'hard', 0, 1),
    ('pro', 'api_keys', 100, 'hard', 0, 1),
    ('pro', 'storage_bytes', 107374182400, 'hard', 0, 1),
    -- $0.50 per 10,000 calls and $1.00 per 100,000 events past what is included.
    ('pro', 'api_calls', 1000000, 'soft', 50, 10000),
    ('pro', 'events', 1000000, 'soft', 100, 100000),
    ('enterprise', 'seats', null, 'hard', 0, 1),
    ('enterprise', 'projects', null, 'hard', 0, 1),
    ('enterprise', 'api_keys', null, 'hard', 0, 1),
    ('enterprise', 'storage_bytes', null, 'hard', 0, 1),
    ('enterprise', 'api_calls', null, 'soft', 0, 1),
    ('enterprise', 'events', null, 'soft', 0, 1);

-- Each org's entitlement: its plan, and the billing period once billing manages it.
create table app.org_plans (
    org_id               uuid        not null,
    plan_id              text        not null,
    status               text        not null default 'active',
    -- Set by billing (a later issue); NULL: calendar months.
    current_period_start timestamptz,
    current_period_end   timestamptz,
    changed_at           timestamptz not null default now(),
    constraint org_plans_pkey primary key (org_id),
    constraint org_plans_org_id_fkey foreign key (org_id) references app.orgs (id) on delete cascade,
    -- A plan in use cannot be deleted (move its orgs first).
    constraint org_plans_plan_id_fkey foreign key (plan_id) references app.plans (id) on update cascade,
    constraint org_plans_status_check check (status in ('active', 'trialing', 'past_due', 'canceled')),
    constraint org_plans_period check ((current_period_start is null) = (current_period_end is null)
                                       and (current_period_end is null or current_period_end > current_period_start))
);
create index org_plans_plan_id_idx on app.org_plans (plan_id);
comment on table app.org_plans is
    'Each org''s plan and status (one row per org, created with the org on the default plan).';

insert into app.org_plans (org_id, plan_id)
select o.id, (select p.id from app.plans p where p.is_default) from app.orgs o;

-- Customer-defined meters: what an org meters for its own customers.
create table app.meters (
    org_id         uuid        not null default nullif(current_setting('app.current_org_id', true), '')::uuid,
    id             uuid        not null default gen_random_uuid(),
    key            text        not null,
    name           text        not null,
    aggregation    text        not null,
    -- The event property holding the value (sum, max, latest) or the distinct thing
    -- (unique_count); NULL: the event's `value` (or its `subject` for unique_count).
    value_property text,
    unit           text,
    created_by     uuid,
    created_at     timestamptz not null default now(),
    constraint meters_pkey primary key (org_id, id),
    constraint meters_id_key unique (id),
    constraint meters_org_id_key_key unique (org_id, key),
    constraint meters_key_format check (key ~ '^[a-z][a-z0-9_.-]{0,63}$'),
    constraint meters_key_not_builtin
        check (key not in ('seats', 'projects', 'api_keys', 'storage_bytes', 'api_calls', 'events')),
    constraint meters_name_length check (char_length(name) between 1 and 100),
    constraint meters_aggregation_check check (aggregation in ('sum', 'count', 'max', 'unique_count', 'latest')),
    constraint meters_value_property_format check (value_property ~ '^[A-Za-z_][A-Za-z0-9_.-]{0,63}$'),
    constraint meters_unit_length check (char_length(unit) between 1 and 32),
    constraint meters_org_id_fkey foreign key (org_id) references app.orgs (id) on delete cascade,
    constraint meters_created_by_fkey foreign key (created_by) references app.users (id) on delete set null
);
create index meters_created_by_idx on app.meters (created_by);
comment on table app.meters is
    'Customer-defined meters of an org: key, aggregation (sum, count, max, unique_count, latest), value property, unit.';

-- Raw usage events, idempotent by (org, id).
create table app.usage_events (
    org_id      uuid        not null,
    event_id    text        not null,
    meter_key   text        not null,
    value       numeric,
    subject     text,
    properties  jsonb,
    occurred_at timestamptz not null,
    -- The period it was counted in: occurred_at's month, or the open month for a late event.
    period      date        not null,
    received_at timestamptz not null default now(),
    constraint usage_events_pkey primary key (org_id, event_id),
    constraint usage_events_event_id_length check (char_length(event_id) between 1 and 128),
    constraint usage_events_subject_length check (char_length(subject) <= 256),
    constraint usage_events_properties_object check (jsonb_typeof(properties) = 'object'),
    constraint usage_events_meter_fkey foreign key (org_id, meter_key) references app.meters (org_id, key) on delete cascade
);
comment on table app.usage_events is
    'Raw usage events (idempotent by org and event id); rollups in usage_periods / usage_days are kept in the ingesting transaction.';

-- Rollups, per org, meter and period / day. `value` is the meter's aggregate: a sum, a
-- count, a maximum, a distinct count, or the latest value (the one at latest_at).
create table app.usage_periods (
    org_id          uuid        not null,
    meter_key       text        not null,
    period          date        not null,
    -- How `value` folds a new batch in: the meter's aggregation (api_calls: sum, events: count).
    aggregation     text        not null,
    value           numeric     not null default 0,
    events          bigint      not null default 0,
    late_events     bigint      not null default 0,
    latest_at       timestamptz,
    updated_at      timestamptz not null default now(),
    constraint usage_periods_pkey primary key (org_id, meter_key, period),
    constraint usage_periods_period_month check (period = date_trunc('month', period)::date),
    constraint usage_periods_aggregation_check check (aggregation in ('sum', 'count', 'max', 'unique_count', 'latest')),
    constraint usage_periods_org_id_fkey foreign key (org_id) references app.orgs (id) on delete cascade
);
comment on table app.usage_periods is
    'Usage rollup per org, meter and monthly period (built-in and custom meters). Written only by the metering functions.';

create table app.usage_days (
    org_id     uuid        not null,
    meter_key  text        not null,
    day        date        not null,
    aggregation text       not null,
    value      numeric     not null default 0,
    events     bigint      not null default 0,
    latest_at  timestamptz,
    updated_at timestamptz not null default now(),
    constraint usage_days_pkey primary key (org_id, meter_key, day),
    constraint usage_days_aggregation_check check (aggregation in ('sum', 'count', 'max', 'unique_count', 'latest')),
    constraint usage_days_org_id_fkey foreign key (org_id) references app.orgs (id) on delete cascade
);
comment on table app.usage_days is
    'Usage rollup per org, meter and UTC day, for charts. Written only by the metering functions.';

-- The distinct values a unique_count meter has seen, per period ('month') and per day.
create table app.usage_distinct (
    org_id    uuid not null,
    meter_key text not null,
    span      text not null,
    starts_on date not null,
    value     text not null,
    constraint usage_distinct_pkey primary key (org_id, meter_key, span, starts_on, value),
    constraint usage_distinct_span_check check (span in ('month', 'day')),
    constraint usage_distinct_org_id_fkey foreign key (org_id) references app.orgs (id) on delete cascade
);
comment on table app.usage_distinct is
    'Distinct values seen by unique_count meters per month and per day (so a distinct count is kept without rescanning events).';

-- API calls per period, by API key and by user.
create table app.usage_api_calls (
    org_id       uuid   not null,
    period       date   not null,
    subject_type text   not null,
    subject_id   uuid   not null,
    calls        bigint not null default 0,
    constraint usage_api_calls_pkey primary key (org_id, period, subject_type, subject_id),
    constraint usage_api_calls_subject_type_check check (subject_type in ('api_key', 'user')),
    constraint usage_api_calls_org_id_fkey foreign key (org_id) references app.orgs (id) on delete cascade
);
comment on table app.usage_api_calls is
    'API calls per org and period, by key and by user (flushed from the limiter rows by the worker).';

-- Threshold notices: one row per org, meter, period and threshold, so each is sent once.
create table app.usage_notices (
    org_id     uuid        not null,
    meter_key  text        not null,
    period     date        not null,
    threshold  integer     not null,
    used       numeric     not null,
    quota      bigint      not null,
    created_at timestamptz not null default now(),
    emailed_at timestamptz,
    constraint usage_notices_pkey primary key (org_id, meter_key, period, threshold),
    constraint usage_notices_threshold_check check (threshold in (80, 100)),
    constraint usage_notices_org_id_fkey foreign key (org_id) references app.orgs (id) on delete cascade
);
create index usage_notices_unsent_idx on app.usage_notices (created_at) where emailed_at is null;
comment on table app.usage_notices is
    'Usage threshold notices (80 % and 100 % of a limit), once per org, meter and period; emailed by the worker.';

-- The limiter rows also count each org's API calls between flushes (one update of a row
-- the request writes anyway). The table is UNLOGGED: a crash loses at most the calls since
-- the last flush (the worker flushes every few seconds).
alter table app.rate_limits
    add column org_id uuid,
    add column subject_id uuid,
    add column calls integer not null default 0;
