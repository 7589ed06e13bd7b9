-- functions_usage: plans, quotas and metering. A DBA reads here where every limit of a
-- plan is enforced and how every usage figure is kept.
--
-- Quotas (plan_limits, enforcement 'hard') are checked by PostgreSQL in the transaction of
-- the write they limit, after a row lock on the org, so concurrent writes are counted one
-- after the other and exactly the plan's number get in:
--   projects   trigger projects_check_quota (before insert; counts the org's projects);
--   seats      app.create_invitation() and app.accept_invitation() (members + pending
--              invitations);
--   api_keys   app.create_api_key() (live keys: not revoked, not expired);
--   events     app.ingest_usage_events() (events this period; past the limit each event
--              is rejected with reason plan_limit_reached).
-- A refusal is SQLSTATE PT402, HINT plan_limit_reached, DETAIL a JSON object {meter, limit,
-- used, plan} (HTTP 402, those members in the problem). A downgrade deletes nothing: an org
-- over its new limits keeps what it has and cannot add until it is under.
-- Features (plans.features) are checked by app.require_feature(): PT403
-- plan_feature_unavailable.
--
-- Metering: every rollup (usage_periods per month, usage_days per UTC day) is written in
-- the transaction that ingests its events, one upsert per meter per batch:
--   custom meters  app.ingest_usage_events(): sum, count, max, unique_count (distinct
--                  values kept in usage_distinct), latest;
--   events         the same function: accepted events of every custom meter;
--   api_calls      the limiter statement counts each org request in its bucket row
--                  (rate_limits.calls); the worker's app.flush_api_calls() moves the counts
--                  to usage_api_calls (by key and by user) and the rollups every few
--                  seconds. A crash loses at most the calls since the last flush.
-- Threshold notices: app.note_usage() inserts one usage_notices row per org, meter, period
-- and threshold (80, 100) -- the primary key makes it once, however many transactions
-- cross it at the same time -- with an audit row; the worker emails the org's owners
-- and admins (app.claim_usage_notices(), app.send_usage_notice()).

-- ---------------------------------------------------------------------------
-- Helpers (internal: called by the definer functions below)
-- ---------------------------------------------------------------------------

-- The usage period (calendar month, UTC) of a moment, as its first day.
create or replace function app.period_of(p_at timestamptz) returns date
    language plpgsql immutable parallel safe
    set search_path = pg_catalog, pg_temp
    as $$ begin return pg_catalog.date_trunc('month', p_at at time zone 'UTC')::date; end $$;

-- An org's plan and its limit for p_meter (NULL included: unlimited).
create or replace function app.org_limit(
    p_org_id uuid, p_meter text, out plan_id text, out included bigint, out enforcement text)
    language plpgsql stable
    set search_path = pg_catalog, pg_temp
    as $$
    begin
        select op.plan_id, l.included, coalesce(l.enforcement, 'hard')
          into plan_id, included, enforcement
          from app.org_plans op
          left join app.plan_limits l on l.plan_id = op.plan_id and l.meter = p_meter
         where op.org_id = p_org_id;
    end
    $$;

-- Raises the quota refusal: HTTP 402 plan_limit_reached, with limit, used and plan.
create or replace function app.refuse_plan_limit(p_meter text, p_plan text, p_limit bigint, p_used numeric)
returns void
    language plpgsql volatile
    set search_path = pg_catalog, pg_temp
    as $$
    begin
        raise exception using errcode = 'PT402', hint = 'plan_limit_reached',
            message = pg_catalog.format(
                'the %s plan allows %s %s; %s in use. Upgrade the plan or free some up.',
                p_plan, p_limit, pg_catalog.replace(p_meter, '_', ' '), p_used),
            detail = pg_catalog.jsonb_build_object('meter', p_meter, 'limit', p_limit,
                                                   'used', p_used, 'plan', p_plan)::text;
    end
    $$;

-- An org's rollup of p_meter in the open period (0 without one).
create or replace function app.period_usage(p_org_id uuid, p_meter text) returns bigint
    language plpgsql stable
    set search_path = pg_catalog, pg_temp
    as $$
    begin
        return coalesce((select u.value from app.usage_periods u
                          where u.org_id = p_org_id and u.meter_key = p_meter
                            and u.period = app.period_of(now())), 0)::bigint;
    end
    $$;

-- How a rollup folds a batch's figure (p_new, its latest moment p_new_at) into the stored
-- one (p_old at p_old_at): the larger for max, the later for latest, else the sum (sum,
-- count, and unique_count, whose batch figure counts only values new to the rollup).
create or replace function app.usage_fold(
    p_aggregation text, p_old numeric, p_new numeric, p_old_at timestamptz, p_new_at timestamptz)
returns numeric
    language plpgsql immutable parallel safe
    set search_path = pg_catalog, pg_temp
    as $$
    begin
        return case p_aggregation
                   when 'max' then greatest(p_old, p_new)
                   when 'latest' then case when p_old_at is null or p_new_at >= p_old_at
                                           then p_new else p_old end
                   else p_old + p_new end;
    end
    $$;

-- What an org holds of a counted meter now.
create or replace function app.quota_used(p_org_id uuid, p_meter text) returns bigint
    language plpgsql stable
    set search_path = pg_catalog, pg_temp
    as $$
    begin
        return case p_meter
            when 'seats' then
                (select count(*) from app.memberships m where m.org_id = p_org_id)
              + (select count(*) from app.invitations i
                  where i.org_id = p_org_id and i.status = 'pending' and i.expires_at > now())
            when 'projects' then (select count(*) from app.projects p where p.org_id = p_org_id)
            when 'api_keys' then (select count(*) from app.api_keys k
                                   where k.org_id = p_org_id and k.revoked_at is null
                                     and (k.expires_at is null or k.expires_at > now()))
            -- Kept by the storage triggers (functions_storage.sql).
            when 'storage_bytes' then coalesce((select s.bytes from app.org_storage s
                                                 where s.org_id = p_org_id), 0)
            -- Per-period meters: the open period's rollup.
            when 'api_calls' then app.period_usage(p_org_id, p_meter)
            when 'events' then app.period_usage(p_org_id, p_meter)
            when 'llm_tokens' then app.period_usage(p_org_id, p_meter)
        end;
    end
    $$;

-- Records the threshold notices p_used crosses (80 % and 100 % of p_limit), each once per
-- org, meter and period, with an audit row.
create or replace function app.note_usage(
    p_org_id uuid, p_meter text, p_period date, p_used numeric, p_limit bigint) returns void
    language plpgsql volatile
    set search_path = pg_catalog, pg_temp
    as $$
    declare
        v_threshold integer;
    begin
        if p_limit is null or p_used is null or p_used <= 0 then
            return;
        end if;
        foreach v_threshold in array array[80, 100] loop
            if p_used * 100 >= v_threshold::numeric * p_limit then
                insert into app.usage_notices (org_id, meter_key, period, threshold, used, quota)
                values (p_org_id, p_meter, p_period, v_threshold, p_used, p_limit)
                on conflict do nothing;
                if found then
                    perform app.audit_org_event(p_org_id, 'usage.threshold_reached', '[]',
                        pg_catalog.jsonb_build_object('meter', p_meter, 'threshold', v_threshold,
                            'period', pg_catalog.to_char(p_period, 'YYYY-MM'), 'used', p_used,
                            'limit', p_limit));
                end if;
            end if;
        end loop;
    end
    $$;

-- Takes p_adding units of counted meter p_meter for org p_org_id, or refuses (402) when
-- the plan's hard limit would be passed. Locks the org first, so concurrent takers count
-- one after the other; an unlimited meter takes no lock. p_adding 0 checks that the org is
-- not over its limit (accepting an invitation turns a counted pending seat into a member).
create or replace function app.take_quota(p_org_id uuid, p_meter text, p_adding bigint) returns void
    language plpgsql volatile
    set search_path = pg_catalog, pg_temp
    as $$
    declare
        v_plan text;
        v_limit bigint;
        v_enforcement text;
        v_used bigint;
    begin
        select l.plan_id, l.included, l.enforcement into v_plan, v_limit, v_enforcement
          from app.org_limit(p_org_id, p_meter) l;
        if v_limit is null then
            return;
        end if;
        perform 1 from app.orgs o where o.id = p_org_id for no key update;
        v_used := app.quota_used(p_org_id, p_meter);
        if v_enforcement = 'hard' and v_used + p_adding > v_limit then
            perform app.refuse_plan_limit(p_meter, v_plan, v_limit, v_used);
        end if;
        perform app.note_usage(p_org_id, p_meter, app.period_of(now()), v_used + p_adding, v_limit);
    end
    $$;

-- ---------------------------------------------------------------------------
-- Entitlements
-- ---------------------------------------------------------------------------

-- Trigger: a new org starts on the default plan.
create or replace function app.orgs_start_on_default_plan() returns trigger
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    insert into app.org_plans (org_id, plan_id)
    select new.id, p.id from app.plans p where p.is_default;
    if not found then
        raise exception 'no default plan: mark one plan is_default (policies/README.md)';
    end if;
    return new;
end
$$;
create or replace trigger orgs_start_on_default_plan after insert on app.orgs
    for each row execute function app.orgs_start_on_default_plan();

-- Moves an org to another plan (`palisade orgs set-plan`; billing later). Never deletes
-- anything: an org over the new plan's limits keeps what it has. Owner only.
create or replace function app.set_org_plan(p_org_id uuid, p_plan text) returns text
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_old text;
begin
    if not exists (select 1 from app.plans p where p.id = p_plan) then
        perform app.refuse(404, 'not_found', pg_catalog.format('no plan %L', p_plan));
    end if;
    perform 1 from app.orgs o where o.id = p_org_id for no key update;
    select op.plan_id into v_old from app.org_plans op where op.org_id = p_org_id for update;
    if v_old is null then
        perform app.refuse(404, 'not_found', 'organization not found');
    end if;
    update app.org_plans set plan_id = p_plan, status = 'active', changed_at = now()
     where org_id = p_org_id;
    if v_old is distinct from p_plan then
        perform app.audit_org_event(p_org_id, 'plan.changed', pg_catalog.jsonb_build_array(app.audit_target('plan', null, p_plan)),
            pg_catalog.jsonb_build_object('from', v_old, 'to', p_plan));
    end if;
    return v_old;
end
$$;

-- Trigger: projects count against the plan. A caller below member is left to the insert
-- policy (403 forbidden, not 402).
create or replace function app.projects_check_quota() returns trigger
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if app.has_org_role('member') then
        perform app.take_quota(new.org_id, 'projects', 1);
    end if;
    return new;
end
$$;
create or replace trigger projects_check_quota before insert on app.projects
    for each row execute function app.projects_check_quota();

-- ---------------------------------------------------------------------------
-- Usage (org in context)
-- ---------------------------------------------------------------------------

-- The org in context's usage this period, one row per meter: the built-in ones (with the
-- plan's limit) and its custom meters. A definer function so that every member reads the
-- same counts (API keys, say, are visible only to admins).
create or replace function app.org_usage()
returns table (meter text, kind text, aggregation text, unit text, used numeric,
               included bigint, enforcement text, late_events bigint)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    with ctx as (select app.current_org_id() as org_id, app.period_of(now()) as period),
    builtin(meter, kind, aggregation, unit, ord) as (values
        ('seats', 'count', null::text, 'seats', 1), ('projects', 'count', null, 'projects', 2),
        ('api_keys', 'count', null, 'keys', 3), ('storage_bytes', 'count', null, 'bytes', 4),
        ('api_calls', 'period', 'sum', 'calls', 5), ('events', 'period', 'count', 'events', 6),
        ('llm_tokens', 'period', 'sum', 'tokens', 7))
    select b.meter, b.kind, b.aggregation, b.unit, app.quota_used(ctx.org_id, b.meter)::numeric,
           l.included, coalesce(l.enforcement, 'hard'),
           coalesce((select u.late_events from app.usage_periods u where u.org_id = ctx.org_id
                        and u.meter_key = b.meter and u.period = ctx.period), 0)
      from ctx cross join builtin b
      join app.org_plans op on op.org_id = ctx.org_id
      left join app.plan_limits l on l.plan_id = op.plan_id and l.meter = b.meter
    union all
    select * from (
        select m.key, 'custom', m.aggregation, m.unit, coalesce(u.value, 0), null::bigint, null::text,
               coalesce(u.late_events, 0)
          from ctx join app.meters m on m.org_id = ctx.org_id
          left join app.usage_periods u on u.org_id = ctx.org_id and u.meter_key = m.key and u.period = ctx.period
         order by m.key) c
$$;

-- Ingests a batch of usage events into the org in context (member+, plan feature
-- custom_meters): idempotent by event id (a repeated id is a duplicate, counted once),
-- each event judged on its own (unknown meter, timestamp outside [now - 35 days,
-- now + 5 minutes], missing or non-numeric value, over the plan's event limit: rejected
-- with a reason; the rest of the batch still counts). Rollups for the period and the day
-- are upserted in this transaction, one row per meter. An event timestamped in a closed
-- period counts in the open one (late_events). The arrays are parallel, one element per
-- event; p_values holds each event's `value` (NULL when absent).
create or replace function app.ingest_usage_events(
    p_ids text[], p_meters text[], p_values numeric[], p_subjects text[],
    p_timestamps timestamptz[], p_properties jsonb[],
    out accepted integer, out duplicates integer, out rejected jsonb)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_org uuid := app.current_org_id();
    -- The accepted window, computed once: `now() - interval '35 days'` in the statement
    -- was computed again for every event (calendar arithmetic in the session's time zone),
    -- 1.5 % of the function's instructions for a 1,000-event batch (callgrind).
    v_oldest timestamptz := now() - interval '35 days';
    v_newest timestamptz := now() + interval '5 minutes';
    v_period date := app.period_of(now());
    v_period_start timestamptz := app.period_of(now())::timestamp at time zone 'UTC';
    v_plan text;
    v_limit bigint;
    v_enforcement text;
    v_room bigint;
    v_total integer := coalesce(pg_catalog.cardinality(p_ids), 0);
begin
    perform app.require_role('member');
    perform app.require_feature('custom_meters');
    select l.plan_id, l.included, l.enforcement into v_plan, v_limit, v_enforcement
      from app.org_limit(v_org, 'events') l;
    if v_limit is not null and v_enforcement = 'hard' then
        -- One hard-limited ingestion per org at a time, so the room left is exact.
        perform 1 from app.org_plans op where op.org_id = v_org for update;
        v_room := greatest(v_limit - app.quota_used(v_org, 'events'), 0);
    end if;

    with input as (
        select i.ord::integer as ord, i.id, i.meter, i.val, i.subject, i.ts, i.props
          from unnest(p_ids, p_meters, p_values, p_subjects, p_timestamps, p_properties)
               with ordinality as i(id, meter, val, subject, ts, props, ord)
    ),
    measured as (
        select input.*, m.key as meter_key, m.aggregation, m.value_property,
               case when m.value_property is null then input.val
                    when pg_catalog.jsonb_typeof(input.props -> m.value_property) = 'number'
                    then (input.props ->> m.value_property)::numeric end as amount,
               case when m.value_property is null then input.subject
                    when pg_catalog.jsonb_typeof(input.props -> m.value_property) in ('string', 'number', 'boolean')
                    then input.props ->> m.value_property end as distinct_value
          from input
          left join app.meters m on m.org_id = v_org and m.key = input.meter
    ),
    -- Not materialized: each path below reads it once, and the refusals read it again
    -- only when some event was not accepted (the common batch is judged once).
    judged as not materialized (
        select measured.*,
               case when id is null or pg_catalog.char_length(id) not between 1 and 128 then 'invalid_id'
                    when meter_key is null then 'unknown_meter'
                    when ts is null then 'invalid_timestamp'
                    when ts < v_oldest then 'timestamp_too_old'
                    when ts > v_newest then 'timestamp_in_future'
                    when aggregation in ('sum', 'max', 'latest') and amount is null then
                         case when value_property is null then 'missing_value' else 'invalid_value' end
                    -- Values beyond 10^15 (the API's bound on `value`) are refused, so a
                    -- rollup always fits the double precision the API reads it as.
                    when aggregation in ('sum', 'max', 'latest') and abs(amount) > 1e15 then 'invalid_value'
                    when aggregation = 'unique_count' and distinct_value is null then
                         case when value_property is null then 'missing_subject' else 'invalid_value' end
               end as reason
          from measured
    ),
    -- The first occurrence of each id in the batch; later ones are duplicates (needed to
    -- number the events under a hard limit).
    firsts as (
        select distinct on (id) * from judged where reason is null order by id, ord
    ),
    -- Under a hard event limit: only ids not stored yet, numbered, and no more than the room
    -- left. Without one (v_room NULL) the numbering is skipped: the planner turns
    -- `v_room is [not] null` into one-time filters, so only one branch runs.
    fresh as (
        select f.*, pg_catalog.row_number() over (order by f.ord) as rn
          from firsts f
         where v_room is not null
           and not exists (select 1 from app.usage_events e where e.org_id = v_org and e.event_id = f.id)
    ),
    -- Without a hard limit every valid event goes to the insert in batch order, and ON
    -- CONFLICT DO NOTHING drops a repeated id (the first occurrence is stored) as it drops
    -- one stored before: no sort by id to find the firsts.
    admitted as (
        (select j.*, 0::bigint as rn from judged j where v_room is null and j.reason is null order by j.ord)
        union all
        select * from fresh where rn <= v_room
    ),
    ins as (
        insert into app.usage_events (org_id, event_id, meter_key, value, subject, properties, occurred_at, period)
        select v_org, a.id, a.meter_key, a.amount, a.subject, a.props, a.ts, v_period from admitted a
        on conflict do nothing
        returning event_id, meter_key, value, subject, properties, occurred_at
    ),
    -- The inserted events per meter and day, aggregated straight from what the insert
    -- returned: no per-event join, and one pass for every figure but latest and unique
    -- counts.
    by_day as (
        select i.meter_key, (greatest(i.occurred_at, v_period_start) at time zone 'UTC')::date as day,
               count(*) as n, count(*) filter (where i.occurred_at < v_period_start) as late,
               sum(i.value) as total, max(i.value) as top,
               max(greatest(i.occurred_at, v_period_start)) as latest_at
          from ins i group by 1, 2
    ),
    -- Per event, only for the meters that need each event: latest and unique_count (for
    -- the others the join finds no meter and reads nothing).
    done as (
        select i.event_id, i.meter_key, m.aggregation, i.value as amount,
               case when m.aggregation = 'unique_count' then
                    case when m.value_property is null then i.subject
                         else i.properties ->> m.value_property end
               end as distinct_value,
               greatest(i.occurred_at, v_period_start) as eff,
               (greatest(i.occurred_at, v_period_start) at time zone 'UTC')::date as day
          from app.meters m join ins i on i.meter_key = m.key
         where m.org_id = v_org and m.aggregation in ('latest', 'unique_count')
    ),
    distinct_month as (
        insert into app.usage_distinct (org_id, meter_key, span, starts_on, value)
        select distinct v_org, d.meter_key, 'month', v_period, d.distinct_value
          from done d where d.aggregation = 'unique_count'
        on conflict do nothing
        returning meter_key
    ),
    distinct_day as (
        insert into app.usage_distinct (org_id, meter_key, span, starts_on, value)
        select distinct v_org, d.meter_key, 'day', d.day, d.distinct_value
          from done d where d.aggregation = 'unique_count'
        on conflict do nothing
        returning meter_key, starts_on
    ),
    per_period as (
        select b.meter_key, m.aggregation, sum(b.n) as n, sum(b.late) as late,
               case m.aggregation
                   when 'sum' then sum(b.total)
                   when 'count' then sum(b.n)
                   when 'max' then max(b.top)
                   when 'latest' then (select l.amount from done l where l.meter_key = b.meter_key
                                        order by l.eff desc, l.event_id desc limit 1)
                   when 'unique_count' then (select count(*) from distinct_month x where x.meter_key = b.meter_key)
               end as value,
               max(b.latest_at) as latest_at
          from by_day b join app.meters m on m.org_id = v_org and m.key = b.meter_key
         group by b.meter_key, m.aggregation
        union all
        select 'events', 'count', sum(b.n), sum(b.late), sum(b.n), max(b.latest_at)
          from by_day b having count(*) > 0
    ),
    per_day as (
        select b.meter_key, m.aggregation, b.day, b.n,
               case m.aggregation
                   when 'sum' then b.total
                   when 'count' then b.n
                   when 'max' then b.top
                   when 'latest' then (select l.amount from done l where l.meter_key = b.meter_key and l.day = b.day
                                        order by l.eff desc, l.event_id desc limit 1)
                   when 'unique_count' then (select count(*) from distinct_day x
                                              where x.meter_key = b.meter_key and x.starts_on = b.day)
               end as value,
               b.latest_at
          from by_day b join app.meters m on m.org_id = v_org and m.key = b.meter_key
        union all
        select 'events', 'count', b.day, sum(b.n), sum(b.n), max(b.latest_at) from by_day b group by b.day
    ),
    period_rollup as (
        insert into app.usage_periods as u (org_id, meter_key, period, aggregation, value, events, late_events, latest_at)
        select v_org, p.meter_key, v_period, p.aggregation, p.value, p.n, p.late, p.latest_at from per_period p
        on conflict (org_id, meter_key, period) do update set
            value = app.usage_fold(u.aggregation, u.value, excluded.value, u.latest_at, excluded.latest_at),
            events = u.events + excluded.events,
            late_events = u.late_events + excluded.late_events,
            latest_at = greatest(u.latest_at, excluded.latest_at),
            updated_at = now()
    ),
    day_rollup as (
        insert into app.usage_days as u (org_id, meter_key, day, aggregation, value, events, latest_at)
        select v_org, p.meter_key, p.day, p.aggregation, p.value, p.n, p.latest_at from per_day p
        on conflict (org_id, meter_key, day) do update set
            value = app.usage_fold(u.aggregation, u.value, excluded.value, u.latest_at, excluded.latest_at),
            events = u.events + excluded.events,
            latest_at = greatest(u.latest_at, excluded.latest_at),
            updated_at = now()
    ),
    refusals as (
        select j.ord, j.id, j.reason from judged j where j.reason is not null
        union all
        select f.ord, f.id, 'plan_limit_reached' from fresh f where f.rn > v_room
    )
    select a.n,
           -- Every event accepted (the common case): nothing was refused, and the batch is
           -- not judged a second time to find out.
           case when a.n = v_total then '[]'::jsonb
                else coalesce((select pg_catalog.jsonb_agg(pg_catalog.jsonb_build_object(
                                  'index', r.ord - 1, 'id', r.id, 'reason', r.reason) order by r.ord)
                                 from refusals r), '[]'::jsonb) end
      from (select coalesce(sum(b.n), 0)::integer as n from by_day b) a
      into accepted, rejected;
    duplicates := v_total - accepted - pg_catalog.jsonb_array_length(rejected);

    if v_limit is not null and accepted > 0 then
        perform app.note_usage(v_org, 'events', v_period, app.quota_used(v_org, 'events'), v_limit);
    end if;
    -- One audit row per batch, not per event: the events are in usage_events already.
    perform app.audit_org_event(v_org, 'usage.events_ingested', '[]',
        pg_catalog.jsonb_build_object('accepted', accepted, 'duplicates', duplicates,
                                      'rejected', pg_catalog.jsonb_array_length(rejected)));
end
$$;

-- ---------------------------------------------------------------------------
-- The worker: API-call counts and threshold emails
-- ---------------------------------------------------------------------------

-- Moves the API calls counted in the limiter rows into usage_api_calls (by key and by
-- user) and the api_calls rollups of the open period and today; records threshold
-- notices; copies API keys' last use. Returns the calls moved.
--
-- The counters are read without a lock and, as the last statement, decreased by what was
-- read (not set to zero): a request counted meanwhile stays counted for the next flush,
-- and a bucket's row lock is held only from that statement to the commit -- requests of
-- every subject update these rows, so a flush that locked them first held every request
-- in line behind its rollup writes (measured: p99 from 12 ms to 1.4 s under load).
create or replace function app.flush_api_calls() returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_period date := app.period_of(now());
    v_day date := (now() at time zone 'UTC')::date;
    v_buckets text[];
    v_calls integer[];
    v_orgs uuid[];
    v_totals numeric[];
    v_moved bigint;
    v_limit bigint;
    i integer;
begin
    -- One flush at a time across replicas (two would both read the same counters).
    if not pg_catalog.pg_try_advisory_xact_lock(pg_catalog.hashtext('app.flush_api_calls')) then
        return 0;
    end if;
    -- API keys' last use, stamped on their bucket rows by the limiter: copied when more
    -- than a minute newer than the recorded one (at most one write per key a minute, by
    -- this worker, never by a request).
    update app.api_keys k set last_used_at = r.last_used_at
      from app.rate_limits r
     where r.bucket like 'key:%' and k.id = r.subject_id
       and r.last_used_at > coalesce(k.last_used_at, '-infinity'::timestamptz) + interval '1 minute';
    select pg_catalog.array_agg(r.bucket), pg_catalog.array_agg(r.calls)
      into v_buckets, v_calls
      from app.rate_limits r
     where r.calls > 0 and r.org_id is not null;
    if v_buckets is null then
        return 0;
    end if;
    with taken as (
        select r.org_id, r.subject_id, r.bucket like 'key:%' as is_key, t.calls
          from unnest(v_buckets, v_calls) as t(bucket, calls)
          join app.rate_limits r on r.bucket = t.bucket
          -- Calls of an org deleted since are dropped with it.
          join app.orgs o on o.id = r.org_id
    ),
    by_subject as (
        insert into app.usage_api_calls as a (org_id, period, subject_type, subject_id, calls)
        select t.org_id, v_period, case when t.is_key then 'api_key' else 'user' end, t.subject_id, sum(t.calls)
          from taken t where t.subject_id is not null group by 1, 2, 3, 4
        on conflict (org_id, period, subject_type, subject_id) do update set calls = a.calls + excluded.calls
    ),
    by_org as (
        select t.org_id, sum(t.calls) as calls from taken t group by t.org_id
    ),
    period_rollup as (
        insert into app.usage_periods as u (org_id, meter_key, period, aggregation, value, events)
        select b.org_id, 'api_calls', v_period, 'sum', b.calls, b.calls from by_org b
        on conflict (org_id, meter_key, period) do update set
            value = u.value + excluded.value, events = u.events + excluded.events, updated_at = now()
        returning u.org_id, u.value
    ),
    day_rollup as (
        insert into app.usage_days as u (org_id, meter_key, day, aggregation, value, events)
        select b.org_id, 'api_calls', v_day, 'sum', b.calls, b.calls from by_org b
        on conflict (org_id, meter_key, day) do update set
            value = u.value + excluded.value, events = u.events + excluded.events, updated_at = now()
    )
    -- Notices only where the plan limits API calls.
    select pg_catalog.array_agg(p.org_id), pg_catalog.array_agg(p.value)
      into v_orgs, v_totals
      from period_rollup p
     where exists (select 1 from app.org_plans op join app.plan_limits l on l.plan_id = op.plan_id
                    where op.org_id = p.org_id and l.meter = 'api_calls' and l.included is not null);
    for i in 1 .. coalesce(pg_catalog.cardinality(v_orgs), 0) loop
        select l.included into v_limit from app.org_limit(v_orgs[i], 'api_calls') l;
        perform app.note_usage(v_orgs[i], 'api_calls', v_period, v_totals[i], v_limit);
    end loop;
    -- Last: take what was read off the counters (row locks from here to the commit).
    update app.rate_limits r set calls = r.calls - t.calls
      from unnest(v_buckets, v_calls) as t(bucket, calls)
     where r.bucket = t.bucket;
    select coalesce(sum(c), 0) into v_moved from unnest(v_calls) c;
    return v_moved;
end
$$;

-- Claims up to p_limit threshold notices not emailed yet (locked until this transaction
-- ends; another worker skips them).
create or replace function app.claim_usage_notices(p_limit integer)
returns table (org_id uuid, org_name text, meter_key text, period date, threshold integer,
               used numeric, quota bigint, plan_id text)
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    select n.org_id, o.name, n.meter_key, n.period, n.threshold, n.used, n.quota, op.plan_id
      from app.usage_notices n
      join app.orgs o on o.id = n.org_id
      join app.org_plans op on op.org_id = n.org_id
     where n.emailed_at is null
     order by n.created_at
     limit p_limit
       for update of n skip locked
$$;

-- Queues the notice's email (sealed by the server) to every owner and admin of its org --
-- addresses looked up here -- and marks it emailed. Returns the emails queued.
create or replace function app.send_usage_notice(
    p_org_id uuid, p_meter text, p_period date, p_threshold integer, p_subject text, p_body_sealed bytea)
returns integer
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    update app.usage_notices set emailed_at = now()
     where org_id = p_org_id and meter_key = p_meter and period = p_period
       and threshold = p_threshold and emailed_at is null;
    if not found then
        return 0;
    end if;
    return app.enqueue_org_email(p_org_id, 'admin', 'usage_notice', p_subject, p_body_sealed);
end
$$;

-- ---------------------------------------------------------------------------
-- What each function is, for \df+ and the audit
-- ---------------------------------------------------------------------------

comment on function app.period_of(timestamptz) is 'The usage period (calendar month, UTC) of a moment, as its first day.';
comment on function app.org_limit(uuid, text) is 'An org''s plan and its limit for a meter (NULL: unlimited). Internal.';
comment on function app.refuse_plan_limit(text, text, bigint, numeric) is
    'Raises PT402 plan_limit_reached with {meter, limit, used, plan} as DETAIL. Internal.';
comment on function app.quota_used(uuid, text) is 'What an org holds of a counted meter now. Internal.';
comment on function app.period_usage(uuid, text) is 'An org''s rollup of a meter in the open period. Internal.';
comment on function app.usage_fold(text, numeric, numeric, timestamptz, timestamptz) is
    'How a rollup folds a batch''s figure into the stored one, per aggregation. Internal.';
comment on function app.note_usage(uuid, text, date, numeric, bigint) is
    'Records the 80 %/100 % threshold notices a usage figure crosses, once per org, meter and period. Internal.';
comment on function app.take_quota(uuid, text, bigint) is
    'Under the org lock, refuses (402) a write that would pass the plan''s hard limit for a meter. Internal.';
comment on function app.orgs_start_on_default_plan() is 'Trigger: a new org starts on the default plan.';
comment on function app.set_org_plan(uuid, text) is
    'Moves an org to a plan (deletes nothing); records plan.changed. Owner only: palisade orgs set-plan.';
comment on function app.projects_check_quota() is 'Trigger: a new project counts against the plan''s projects limit (402).';
comment on function app.org_usage() is
    'Usage of the org in context this period: built-in meters with their limits, then custom meters. Request role.';
comment on function app.ingest_usage_events(text[], text[], numeric[], text[], timestamptz[], jsonb[]) is
    'Ingests a batch of usage events into the org in context (member+, custom_meters): idempotent, per-event verdicts, rollups in the same transaction. Request role.';
comment on function app.flush_api_calls() is
    'Moves the API calls counted by the limiter into usage_api_calls and the api_calls rollups, and API keys'' last use into app.api_keys. Worker role.';
comment on function app.claim_usage_notices(integer) is 'Claims threshold notices not emailed yet. Worker role.';
comment on function app.send_usage_notice(uuid, text, date, integer, text, bytea) is
    'Queues a threshold notice to the org''s owners and admins and marks it emailed. Worker role.';

-- ---------------------------------------------------------------------------
-- Grants
-- ---------------------------------------------------------------------------

revoke all on function app.period_of(timestamptz), app.org_limit(uuid, text),
    app.period_usage(uuid, text), app.usage_fold(text, numeric, numeric, timestamptz, timestamptz),
    app.refuse_plan_limit(text, text, bigint, numeric), app.quota_used(uuid, text),
    app.note_usage(uuid, text, date, numeric, bigint), app.take_quota(uuid, text, bigint),
    app.orgs_start_on_default_plan(), app.set_org_plan(uuid, text),
    app.projects_check_quota(), app.org_usage(),
    app.ingest_usage_events(text[], text[], numeric[], text[], timestamptz[], jsonb[]),
    app.flush_api_calls(), app.claim_usage_notices(integer),
    app.send_usage_notice(uuid, text, date, integer, text, bytea)
    from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant execute on function app.period_of(timestamptz), app.org_usage(),
    app.ingest_usage_events(text[], text[], numeric[], text[], timestamptz[], jsonb[])
    to palisade_runtime;
grant execute on function app.flush_api_calls(), app.claim_usage_notices(integer),
    app.send_usage_notice(uuid, text, date, integer, text, bytea)
    to palisade_jobs;
