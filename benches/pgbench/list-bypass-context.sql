-- list.sql run by a role that bypasses RLS (the superuser), with the org filter written
-- out: the same context statement and round trips, so against list.sql it prices the
-- policies alone.
\set i 100000000000 + random(1, :orgs)
\set lim 21
begin transaction read only;
select app.set_request_context(('0000000c-0000-4000-8000-' || :i)::uuid, public.hmac(uuid_send(('0000000c-0000-4000-8000-' || :i)::uuid), decode(:proofkey, 'hex'), 'sha256'), ('0000000a-0000-4000-8000-' || :i)::uuid);
select id, org_id, name, description, created_at, updated_at from app.projects where org_id = ('0000000a-0000-4000-8000-' || :i)::uuid order by created_at, id limit :lim;
commit;
