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

-- The public limiters returned sets at first (see below why no longer): drop those once.
do $$
declare
    f regprocedure;
begin
    for f in select p.oid::regprocedure from pg_catalog.pg_proc p
              where p.pronamespace = 'app'::regnamespace and p.proretset
                and p.proname in ('rate_limit_session', 'rate_limit_api_key', 'rate_limit_ip')
    loop
        execute pg_catalog.format('drop function %s', f);
    end loop;
end
$$;

-- Takes one request from p_bucket. Internal.
create or replace function app.rate_limit_take(
    p_bucket text, p_limit integer, p_window_s integer,
    out admitted boolean, out remaining integer, out reset_s integer, out retry_after_s integer)
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_now timestamptz := pg_catalog.clock_timestamp();
    -- Intervals have microsecond resolution: a quota above a million per second is
    -- treated as a million per second (never a zero step).
    v_step interval := greatest(pg_catalog.make_interval(secs => p_window_s::double precision / p_limit),
                                interval '1 microsecond');
    v_window interval := pg_catalog.make_interval(secs => p_window_s);
    v_tat timestamptz;
begin
    insert into app.rate_limits as r (bucket, tat) values (p_bucket, v_now + v_step)
    on conflict (bucket) do update set tat = greatest(r.tat, v_now) + v_step
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
comment on function app.rate_limit_take(text, integer, integer) is
    'GCRA: takes one request from bucket p_bucket (p_limit per p_window_s seconds); returns admitted, remaining, reset_s, retry_after_s. Internal.';

-- A signed-in user's request: bucket per user per org of the route (or per user, when
-- the route names no org or one they are not a member of). NULLs when the session does
-- not prove out: the request's context statement refuses it.
--
-- The public limiters return one row, never a set: a set-returning definer function
-- materializes its result, and measured with pgbench in front of the list transaction it
-- cost 40 % of the throughput where one row costs about 5 %.
create or replace function app.rate_limit_session(
    p_session_id uuid, p_proof bytea, p_org_id uuid, p_limit integer, p_window_s integer,
    out admitted boolean, out remaining integer, out reset_s integer, out retry_after_s integer)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_user uuid;
    v_bucket text;
begin
    select s.user_id into v_user from app.sessions s
     where s.id = p_session_id and s.proof_hash = pg_catalog.sha256(p_proof)
       and s.revoked_at is null and s.expires_at > now();
    if v_user is null or p_limit is null or p_limit < 1 or p_window_s < 1 then
        return;
    end if;
    v_bucket := 'user:' || v_user::text;
    if p_org_id is not null and exists (select 1 from app.memberships m
                                         where m.org_id = p_org_id and m.user_id = v_user) then
        v_bucket := v_bucket || ':' || p_org_id::text;
    end if;
    select t.admitted, t.remaining, t.reset_s, t.retry_after_s
      into admitted, remaining, reset_s, retry_after_s
      from app.rate_limit_take(v_bucket, p_limit, p_window_s) t;
end
$$;
comment on function app.rate_limit_session(uuid, bytea, uuid, integer, integer) is
    'Rate limit of a signed-in user''s request (proven like app.set_request_context), per user per org. Request role.';

-- A request with an API key: bucket per key. Also records the key's last use, at most
-- once a minute (a conditional update: no write on the other requests of that minute).
-- NULLs for a key that is unknown, revoked or expired (the context statement refuses it)
-- or when p_limit is NULL (no limit: only the last use is recorded).
create or replace function app.rate_limit_api_key(
    p_secret text, p_limit integer, p_window_s integer,
    out admitted boolean, out remaining integer, out reset_s integer, out retry_after_s integer)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_key uuid;
    v_last timestamptz;
begin
    select k.id, k.last_used_at into v_key, v_last
      from app.api_key_secrets s join app.api_keys k on k.id = s.key_id
     where s.secret_hash = pg_catalog.sha256(pg_catalog.convert_to(p_secret, 'UTF8'))
       and k.revoked_at is null and (k.expires_at is null or k.expires_at > now())
       and (s.expires_at is null or s.expires_at > now());
    if v_key is null then
        return;
    end if;
    if v_last is null or v_last < now() - interval '1 minute' then
        update app.api_keys set last_used_at = now()
         where id = v_key and (last_used_at is null or last_used_at < now() - interval '1 minute');
    end if;
    if p_limit is null or p_limit < 1 or p_window_s < 1 then
        return;
    end if;
    select t.admitted, t.remaining, t.reset_s, t.retry_after_s
      into admitted, remaining, reset_s, retry_after_s
      from app.rate_limit_take('key:' || v_key::text, p_limit, p_window_s) t;
end
$$;
comment on function app.rate_limit_api_key(text, integer, integer) is
    'Rate limit of a request with an API key, per key; records last use at most once a minute. Request role.';

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

revoke all on function app.rate_limit_take(text, integer, integer),
    app.rate_limit_session(uuid, bytea, uuid, integer, integer),
    app.rate_limit_api_key(text, integer, integer), app.rate_limit_ip(inet, integer, integer)
    from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant execute on function app.rate_limit_session(uuid, bytea, uuid, integer, integer),
    app.rate_limit_api_key(text, integer, integer) to palisade_runtime;
grant execute on function app.rate_limit_ip(inet, integer, integer) to palisade_credentials;
