-- POST /v1/orgs/{org_id}/projects {"name": ...}, as the server sends it: BEGIN, the
-- context statement, the insert (org_id defaults from the context), COMMIT.
\set i 100000000000 + random(1, :orgs)
\set n random(1, 9000000000000000000)
begin;
select app.set_request_context(('0000000c-0000-4000-8000-' || :i)::uuid, public.hmac(uuid_send(('0000000c-0000-4000-8000-' || :i)::uuid), decode(:proofkey, 'hex'), 'sha256'), ('0000000a-0000-4000-8000-' || :i)::uuid);
insert into app.projects (name, description) values ('p-' || :n, null) returning id, org_id, name, description, created_at, updated_at;
commit;
