-- The database's own limit for ingesting a 1,000-event batch: one insert ... select from
-- unnest(...) on conflict do nothing of the same rows (unique ids, the "tokens" meter of a
-- random org), as the owner -- no context, no validation, no rollups.
\set i 100000000000 + random(1, :orgs)
\set n random(1, 9000000000000000000)
insert into app.usage_events (org_id, event_id, meter_key, value, subject, occurred_at, period)
select ('0000000a-0000-4000-8000-' || :i)::uuid, e.id, 'tokens', e.v, e.s, now(), date_trunc('month', now() at time zone 'UTC')::date
  from unnest(array(select 'raw-' || :n || '-' || g from generate_series(1, 1000) g),
              array(select (g % 97)::numeric from generate_series(1, 1000) g),
              array(select 'c' || (g % 13) from generate_series(1, 1000) g)) as e(id, v, s)
on conflict do nothing;
