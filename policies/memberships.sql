-- memberships: a user sees their own memberships and the member list of the org in context.
alter table app.memberships enable row level security;
alter table app.memberships force row level security;

drop policy if exists memberships_guard on app.memberships;
create policy memberships_guard on app.memberships as restrictive for all
    to palisade_runtime, palisade_credentials, palisade_jobs
    using (
        user_id = (select app.current_user_id())
        or org_id = (select app.current_org_id())
    );

drop policy if exists memberships_select_member on app.memberships;
create policy memberships_select_member on app.memberships for select
    using (true);

drop policy if exists memberships_all_definer on app.memberships;
create policy memberships_all_definer on app.memberships for all to palisade_owner
    using (true) with check (true);

-- Writes only through security definer functions, which enforce the role rules
-- (policies/functions_orgs.sql).
revoke all on app.memberships from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select on app.memberships to palisade_runtime, palisade_credentials;

comment on policy memberships_guard on app.memberships is
    'Restrictive, for every lane: your own memberships, or those of the org in context. The owner''s definer functions meet memberships_all_definer alone.';
comment on policy memberships_select_member on app.memberships is
    'Read whatever the guard lets through.';
comment on policy memberships_all_definer on app.memberships is
    'Membership changes go through security definer functions that enforce role rules: app.create_org(), '
    'app.change_member_role(), app.remove_member(), app.transfer_ownership(), app.accept_invitation().';
