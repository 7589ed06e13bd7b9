-- Bench dataset, set-based, run as the cluster's superuser by benches/load.sh:
--   psql -v orgs=10000 -v per_org=20 -v pwhash='<argon2 hash>' -v proofkey='<hex>' -f benches/seed.sql
-- Org i (1..orgs) has one owner user i with one live session i and per_org projects.
-- Ids are derived from i so pgbench and the token file can name them without a lookup:
--   org     0000000a-0000-4000-8000-<100000000000 + i>
--   user    0000000b-0000-4000-8000-<100000000000 + i>   email bench-<i>@example.com
--   session 0000000c-0000-4000-8000-<100000000000 + i>
-- Session i's proof is HMAC-SHA256(proofkey, its id), as the server derives it
-- (crate::crypto::SessionProofs); the seed stores its SHA-256 and the pgbench scripts
-- compute the HMAC with pgcrypto (bench database only) to prove the session.
-- Projects are inserted round-robin over the orgs (project 1 of every org, then
-- project 2, ...), as a real tenant mix would write them, so one org's rows are spread
-- over the heap rather than packed together.
\set ON_ERROR_STOP on
create extension if not exists pgcrypto with schema public;
grant execute on function public.hmac(bytea, bytea, text) to palisade_app;
begin;
-- Consistent by construction: skip per-row FK triggers so 1M rows load in seconds.
set local session_replication_role = replica;
truncate app.projects, app.sessions, app.memberships, app.orgs, app.users cascade;

insert into app.users (id, email, name, password_hash, current_org_id)
select ('0000000b-0000-4000-8000-' || (100000000000 + i))::uuid,
       'bench-' || i || '@example.com', 'Bench user ' || i, :'pwhash',
       ('0000000a-0000-4000-8000-' || (100000000000 + i))::uuid
  from generate_series(1, :orgs) i;

insert into app.orgs (id, name, slug, personal, created_by)
select ('0000000a-0000-4000-8000-' || (100000000000 + i))::uuid,
       'Bench org ' || i, 'bench-' || i, true,
       ('0000000b-0000-4000-8000-' || (100000000000 + i))::uuid
  from generate_series(1, :orgs) i;

insert into app.memberships (org_id, user_id, role)
select ('0000000a-0000-4000-8000-' || (100000000000 + i))::uuid,
       ('0000000b-0000-4000-8000-' || (100000000000 + i))::uuid, 'owner'
  from generate_series(1, :orgs) i;

-- The unlimited plan: a benchmark measures the request path, not a plan's quotas (the
-- trigger that would pick the default plan is skipped with the other triggers here).
insert into app.org_plans (org_id, plan_id)
select ('0000000a-0000-4000-8000-' || (100000000000 + i))::uuid, 'enterprise'
  from generate_series(1, :orgs) i;

insert into app.sessions (id, user_id, expires_at, proof_hash)
select ('0000000c-0000-4000-8000-' || (100000000000 + i))::uuid,
       ('0000000b-0000-4000-8000-' || (100000000000 + i))::uuid, now() + interval '10 years',
       sha256(public.hmac(uuid_send(('0000000c-0000-4000-8000-' || (100000000000 + i))::uuid),
                          decode(:'proofkey', 'hex'), 'sha256'))
  from generate_series(1, :orgs) i;

insert into app.projects (org_id, name, description, created_at, updated_at)
select ('0000000a-0000-4000-8000-' || (100000000000 + i))::uuid,
       'project-' || j, 'Seeded project ' || j || ' of org ' || i,
       timestamptz '2026-01-01 00:00:00+00' + j * interval '1 minute' + i * interval '1 millisecond',
       timestamptz '2026-01-01 00:00:00+00' + j * interval '1 minute' + i * interval '1 millisecond'
  from generate_series(1, :per_org) j, generate_series(1, :orgs) i;
commit;
vacuum analyze app.users, app.orgs, app.memberships, app.org_plans, app.sessions, app.projects;
select (select count(*) from app.orgs) as orgs, (select count(*) from app.projects) as projects;
