-- login_attempts: never read or written by request SQL; only the throttle functions touch it.
alter table app.login_attempts enable row level security;
alter table app.login_attempts force row level security;

drop policy if exists login_attempts_guard on app.login_attempts;
create policy login_attempts_guard on app.login_attempts as restrictive for all
    to palisade_runtime, palisade_credentials, palisade_jobs
    using (false) with check (false);

drop policy if exists login_attempts_all_definer on app.login_attempts;
create policy login_attempts_all_definer on app.login_attempts for all to palisade_owner
    using (true) with check (true);

revoke all on app.login_attempts from public, palisade_runtime, palisade_credentials, palisade_jobs;

comment on policy login_attempts_guard on app.login_attempts is
    'Restrictive: only app.login_attempt_begin() and app.login_attempt_end().';
comment on policy login_attempts_all_definer on app.login_attempts is
    'Counting and recording password checks.';
