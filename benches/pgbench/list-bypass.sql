-- The list query with isolation done by hand instead of by RLS: run as a role that
-- bypasses RLS (the superuser), with an explicit org filter and no context statement.
-- Compared with list.sql it prices the whole isolation mechanism (context function +
-- policies).
\set i 100000000000 + random(1, :orgs)
\set lim 21
begin transaction read only;
select id, org_id, name, description, created_at, updated_at from app.projects where org_id = ('0000000a-0000-4000-8000-' || :i)::uuid order by created_at, id limit :lim;
commit;
