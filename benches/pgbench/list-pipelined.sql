-- list.sql with the same wire shape as the server's Db::read_pipelined(): the four statements
-- pipelined and answered in one round trip. A stricter baseline than list.sql, which
-- (as the issue defines the baseline) waits for each statement before the next.
\set i 100000000000 + random(1, :orgs)
\set lim 21
\startpipeline
begin transaction read only;
select app.set_request_context(('0000000c-0000-4000-8000-' || :i)::uuid, public.hmac(uuid_send(('0000000c-0000-4000-8000-' || :i)::uuid), decode(:proofkey, 'hex'), 'sha256'), ('0000000a-0000-4000-8000-' || :i)::uuid);
select id, org_id, name, description, created_at, updated_at from app.projects order by created_at, id limit :lim;
commit;
\endpipeline
