-- GET /v1/orgs/{org_id}/projects?limit=20 with everything the server sends for it today
-- (src/http/kernel.rs, src/db/mod.rs): list.sql plus the rate limiter's statement with
-- API-call metering (policies/functions_rate_limits.sql, its own implicit transaction)
-- and the lane's transaction timeouts. The server sends BEGIN and the three SET LOCALs as
-- one simple query and pipelines the rest; pgbench -M prepared can do neither, so this
-- waits for each statement: a slower baseline than the server's wire shape, to be read
-- as "list.sql plus the limiter", not as the server's own transaction at its best.
\set i 100000000000 + random(1, :orgs)
\set lim 21
select admitted, remaining, reset_s, retry_after_s, quota from app.rate_limit_session(('0000000c-0000-4000-8000-' || :i)::uuid, public.hmac(uuid_send(('0000000c-0000-4000-8000-' || :i)::uuid), decode(:proofkey, 'hex'), 'sha256'), ('0000000a-0000-4000-8000-' || :i)::uuid, 1000000000, 60, true);
begin transaction read only;
set local statement_timeout = 5000;
set local lock_timeout = 2000;
set local idle_in_transaction_session_timeout = 15000;
select app.set_request_context(('0000000c-0000-4000-8000-' || :i)::uuid, public.hmac(uuid_send(('0000000c-0000-4000-8000-' || :i)::uuid), decode(:proofkey, 'hex'), 'sha256'), ('0000000a-0000-4000-8000-' || :i)::uuid, null)::text;
select id, org_id, name, description, access, created_at, updated_at from app.projects order by created_at, id limit :lim;
commit;
