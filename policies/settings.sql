-- org_settings: every member (and API key) of an org reads its settings; signed-in
-- admins and owners change them (API keys never: a leaked key must not be able to point
-- the org's model at another server). One row per org, created with the org by the
-- trigger below and deleted with it; secret-valued settings are sealed in app.secrets.
alter table app.org_settings enable row level security;
alter table app.org_settings force row level security;

drop policy if exists org_settings_guard on app.org_settings;
create policy org_settings_guard on app.org_settings as restrictive for all
    to palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (org_id = (select app.current_org_id()));

drop policy if exists org_settings_guard_runtime on app.org_settings;
create policy org_settings_guard_runtime on app.org_settings as restrictive for all to palisade_runtime
    using (org_id = (select app.current_org_id()))
    with check (org_id = (select app.current_org_id()));

drop policy if exists org_settings_select_member on app.org_settings;
create policy org_settings_select_member on app.org_settings for select using (true);

drop policy if exists org_settings_update_admin on app.org_settings;
create policy org_settings_update_admin on app.org_settings for update to palisade_runtime
    using (true)
    with check ((select app.require_signed_in_user()) and (select app.require_role('admin')));

drop policy if exists org_settings_all_definer on app.org_settings;
create policy org_settings_all_definer on app.org_settings for all to palisade_owner
    using (true) with check (true);

revoke all on app.org_settings from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select on app.org_settings to palisade_runtime;
grant update (agent, max_iterations, security_analyzer, confirmation_mode, llm_model, llm_base_url,
              llm_input_price_per_mtok, llm_output_price_per_mtok, mcp_config, max_budget_per_task,
              conversation_expiration, enable_default_condenser, billing_margin, search_language,
              updated_at)
    on app.org_settings to palisade_runtime;

comment on policy org_settings_guard on app.org_settings is
    'Restrictive tenant guard for the credential and worker lanes: only rows of the org in context. The runtime lane meets org_settings_guard_runtime alone (one context check a statement, not two), the owner''s definer functions org_settings_all_definer.';
comment on policy org_settings_guard_runtime on app.org_settings is
    'The tenant guard for the runtime role in index-friendly form (no definer OR).';
comment on policy org_settings_select_member on app.org_settings is
    'Members and keys of the org read its settings (secret values are not here).';
comment on policy org_settings_update_admin on app.org_settings is
    'Signed-in admins and owners change settings (403 forbidden below admin, 403 api_key_not_allowed for keys).';
comment on policy org_settings_all_definer on app.org_settings is
    'Definer functions: the row is created with the org (app.orgs_create_settings).';

-- Trigger: a new org gets its settings row.
create or replace function app.orgs_create_settings() returns trigger
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    insert into app.org_settings (org_id) values (new.id);
    return new;
end
$$;
revoke all on function app.orgs_create_settings() from public;
comment on function app.orgs_create_settings() is 'Trigger: a new org gets its settings row (defaults).';
create or replace trigger orgs_create_settings after insert on app.orgs
    for each row execute function app.orgs_create_settings();
