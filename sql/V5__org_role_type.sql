-- V5: organization roles as a type.
--
-- Why: the four roles and their order lived in two check constraints, a CASE in
-- app.role_rank() and the Rust code, as text. An enum names them once, in rank order
-- (viewer < member < admin < owner), so a rank check is a plain comparison
-- (`role >= 'admin'`), a DBA sees the type in \dT+, and a typo cannot reach a table.
--
-- The old text helpers are dropped here; policies/ (re-applied right after every
-- migration) creates their replacements and the policies that use them. CASCADE drops
-- those policies too until then: a table with RLS forced and no policy denies everything.

create type app.org_role as enum ('viewer', 'member', 'admin', 'owner');
comment on type app.org_role is
    'A role in an organization, in rank order: viewer < member < admin < owner.';

alter table app.memberships drop constraint memberships_role_check;
alter table app.memberships alter column role type app.org_role using role::app.org_role;
alter table app.invitations drop constraint invitations_role_check;
alter table app.invitations alter column role type app.org_role using role::app.org_role;

drop function if exists app.role_rank(text) cascade;
drop function if exists app.has_org_role(text) cascade;
drop function if exists app.assert_org_role(text) cascade;
drop function if exists app.require_rank(text, text, text) cascade;
drop function if exists app.change_member_role(uuid, text) cascade;
drop function if exists app.create_invitation(text, text, bytea) cascade;
drop function if exists app.lock_pending_invitation(uuid, text) cascade;
drop function if exists app.current_org_role() cascade;
