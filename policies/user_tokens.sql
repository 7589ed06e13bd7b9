-- user_tokens: never read or written by request SQL; only the token functions touch it.
alter table app.user_tokens enable row level security;
alter table app.user_tokens force row level security;

drop policy if exists user_tokens_guard on app.user_tokens;
create policy user_tokens_guard on app.user_tokens as restrictive for all
    to palisade_runtime, palisade_credentials, palisade_jobs
    using (false) with check (false);

drop policy if exists user_tokens_all_definer on app.user_tokens;
create policy user_tokens_all_definer on app.user_tokens for all to palisade_owner
    using (true) with check (true);

revoke all on app.user_tokens from public, palisade_runtime, palisade_credentials, palisade_jobs;

comment on policy user_tokens_guard on app.user_tokens is
    'Restrictive: only the verification and reset functions.';
comment on policy user_tokens_all_definer on app.user_tokens is
    'app.issue_email_verification(), app.confirm_email(), app.request_password_reset(), app.reset_password().';
