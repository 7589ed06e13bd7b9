-- sessions: a user sees and revokes only their own sign-in sessions.
alter table app.sessions enable row level security;
alter table app.sessions force row level security;

drop policy if exists sessions_guard on app.sessions;
create policy sessions_guard on app.sessions as restrictive for all
    using (user_id = (select app.current_user_id()) or (select app.is_definer()));

drop policy if exists sessions_select_self on app.sessions;
create policy sessions_select_self on app.sessions for select
    using (true);

drop policy if exists sessions_update_self on app.sessions;
create policy sessions_update_self on app.sessions for update
    using (user_id = (select app.current_user_id()))
    with check (user_id = (select app.current_user_id()));

drop policy if exists sessions_all_definer on app.sessions;
create policy sessions_all_definer on app.sessions for all
    using ((select app.is_definer()))
    with check ((select app.is_definer()));

revoke all on app.sessions from public, palisade_runtime;
grant select on app.sessions to palisade_runtime;
grant update (revoked_at) on app.sessions to palisade_runtime;

comment on policy sessions_guard on app.sessions is 'Restrictive: only your own sessions.';
comment on policy sessions_select_self on app.sessions is 'Read whatever the guard lets through.';
comment on policy sessions_update_self on app.sessions is 'Revoke (set revoked_at on) your own sessions.';
comment on policy sessions_all_definer on app.sessions is
    'Sessions are created by app.create_session() after the password was verified.';
