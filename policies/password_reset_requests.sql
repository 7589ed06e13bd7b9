-- password_reset_requests: never read or written by request SQL; the credential role
-- appends through app.request_password_reset(), the worker consumes through
-- app.claim_password_resets() and app.issue_password_reset().
alter table app.password_reset_requests enable row level security;
alter table app.password_reset_requests force row level security;

drop policy if exists password_reset_requests_guard on app.password_reset_requests;
create policy password_reset_requests_guard on app.password_reset_requests as restrictive for all
    to palisade_runtime, palisade_credentials, palisade_jobs
    using (false) with check (false);

drop policy if exists password_reset_requests_all_definer on app.password_reset_requests;
create policy password_reset_requests_all_definer on app.password_reset_requests for all to palisade_owner
    using (true) with check (true);

revoke all on app.password_reset_requests
    from public, palisade_runtime, palisade_credentials, palisade_jobs;

comment on policy password_reset_requests_guard on app.password_reset_requests is
    'Restrictive: only the password-reset functions.';
comment on policy password_reset_requests_all_definer on app.password_reset_requests is
    'app.request_password_reset(), app.operator_password_reset() (owner: palisade users reset-password), app.claim_password_resets(), app.issue_password_reset(), app.purge_expired().';
