-- org_storage, storage_purge: storage accounting and the durable purge queue. Members
-- and keys read their org's total; only the storage triggers and the worker's functions
-- write (functions_storage.sql). The purge queue is the worker's alone: no request role
-- reads or writes it.
alter table app.org_storage enable row level security;
alter table app.org_storage force row level security;

drop policy if exists org_storage_guard on app.org_storage;
create policy org_storage_guard on app.org_storage as restrictive for all
    to palisade_runtime, palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (false);

drop policy if exists org_storage_select_member on app.org_storage;
create policy org_storage_select_member on app.org_storage for select using (true);

drop policy if exists org_storage_all_definer on app.org_storage;
create policy org_storage_all_definer on app.org_storage for all to palisade_owner
    using (true) with check (true);

revoke all on app.org_storage from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select on app.org_storage to palisade_runtime;

comment on policy org_storage_guard on app.org_storage is
    'Restrictive tenant guard for every lane: the org in context reads its own total; no lane writes (the owner''s definer triggers do, through org_storage_all_definer).';
comment on policy org_storage_select_member on app.org_storage is 'Members and keys read their org''s stored bytes.';
comment on policy org_storage_all_definer on app.org_storage is 'Definer triggers: storage_take, storage_release.';

alter table app.storage_purge enable row level security;
alter table app.storage_purge force row level security;

drop policy if exists storage_purge_guard on app.storage_purge;
create policy storage_purge_guard on app.storage_purge as restrictive for all
    to palisade_runtime, palisade_credentials, palisade_jobs
    using (false) with check (false);

drop policy if exists storage_purge_all_definer on app.storage_purge;
create policy storage_purge_all_definer on app.storage_purge for all to palisade_owner
    using (true) with check (true);

revoke all on app.storage_purge from public, palisade_runtime, palisade_credentials, palisade_jobs;

comment on policy storage_purge_guard on app.storage_purge is
    'Restrictive guard: only the storage triggers and the worker''s purge functions.';
comment on policy storage_purge_all_definer on app.storage_purge is
    'Definer functions: storage_release (enqueue), claim/finish/fail_storage_purge (worker).';
