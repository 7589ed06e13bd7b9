-- refresh_tokens: never read or written by request SQL; only the session functions touch it.
alter table app.refresh_tokens enable row level security;
alter table app.refresh_tokens force row level security;

drop policy if exists refresh_tokens_guard on app.refresh_tokens;
create policy refresh_tokens_guard on app.refresh_tokens as restrictive for all
    to palisade_runtime, palisade_credentials, palisade_jobs
    using (false) with check (false);

drop policy if exists refresh_tokens_all_definer on app.refresh_tokens;
create policy refresh_tokens_all_definer on app.refresh_tokens for all to palisade_owner
    using (true) with check (true);

revoke all on app.refresh_tokens from public, palisade_runtime, palisade_credentials, palisade_jobs;

comment on policy refresh_tokens_guard on app.refresh_tokens is
    'Restrictive: only app.create_session() and app.refresh_session().';
comment on policy refresh_tokens_all_definer on app.refresh_tokens is
    'Token rotation and reuse detection live in app.refresh_session().';
