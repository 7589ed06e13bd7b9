-- sessions: a user sees only their own sign-in sessions; nobody edits them directly.
-- Revocation is one-way: the definer functions of functions_sessions.sql revoke, and the
-- trigger sessions_revocation_is_final (same file) refuses any change to a revoked_at
-- once set, even by those functions.
alter table app.sessions enable row level security;
alter table app.sessions force row level security;

drop policy if exists sessions_guard on app.sessions;
create policy sessions_guard on app.sessions as restrictive for all
    to palisade_runtime, palisade_credentials, palisade_jobs
    using (user_id = (select app.current_user_id()));

drop policy if exists sessions_select_self on app.sessions;
create policy sessions_select_self on app.sessions for select
    using (true);

drop policy if exists sessions_update_self on app.sessions;

drop policy if exists sessions_all_definer on app.sessions;
create policy sessions_all_definer on app.sessions for all to palisade_owner
    using (true) with check (true);

-- proof_hash is absent from the grant: no runtime role ever reads it. No update grant:
-- revoking goes through app.revoke_session(), app.revoke_other_sessions() and
-- app.end_current_session().
revoke all on app.sessions from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select (id, user_id, created_at, last_used_at, expires_at, revoked_at, user_agent, ip)
    on app.sessions to palisade_runtime;

comment on policy sessions_guard on app.sessions is
    'Restrictive, for every lane: only your own sessions. The owner''s definer functions meet sessions_all_definer alone (no policy expression in a context statement).';
comment on policy sessions_select_self on app.sessions is 'Read whatever the guard lets through.';
comment on policy sessions_all_definer on app.sessions is
    'Sessions are created by app.create_session() after the password was verified, and revoked by the functions of functions_sessions.sql (and the operator''s, functions_operator.sql).';
