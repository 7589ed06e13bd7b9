-- GET /v1/orgs/{org_id}/projects?limit=20, as the server sends it (src/db/mod.rs,
-- src/api/projects.rs): BEGIN read only, the context statement, the list query with
-- limit+1 (to know whether there is a next page), COMMIT. Ids as in benches/seed.sql.
\set i 100000000000 + random(1, :orgs)
\set lim 21
begin transaction read only;
select app.set_request_context(('0000000c-0000-4000-8000-' || :i)::uuid, public.hmac(uuid_send(('0000000c-0000-4000-8000-' || :i)::uuid), decode(:proofkey, 'hex'), 'sha256'), ('0000000a-0000-4000-8000-' || :i)::uuid);
select id, org_id, name, description, created_at, updated_at from app.projects order by created_at, id limit :lim;
commit;
