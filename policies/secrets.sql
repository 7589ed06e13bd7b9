-- org_data_keys, secrets: envelope encryption at rest. The server seals every secret
-- (ChaCha20-Poly1305) under its org's data key, which is stored here only wrapped by the
-- master key; the database never sees a plaintext secret, a data key, or the master key.
--
-- secrets: a member's own secrets (user_id = the member) are theirs alone -- no admin
-- reads or changes them; org-wide secrets and secret-valued settings (user_id NULL) are
-- listed to every member and changed by signed-in admins and owners. Only signed-in users
-- manage secrets (API keys: 403 api_key_not_allowed), and the ciphertext column is
-- readable because the server must open it (the assistant opens LLM keys) -- it is useless
-- without the master key. Data keys: readable by the org's members (wrapped), inserted
-- once per org (version 1) by whoever seals its first secret; later versions and
-- rewrapping are the operator's (`palisade keys`, as the schema owner).
alter table app.org_data_keys enable row level security;
alter table app.org_data_keys force row level security;

drop policy if exists org_data_keys_guard on app.org_data_keys;
create policy org_data_keys_guard on app.org_data_keys as restrictive for all
    to palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (org_id = (select app.current_org_id()));

drop policy if exists org_data_keys_guard_runtime on app.org_data_keys;
create policy org_data_keys_guard_runtime on app.org_data_keys as restrictive for all to palisade_runtime
    using (org_id = (select app.current_org_id()))
    with check (org_id = (select app.current_org_id()));

drop policy if exists org_data_keys_select_member on app.org_data_keys;
create policy org_data_keys_select_member on app.org_data_keys for select using (true);

drop policy if exists org_data_keys_insert_first on app.org_data_keys;
create policy org_data_keys_insert_first on app.org_data_keys for insert to palisade_runtime
    with check (version = 1 and (select app.require_signed_in_user()));

drop policy if exists org_data_keys_all_definer on app.org_data_keys;
create policy org_data_keys_all_definer on app.org_data_keys for all to palisade_owner
    using (true) with check (true);

revoke all on app.org_data_keys from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select on app.org_data_keys to palisade_runtime;
grant insert (version, wrapped_key, master_key_id) on app.org_data_keys to palisade_runtime;

comment on policy org_data_keys_guard on app.org_data_keys is
    'Restrictive tenant guard for the credential and worker lanes: only rows of the org in context. The runtime lane meets org_data_keys_guard_runtime alone (one context check a statement, not two), the owner''s definer functions org_data_keys_all_definer.';
comment on policy org_data_keys_guard_runtime on app.org_data_keys is
    'The tenant guard for the runtime role in index-friendly form (no definer OR).';
comment on policy org_data_keys_select_member on app.org_data_keys is
    'Members and keys of the org read its wrapped data keys (useless without the master key).';
comment on policy org_data_keys_insert_first on app.org_data_keys is
    'A signed-in member sealing the org''s first secret creates version 1 (insert ... on conflict do nothing); rotation is the operator''s.';
comment on policy org_data_keys_all_definer on app.org_data_keys is 'Definer functions (none today).';

alter table app.secrets enable row level security;
alter table app.secrets force row level security;

drop policy if exists secrets_guard on app.secrets;
create policy secrets_guard on app.secrets as restrictive for all
    to palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (org_id = (select app.current_org_id()));

drop policy if exists secrets_guard_runtime on app.secrets;
create policy secrets_guard_runtime on app.secrets as restrictive for all to palisade_runtime
    using (org_id = (select app.current_org_id()))
    with check (org_id = (select app.current_org_id()));

-- Another member's own secrets do not exist for the caller (404), whatever its role.
drop policy if exists secrets_owner_only on app.secrets;
create policy secrets_owner_only on app.secrets as restrictive for all to palisade_runtime
    using (user_id is null or user_id = (select app.current_user_id()))
    with check (user_id is null or user_id = (select app.current_user_id()));

drop policy if exists secrets_select_member on app.secrets;
create policy secrets_select_member on app.secrets for select using (true);

drop policy if exists secrets_insert_owner on app.secrets;
create policy secrets_insert_owner on app.secrets for insert to palisade_runtime
    with check ((select app.require_signed_in_user())
                and (user_id is not null or (select app.require_role('admin')))
                and created_by is not distinct from (select app.current_user_id())
                and created_by_key is null);

drop policy if exists secrets_update_owner on app.secrets;
create policy secrets_update_owner on app.secrets for update to palisade_runtime
    using (true)
    with check ((select app.require_signed_in_user())
                and (user_id is not null or (select app.require_role('admin'))));

drop policy if exists secrets_delete_owner on app.secrets;
create policy secrets_delete_owner on app.secrets for delete to palisade_runtime
    using (case when org_id = (select app.current_org_id())
                     and (user_id is null or user_id = (select app.current_user_id()))
                then (select app.require_signed_in_user())
                     and (user_id is not null or (select app.require_role('admin')))
                else false end);

drop policy if exists secrets_all_definer on app.secrets;
create policy secrets_all_definer on app.secrets for all to palisade_owner
    using (true) with check (true);

revoke all on app.secrets from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select, delete on app.secrets to palisade_runtime;
grant insert (user_id, kind, name, description, ciphertext, key_version, hint) on app.secrets to palisade_runtime;
grant update (description, ciphertext, key_version, hint, updated_at, value_updated_at) on app.secrets to palisade_runtime;

comment on policy secrets_guard on app.secrets is
    'Restrictive tenant guard for the credential and worker lanes: only rows of the org in context. The runtime lane meets secrets_guard_runtime alone (one context check a statement, not two), the owner''s definer functions secrets_all_definer.';
comment on policy secrets_guard_runtime on app.secrets is
    'The tenant guard for the runtime role in index-friendly form (no definer OR).';
comment on policy secrets_owner_only on app.secrets is
    'A member''s own secrets are theirs alone: hidden (404) from every other member, admins and owners included, and from API keys.';
comment on policy secrets_select_member on app.secrets is
    'Members list the org-wide secrets and their own (names and metadata; values only sealed).';
comment on policy secrets_insert_owner on app.secrets is
    'Signed-in members create their own; signed-in admins and owners create org-wide ones and the org''s secret settings. API keys: 403 api_key_not_allowed.';
comment on policy secrets_update_owner on app.secrets is 'The same rule as insert: the owner, or an admin for org-wide.';
comment on policy secrets_delete_owner on app.secrets is 'The same rule as insert: the owner, or an admin for org-wide.';
comment on policy secrets_all_definer on app.secrets is 'Definer functions (none today; rotation runs as the schema owner).';
