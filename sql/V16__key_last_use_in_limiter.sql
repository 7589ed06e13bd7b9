-- V16: a key's last use is recorded on its limiter row, not by the request (issue 10).
--
-- Why: app.rate_limit_api_key() updated app.api_keys.last_used_at itself, at most once a
-- minute per key. With many keys that is a WAL-logged row update (and its trigger) on a
-- large share of requests: the benchmark's 10,000 keys, each used a few times a minute,
-- wrote on about a third of them. The limiter already updates the key's row in the
-- UNLOGGED app.rate_limits on every admitted request; that update now also stamps the
-- time, and the worker's flush (app.flush_api_calls(), every 10 s) copies it to
-- app.api_keys.last_used_at when it is more than a minute newer. A crash of the database
-- loses at most the uses since the last flush -- a display field, never a decision.

alter table app.rate_limits add column last_used_at timestamptz;
comment on column app.rate_limits.last_used_at is
    'When the bucket''s subject last made an admitted request; copied to app.api_keys.last_used_at by app.flush_api_calls() for key buckets.';
