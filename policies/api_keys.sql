-- api_keys, api_key_secrets, rate_limits.
--
-- api_keys: admins and owners of the org in context read its keys -- as signed-in users:
-- a request authenticated by an API key never reads keys (not even its own). Every write
-- goes through the definer functions of functions_api_keys.sql (create, rename, rotate,
-- revoke), which append to the audit log in the same transaction. The runtime role's select
-- is granted column by column: never secret_hash (the current secret's SHA-256), which
-- only the definer functions match a presented key against, nor creator_disabled (an
-- operator's decision about a person, like app.users.disabled_at).
-- api_key_secrets (secrets a rotation replaced, in their grace window) and rate_limits:
-- no runtime role reads or writes them; only the definer functions of
-- functions_api_keys.sql and functions_rate_limits.sql (and the worker's retention) do.
alter table app.api_keys enable row level security;
alter table app.api_keys force row level security;

drop policy if exists api_keys_guard on app.api_keys;
create policy api_keys_guard on app.api_keys as restrictive for all
    to palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (org_id = (select app.current_org_id()));

drop policy if exists api_keys_guard_runtime on app.api_keys;
create policy api_keys_guard_runtime on app.api_keys as restrictive for all to palisade_runtime
    using (org_id = (select app.current_org_id()))
    with check (org_id = (select app.current_org_id()));

drop policy if exists api_keys_select_admin on app.api_keys;
create policy api_keys_select_admin on app.api_keys for select to palisade_runtime
    using ((select app.has_org_role('admin')) and (select app.current_user_id()) is not null);

drop policy if exists api_keys_all_definer on app.api_keys;
create policy api_keys_all_definer on app.api_keys for all to palisade_owner
    using (true) with check (true);

-- Revoking the table's privileges revokes its columns' too.
revoke all on app.api_keys from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select (org_id, id, name, role, start, created_by, expires_at, last_used_at, rotated_at,
              revoked_at, revoked_reason, created_at)
    on app.api_keys to palisade_runtime;

comment on policy api_keys_guard on app.api_keys is
    'Restrictive tenant guard for the credential and worker lanes: only rows of the org in context. The runtime lane meets api_keys_guard_runtime alone (one context check a statement, not two), the owner''s definer functions api_keys_all_definer.';
comment on policy api_keys_guard_runtime on app.api_keys is
    'The tenant guard for the runtime role in index-friendly form (no definer OR).';
comment on policy api_keys_select_admin on app.api_keys is
    'Signed-in admins and owners read their org''s keys; members, viewers and API keys see none.';
comment on policy api_keys_all_definer on app.api_keys is
    'Writes: app.create_api_key(), app.rename_api_key(), app.rotate_api_key(), app.revoke_api_key(), app.remove_member(); last use: app.flush_api_calls() (from the limiter''s bucket rows); creator_disabled: app.api_keys_follow_creator_disabled() (a trigger on app.users).';

alter table app.api_key_secrets enable row level security;
alter table app.api_key_secrets force row level security;

-- The lanes meet a guard that matches nothing; the owner (the definer functions) its
-- own policy alone, so a key's lookup pays for no policy expression at all.
drop policy if exists api_key_secrets_guard on app.api_key_secrets;
create policy api_key_secrets_guard on app.api_key_secrets as restrictive for all
    to palisade_runtime, palisade_credentials, palisade_jobs
    using (false) with check (false);

drop policy if exists api_key_secrets_all_definer on app.api_key_secrets;
create policy api_key_secrets_all_definer on app.api_key_secrets for all to palisade_owner
    using (true) with check (true);

revoke all on app.api_key_secrets from public, palisade_runtime, palisade_credentials, palisade_jobs;

comment on policy api_key_secrets_guard on app.api_key_secrets is
    'Restrictive: no lane reads or writes secrets; only the definer functions (api_key_secrets_all_definer) match a presented key''s hash.';
comment on policy api_key_secrets_all_definer on app.api_key_secrets is
    'app.set_api_key_context(), app.rate_limit_api_key() (a secret that is not a key''s current one), app.rotate_api_key(), app.purge_expired().';

alter table app.rate_limits enable row level security;
alter table app.rate_limits force row level security;

drop policy if exists rate_limits_guard on app.rate_limits;
create policy rate_limits_guard on app.rate_limits as restrictive for all
    to palisade_runtime, palisade_credentials, palisade_jobs
    using (false) with check (false);

drop policy if exists rate_limits_all_definer on app.rate_limits;
create policy rate_limits_all_definer on app.rate_limits for all to palisade_owner
    using (true) with check (true);

revoke all on app.rate_limits from public, palisade_runtime, palisade_credentials, palisade_jobs;

comment on policy rate_limits_guard on app.rate_limits is
    'Restrictive: no lane reads or writes buckets; only the limiter functions (functions_rate_limits.sql) and retention, through rate_limits_all_definer.';
comment on policy rate_limits_all_definer on app.rate_limits is
    'app.rate_limit_take() through app.rate_limit_session(), app.rate_limit_api_key(), app.rate_limit_ip(); app.purge_expired().';
