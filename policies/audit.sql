-- audit: app.isolation_report, one row per finding that would let request SQL cross a
-- tenant or the role boundaries. Empty means clean. `palisade audit` prints it (with
-- the inventory behind it and the role timeouts the server expects) and exits non-zero
-- on any row; CI runs it. For a DBA in psql:
--
--     select * from app.isolation_report;
--
-- Checks, each a `check` value below:
--   rls_not_forced          a table in schema app, or any table with an org_id column,
--                           without row-level security enabled AND forced
--   no_policy               such a table with no policy at all
--   no_tenant_guard         a table with an org_id column without a restrictive policy
--   lane_unguarded          a table with a restrictive guard none of whose restrictive
--                           policies applies to one of the lanes (a guard scoped to roles,
--                           as users_guard, that misses a lane)
--   stranger_grant          a table, view or column in app granted to a role that is
--                           neither the schema owner nor a lane group: guards scoped to the
--                           lanes would not bind it (PUBLIC: public_grant)
--   org_id_writable         a runtime role may insert or update org_id (it must come
--                           from the context)
--   definer_search_path     a security definer function in app without a pinned
--                           search_path, or with public / "$user" in it
--   definer_owner           a security definer function in app not owned by the schema owner
--   definer_comment         a security definer function in app without a comment
--   public_execute          a function in app executable by PUBLIC
--   public_grant            a table, view, sequence or column in app granted to PUBLIC
--   leakproof               a function in app marked leakproof (may see rows RLS hides)
--   view_not_invoker        a view in app without security_invoker (it would run with
--                           its owner's rights, past RLS)
--   runtime_bypass          a role of a runtime group that is, or can become, a
--                           superuser, BYPASSRLS role or the schema owner
--   runtime_owns            an object in app owned by a role of a runtime group
--   lane_crossing           a login role that is a member of two runtime groups
--   runtime_can_signal      a runtime role that may cancel or terminate backends: all
--                           tenants share the role, so one request could end the others'
--                           (deploy/database.sql revokes these functions from PUBLIC)
create or replace view app.isolation_report with (security_invoker = true) as
with recursive
    lanes(name) as (values ('palisade_runtime'), ('palisade_credentials'), ('palisade_jobs')),
    -- Every role inside a lane group, however deep, and the group it is in.
    lane_members(member, lane) as (
        select m.member, g.rolname::text
          from pg_catalog.pg_auth_members m
          join pg_catalog.pg_roles g on g.oid = m.roleid
         where g.rolname in (select name from lanes)
        union
        select m.member, lm.lane
          from pg_catalog.pg_auth_members m
          join lane_members lm on m.roleid = lm.member
    ),
    runtime_roles as (
        select distinct r.oid, r.rolname from lane_members lm join pg_catalog.pg_roles r on r.oid = lm.member
        union
        select r.oid, r.rolname from pg_catalog.pg_roles r where r.rolname in (select name from lanes)
    ),
    -- Every role a runtime role is a member of (what it could become), itself included.
    reachable(runtime, role) as (
        select oid, oid from runtime_roles
        union
        select re.runtime, m.roleid from pg_catalog.pg_auth_members m join reachable re on m.member = re.role
    ),
    schema_owner as (
        select n.nspowner as oid from pg_catalog.pg_namespace n where n.nspname = 'app'
    ),
    protected_tables as (
        select c.oid, n.nspname, c.relname, c.relrowsecurity, c.relforcerowsecurity,
               exists (select 1 from pg_catalog.pg_attribute a
                        where a.attrelid = c.oid and a.attname = 'org_id' and not a.attisdropped) as tenant
          from pg_catalog.pg_class c
          join pg_catalog.pg_namespace n on n.oid = c.relnamespace
         where c.relkind in ('r', 'p')
           and n.nspname not in ('pg_catalog', 'information_schema')
           and (n.nspname = 'app'
                or exists (select 1 from pg_catalog.pg_attribute a
                            where a.attrelid = c.oid and a.attname = 'org_id' and not a.attisdropped))
    ),
    -- Every grant on a table, view, sequence or column of app (an unset table ACL: the
    -- owner's default). `privilege` reads "SELECT" or "SELECT on the column".
    app_grants(object, relkind, privilege, grantee, owner) as (
        select pg_catalog.format('app.%I', c.relname), c.relkind, a.privilege_type, a.grantee, c.relowner
          from pg_catalog.pg_class c
         cross join lateral pg_catalog.aclexplode(coalesce(c.relacl, pg_catalog.acldefault('r', c.relowner))) a
         where c.relnamespace = 'app'::regnamespace and c.relkind in ('r', 'p', 'v', 'm', 'S', 'f')
        union all
        select pg_catalog.format('app.%I.%I', c.relname, at.attname), c.relkind,
               a.privilege_type || ' on the column', a.grantee, c.relowner
          from pg_catalog.pg_class c
          join pg_catalog.pg_attribute at on at.attrelid = c.oid and at.attacl is not null
         cross join lateral pg_catalog.aclexplode(at.attacl) a
         where c.relnamespace = 'app'::regnamespace
    ),
    app_functions as (
        select p.oid, p.oid::regprocedure::text as name, p.prosecdef, p.proowner, p.proconfig,
               p.proleakproof, coalesce(p.proacl, pg_catalog.acldefault('f', p.proowner)) as acl
          from pg_catalog.pg_proc p
         where p.pronamespace = 'app'::regnamespace
    )
select 'rls_not_forced'::text as "check", pg_catalog.format('%I.%I', t.nspname, t.relname) as object,
       'row-level security must be enabled and forced'::text as detail
  from protected_tables t where not (t.relrowsecurity and t.relforcerowsecurity)
union all
select 'no_policy', pg_catalog.format('%I.%I', t.nspname, t.relname), 'the table has no policy'
  from protected_tables t
 where not exists (select 1 from pg_catalog.pg_policy p where p.polrelid = t.oid)
union all
select 'no_tenant_guard', pg_catalog.format('%I.%I', t.nspname, t.relname),
       'a table with org_id needs a restrictive tenant guard policy'
  from protected_tables t
 where t.tenant
   and not exists (select 1 from pg_catalog.pg_policy p where p.polrelid = t.oid and not p.polpermissive)
union all
select 'lane_unguarded', pg_catalog.format('%I.%I', t.nspname, t.relname),
       pg_catalog.format('no restrictive policy applies to %s', l.name)
  from protected_tables t cross join lanes l
 where exists (select 1 from pg_catalog.pg_policy p where p.polrelid = t.oid and not p.polpermissive)
   and not exists (select 1 from pg_catalog.pg_policy p
                    where p.polrelid = t.oid and not p.polpermissive
                      and (0 operator(pg_catalog.=) any (p.polroles)
                           or (select r.oid from pg_catalog.pg_roles r where r.rolname = l.name)
                              operator(pg_catalog.=) any (p.polroles)))
union all
select 'stranger_grant', g.object, pg_catalog.format('%s granted to %s', g.privilege, pg_catalog.pg_get_userbyid(g.grantee))
  from app_grants g
 where g.relkind <> 'S'
   and g.grantee <> 0 and g.grantee <> g.owner and g.grantee <> (select oid from schema_owner)
   and pg_catalog.pg_get_userbyid(g.grantee) not in (select name from lanes)
union all
select 'org_id_writable', pg_catalog.format('%I.%I', t.nspname, t.relname),
       pg_catalog.format('%s may %s org_id; it must default from the request context', r.rolname, priv)
  from protected_tables t
 cross join runtime_roles r
 cross join (values ('INSERT'), ('UPDATE')) as v(priv)
 where t.tenant and pg_catalog.has_column_privilege(r.oid, t.oid, 'org_id', priv)
union all
select 'definer_search_path', f.name, 'security definer without a pinned search_path (or with public/$user in it)'
  from app_functions f
 where f.prosecdef
   and not exists (select 1 from pg_catalog.unnest(f.proconfig) c
                    where c like 'search_path=%' and c not like '%public%' and c not like '%$user%')
union all
select 'definer_owner', f.name, 'security definer not owned by the owner of schema app'
  from app_functions f where f.prosecdef and f.proowner <> (select oid from schema_owner)
union all
select 'definer_comment', f.name, 'security definer without a comment saying what it does and for whom'
  from app_functions f
 where f.prosecdef and pg_catalog.obj_description(f.oid, 'pg_proc') is null
union all
select 'public_execute', f.name, 'executable by PUBLIC'
  from app_functions f
 where exists (select 1 from pg_catalog.aclexplode(f.acl) a where a.grantee = 0 and a.privilege_type = 'EXECUTE')
union all
select 'public_grant', g.object, pg_catalog.format('%s granted to PUBLIC', g.privilege)
  from app_grants g where g.grantee = 0
union all
select 'leakproof', f.name, 'marked leakproof: may be evaluated before RLS filters and see hidden rows'
  from app_functions f where f.proleakproof
union all
select 'view_not_invoker', pg_catalog.format('app.%I', c.relname), 'a view without security_invoker runs as its owner, past RLS'
  from pg_catalog.pg_class c
 where c.relnamespace = 'app'::regnamespace and c.relkind = 'v'
   and not exists (select 1 from pg_catalog.unnest(c.reloptions) o
                    where pg_catalog.lower(o) in ('security_invoker=true', 'security_invoker=on', 'security_invoker=1'))
union all
select 'runtime_bypass', r.rolname::text,
       pg_catalog.format('can act as %s (%s)', target.rolname,
           pg_catalog.concat_ws(', ', case when target.rolsuper then 'superuser' end,
                                      case when target.rolbypassrls then 'BYPASSRLS' end,
                                      case when target.oid = (select oid from schema_owner) then 'owner of schema app' end))
  from runtime_roles r
  join reachable re on re.runtime = r.oid
  join pg_catalog.pg_roles target on target.oid = re.role
 where target.rolsuper or target.rolbypassrls or target.oid = (select oid from schema_owner)
union all
select 'runtime_owns', pg_catalog.format('app.%I', c.relname), pg_catalog.format('owned by %s', r.rolname)
  from pg_catalog.pg_class c join runtime_roles r on r.oid = c.relowner
 where c.relnamespace = 'app'::regnamespace
union all
select 'runtime_owns', f.name, pg_catalog.format('owned by %s', r.rolname)
  from app_functions f join runtime_roles r on r.oid = f.proowner
union all
select 'lane_crossing', r.rolname::text, pg_catalog.format('member of %s', pg_catalog.string_agg(distinct lm.lane, ' and '))
  from lane_members lm join pg_catalog.pg_roles r on r.oid = lm.member
 where r.rolcanlogin
 group by r.rolname
having count(distinct lm.lane) > 1
union all
select 'runtime_can_signal', r.rolname::text, pg_catalog.format('may execute %s: run deploy/database.sql', f)
  from runtime_roles r
 cross join (values ('pg_catalog.pg_cancel_backend(integer)'),
                    ('pg_catalog.pg_terminate_backend(integer,bigint)')) as v(f)
 where pg_catalog.has_function_privilege(r.oid, f, 'execute');

comment on view app.isolation_report is
    'One row per isolation finding (RLS, definer functions, grants, roles); empty means clean. See policies/audit.sql.';
revoke all on app.isolation_report from public, palisade_runtime, palisade_credentials, palisade_jobs;
