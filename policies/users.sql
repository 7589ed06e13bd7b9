-- users: a user sees their own account and the accounts of members of the org in context.
alter table app.users enable row level security;
alter table app.users force row level security;

-- The guard names every role but the owner, and the owner's policy (users_all_definer) is
-- `true` rather than `(select app.is_definer())` -- the same thing for the owner, which is
-- all is_definer() tests. Written for everyone with an is_definer() arm, the guard's
-- membership subquery was a SubPlan that PostgreSQL set up on every definer statement that
-- read app.users even though that arm admitted the row -- an API key's creator on every key
-- request, the actor of every audit row: 24 -> 15 µs a lookup. The isolation report
-- (audit.sql: lane_unguarded, stranger_grant) finds a lane this leaves unguarded and any
-- other role granted into app's tables, so no role escapes the guard this way.
drop policy if exists users_guard on app.users;
create policy users_guard on app.users as restrictive for all
    to palisade_runtime, palisade_credentials, palisade_jobs
    using (
        id = (select app.current_user_id())
        or exists (select 1 from app.memberships m
                    where m.user_id = users.id and m.org_id = (select app.current_org_id()))
    );

drop policy if exists users_select_self_or_org_member on app.users;
create policy users_select_self_or_org_member on app.users for select
    using (true);

drop policy if exists users_update_self on app.users;
create policy users_update_self on app.users for update to palisade_runtime
    using (id = (select app.current_user_id()))
    with check (id = (select app.current_user_id()));

drop policy if exists users_all_definer on app.users;
create policy users_all_definer on app.users for all to palisade_owner
    using (true) with check (true);

-- password_hash is deliberately absent from every runtime grant: request SQL can never read it.
revoke all on app.users from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select (id, email, name, email_verified_at, current_org_id, created_at, updated_at)
    on app.users to palisade_runtime, palisade_credentials;
-- updated_at is kept by the touch_updated_at trigger (updated_at.sql).
grant update (name) on app.users to palisade_runtime;

comment on policy users_guard on app.users is
    'Restrictive, for every lane (the owner -- the definer functions -- is admitted by users_all_definer): only yourself or members of the org in context.';
comment on policy users_select_self_or_org_member on app.users is
    'Read whatever the guard lets through.';
comment on policy users_update_self on app.users is
    'A user edits only their own account (column grants limit it to name).';
comment on policy users_all_definer on app.users is
    'Registration, login and password changes go through security definer functions; disabling an account through the owner''s app.operator_disable_user().';
