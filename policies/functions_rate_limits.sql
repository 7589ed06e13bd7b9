-- functions_rate_limits: the shared rate limiter. One statement per request, pipelined by
-- the server in front of the request's transaction and run in its own implicit
-- transaction, so a bucket's row lock lasts one statement, not a request. Each public
-- function authenticates its subject the way the request itself will (a session proof,
-- an API key) before taking from its bucket, so SQL run as one tenant cannot drain
-- another's bucket, and unknown credentials create no rows.
--
-- GCRA on the database clock: a bucket of p_limit requests refilled over p_window_s
-- seconds is one timestamp, tat (theoretical arrival time). A request is admitted when
-- max(tat, now) + window/limit <= now + window, which then becomes the new tat. The
-- upsert locks the row, and a concurrent one re-checks the condition against the row it
-- waited for: two replicas together never admit more than the limit.
--
-- Plans feed the limits: a key's or a user's bucket in an org holds the org's plan's
-- requests_per_minute (scaled to the window) when that is lower than the server's
-- RATE_LIMIT_* (the operator's ceiling). The statement also meters the request: with
-- p_meter, a request in an org adds one to its bucket row's `calls` (the same row update;
-- without a limit, an upsert of that counter alone), which the worker's
-- app.flush_api_calls() moves into the usage rollups (functions_usage.sql).

-- The public limiters returned sets at first (see below why no longer): drop those once.
do $$
declare
    f regprocedure;
begin
    -- Also the signatures before metering (V10): without p_meter / the org arguments.
    for f in select p.oid::regprocedure from pg_catalog.pg_proc p
              where p.pronamespace = 'app'::regnamespace
                and ((p.proretset and p.proname in ('rate_limit_session', 'rate_limit_api_key', 'rate_limit_ip'))
                     or (p.proname = 'rate_limit_take' and p.pronargs = 3)
                     or (p.proname = 'rate_limit_session' and p.pronargs = 5)
                     or (p.proname = 'rate_limit_api_key' and p.pronargs = 3))
    loop
        execute pg_catalog.format('drop function %s', f);
    end loop;
end
$$;

-- Takes one request from p_bucket (p_limit NULL: none, only counted). With p_count, adds
-- one to the bucket's metered calls for org p_org_id and subject p_subject_id (a key or a
-- user) -- only when the request is admitted. An admitted request stamps the row's
-- last_used_at (the same row update). Internal.
create or replace function app.rate_limit_take(
    p_bucket text, p_limit integer, p_window_s integer,
    p_org_id uuid default null, p_subject_id uuid default null, p_count boolean default false,
    out admitted boolean, out remaining integer, out reset_s integer, out retry_after_s integer)
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_now timestamptz := pg_catalog.clock_timestamp();
    v_step interval;
    v_window interval;
    v_tat timestamptz;
    v_calls integer := case when p_count and p_org_id is not null then 1 else 0 end;
begin
    if p_limit is null or p_limit < 1 or p_window_s is null or p_window_s < 1 then
        if v_calls > 0 then
            insert into app.rate_limits as r (bucket, tat, org_id, subject_id, calls, last_used_at)
            values (p_bucket, v_now, p_org_id, p_subject_id, 1, v_now)
            on conflict (bucket) do update set calls = r.calls + 1, org_id = excluded.org_id,
                subject_id = excluded.subject_id, last_used_at = excluded.last_used_at;
        end if;
        return;
    end if;
    -- Intervals have microsecond resolution: a quota above a million per second is
    -- treated as a million per second (never a zero step).
    v_step := greatest(pg_catalog.make_interval(secs => p_window_s::double precision / p_limit),
                       interval '1 microsecond');
    v_window := pg_catalog.make_interval(secs => p_window_s);
    insert into app.rate_limits as r (bucket, tat, org_id, subject_id, calls, last_used_at)
    values (p_bucket, v_now + v_step, p_org_id, p_subject_id, v_calls, v_now)
    on conflict (bucket) do update set tat = greatest(r.tat, v_now) + v_step,
        calls = r.calls + excluded.calls, org_id = excluded.org_id, subject_id = excluded.subject_id,
        last_used_at = excluded.last_used_at
        where greatest(r.tat, v_now) + v_step <= v_now + v_window
    returning r.tat into v_tat;
    admitted := found;
    if admitted then
        remaining := floor(extract(epoch from (v_now + v_window - v_tat))
                           / extract(epoch from v_step))::integer;
        retry_after_s := 0;
    else
        select r.tat into v_tat from app.rate_limits r where r.bucket = p_bucket;
        remaining := 0;
        retry_after_s := greatest(1, ceil(extract(epoch from (v_tat + v_step - v_window - v_now))))::integer;
    end if;
    reset_s := greatest(0, ceil(extract(epoch from (v_tat - v_now))))::integer;
end
$$;
comment on function app.rate_limit_take(text, integer, integer, uuid, uuid, boolean) is
    'GCRA: takes one request from bucket p_bucket (p_limit per p_window_s seconds), counting it for metering with p_count; returns admitted, remaining, reset_s, retry_after_s. Internal.';

-- The limit of a bucket in an org: the server's p_limit, lowered to the plan's
-- requests_per_minute scaled to the window. Internal.
create or replace function app.plan_rate_limit(p_limit integer, p_window_s integer, p_rpm integer)
returns integer
    language plpgsql immutable
    set search_path = pg_catalog, pg_temp
    as $$
    begin
        return case when p_limit is null or p_rpm is null then p_limit
                    else least(p_limit, greatest(1, ceil(p_rpm::numeric * p_window_s / 60))::integer) end;
    end
    $$;
comment on function app.plan_rate_limit(integer, integer, integer) is
    'The server''s limit lowered to a plan''s requests per minute, scaled to the window. Internal.';

-- A signed-in user's request: bucket per user per org of the route (or per user, when
-- the route names no org or one they are not a member of). NULLs when the session does
-- not prove out: the request's context statement refuses it.
--
-- The public limiters return one row, never a set: a set-returning definer function
-- materializes its result, and measured with pgbench in front of the list transaction it
-- cost 40 % of the throughput where one row costs about 5 %.
create or replace function app.rate_limit_session(
    p_session_id uuid, p_proof bytea, p_org_id uuid, p_limit integer, p_window_s integer, p_meter boolean,
    out admitted boolean, out remaining integer, out reset_s integer, out retry_after_s integer,
    out quota integer)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_user uuid;
    v_bucket text;
    v_member boolean := false;
    v_rpm integer;
begin
    select s.user_id into v_user from app.sessions s
     where s.id = p_session_id and s.proof_hash = pg_catalog.sha256(p_proof)
       and s.revoked_at is null and s.expires_at > now();
    if v_user is null then
        return;
    end if;
    if p_org_id is not null then
        select true, p.requests_per_minute into v_member, v_rpm
          from app.memberships m
          join app.org_plans op on op.org_id = m.org_id
          join app.plans p on p.id = op.plan_id
         where m.org_id = p_org_id and m.user_id = v_user;
    end if;
    v_bucket := 'user:' || v_user::text;
    if coalesce(v_member, false) then
        v_bucket := v_bucket || ':' || p_org_id::text;
    end if;
    quota := app.plan_rate_limit(p_limit, p_window_s, v_rpm);
    select t.admitted, t.remaining, t.reset_s, t.retry_after_s
      into admitted, remaining, reset_s, retry_after_s
      from app.rate_limit_take(v_bucket, quota, p_window_s,
                               case when v_member then p_org_id end, v_user, p_meter) t;
end
$$;
comment on function app.rate_limit_session(uuid, bytea, uuid, integer, integer, boolean) is
    'Rate limit (the plan''s, under the server''s ceiling) and metering of a signed-in user''s request (proven like app.set_request_context), per user per org. Request role.';

-- A request with an API key: bucket per key. The key's last use is stamped on its bucket
-- row and copied to app.api_keys by the worker's flush (app.flush_api_calls(), at most
-- once a minute per key): no request writes app.api_keys. Only with neither a limit nor
-- metering, when no bucket row is written, does the request record it itself, at most
-- once a minute. NULLs for a key that is unknown, revoked or expired (the context
-- statement refuses it) or when p_limit is NULL (no limit).
create or replace function app.rate_limit_api_key(
    p_secret text, p_limit integer, p_window_s integer, p_meter boolean,
    out admitted boolean, out remaining integer, out reset_s integer, out retry_after_s integer,
    out quota integer)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_hash bytea := pg_catalog.sha256(pg_catalog.convert_to(p_secret, 'UTF8'));
    v_key uuid;
    v_org uuid;
    v_last timestamptz;
    v_rpm integer;
begin
    -- The key's current secret; only when it is not that, a secret a rotation replaced
    -- (in its grace window).
    select k.id, k.org_id, k.last_used_at, p.requests_per_minute into v_key, v_org, v_last, v_rpm
      from app.api_keys k
      join app.org_plans op on op.org_id = k.org_id
      join app.plans p on p.id = op.plan_id
     where k.secret_hash = v_hash
       and k.revoked_at is null and (k.expires_at is null or k.expires_at > now());
    if v_key is null then
        select k.id, k.org_id, k.last_used_at, p.requests_per_minute into v_key, v_org, v_last, v_rpm
          from app.api_key_secrets s join app.api_keys k on k.id = s.key_id
          join app.org_plans op on op.org_id = k.org_id
          join app.plans p on p.id = op.plan_id
         where s.secret_hash = v_hash and s.expires_at > now()
           and k.revoked_at is null and (k.expires_at is null or k.expires_at > now());
        if v_key is null then
            return;
        end if;
    end if;
    quota := app.plan_rate_limit(p_limit, p_window_s, v_rpm);
    -- When app.rate_limit_take() writes no bucket row: no usable limit and no metering
    -- (its own test for the first, word for word).
    if (quota is null or quota < 1 or p_window_s is null or p_window_s < 1)
       and not coalesce(p_meter, false)
       and (v_last is null or v_last < now() - interval '1 minute') then
        -- This statement is its own transaction, and otherwise writes nothing logged:
        -- the commit need not wait for a WAL flush (a last use lost to a crash is harmless).
        perform pg_catalog.set_config('synchronous_commit', 'off', true);
        update app.api_keys set last_used_at = now()
         where id = v_key and (last_used_at is null or last_used_at < now() - interval '1 minute');
    end if;
    select t.admitted, t.remaining, t.reset_s, t.retry_after_s
      into admitted, remaining, reset_s, retry_after_s
      from app.rate_limit_take('key:' || v_key::text, quota, p_window_s, v_org, v_key, p_meter) t;
end
$$;
comment on function app.rate_limit_api_key(text, integer, integer, boolean) is
    'Rate limit (the plan''s, under the server''s ceiling) and metering of a request with an API key, per key; stamps the key''s last use on its bucket row (copied by app.flush_api_calls()). Request role.';

-- An unauthenticated request (sign-in, registration, refresh, password reset, invitation
-- lookup): bucket per client address -- per /64 for IPv6, where one client holds many.
create or replace function app.rate_limit_ip(
    p_ip inet, p_limit integer, p_window_s integer,
    out admitted boolean, out remaining integer, out reset_s integer, out retry_after_s integer)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_addr text;
begin
    if p_ip is null or p_limit is null or p_limit < 1 or p_window_s < 1 then
        return;
    end if;
    v_addr := case when pg_catalog.family(p_ip) = 6
                   then pg_catalog.network(pg_catalog.set_masklen(p_ip, 64))::text
                   else pg_catalog.host(p_ip) end;
    select t.admitted, t.remaining, t.reset_s, t.retry_after_s
      into admitted, remaining, reset_s, retry_after_s
      from app.rate_limit_take('ip:' || v_addr, p_limit, p_window_s) t;
end
$$;
comment on function app.rate_limit_ip(inet, integer, integer) is
    'Rate limit of an unauthenticated request, per client IP (IPv6: per /64). Credential role.';

revoke all on function app.rate_limit_take(text, integer, integer, uuid, uuid, boolean),
    app.plan_rate_limit(integer, integer, integer),
    app.rate_limit_session(uuid, bytea, uuid, integer, integer, boolean),
    app.rate_limit_api_key(text, integer, integer, boolean), app.rate_limit_ip(inet, integer, integer)
    from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant execute on function app.rate_limit_session(uuid, bytea, uuid, integer, integer, boolean),
    app.rate_limit_api_key(text, integer, integer, boolean) to palisade_runtime;
grant execute on function app.rate_limit_ip(inet, integer, integer) to palisade_credentials;
