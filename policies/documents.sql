-- documents, document_chunks: uploaded files (bytes in the object store) and their
-- extracted text. Every member and key of the org reads them, except a restricted
-- project's, seen only by who sees the project. Members and up upload (into a project
-- they may write); the uploader or an org admin renames or deletes. Status, text and
-- chunks are written only by the worker's functions (functions_storage.sql). The write
-- rules name the runtime role: they raise (403/404) rather than return false, and the
-- worker's definer functions, which update documents, must not evaluate them.
alter table app.documents enable row level security;
alter table app.documents force row level security;

drop policy if exists documents_guard on app.documents;
create policy documents_guard on app.documents as restrictive for all
    to palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (org_id = (select app.current_org_id()));

drop policy if exists documents_guard_runtime on app.documents;
create policy documents_guard_runtime on app.documents as restrictive for all to palisade_runtime
    using (org_id = (select app.current_org_id()))
    with check (org_id = (select app.current_org_id()));

drop policy if exists documents_project_access on app.documents;
create policy documents_project_access on app.documents as restrictive for all to palisade_runtime
    using (project_id is null or not (project_id = any ((select app.hidden_projects())::uuid[])))
    with check (true);

drop policy if exists documents_select_member on app.documents;
create policy documents_select_member on app.documents for select using (true);

drop policy if exists documents_insert_member on app.documents;
create policy documents_insert_member on app.documents for insert to palisade_runtime
    with check (app.require_project_writer(project_id)
                and created_by is not distinct from (select app.current_user_id())
                and created_by_key is not distinct from (select app.current_api_key_id())
                and status = 'uploaded');

drop policy if exists documents_update_writer on app.documents;
create policy documents_update_writer on app.documents for update to palisade_runtime
    using (true)
    with check (app.require_creator_or_admin(created_by, created_by_key, project_id));

drop policy if exists documents_delete_writer on app.documents;
create policy documents_delete_writer on app.documents for delete to palisade_runtime
    using (case when org_id = (select app.current_org_id())
                then app.require_creator_or_admin(created_by, created_by_key, project_id) else false end);

drop policy if exists documents_all_definer on app.documents;
create policy documents_all_definer on app.documents for all to palisade_owner
    using (true) with check (true);

revoke all on app.documents from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select, delete on app.documents to palisade_runtime;
grant insert (id, project_id, title, filename, content_type, bytes, sha256) on app.documents to palisade_runtime;
grant update (title, updated_at) on app.documents to palisade_runtime;

comment on policy documents_guard on app.documents is
    'Restrictive tenant guard for the credential and worker lanes: only rows of the org in context. The runtime lane meets documents_guard_runtime alone (one context check a statement, not two), the owner''s definer functions documents_all_definer.';
comment on policy documents_guard_runtime on app.documents is
    'The tenant guard for the runtime role in index-friendly form (no definer OR).';
comment on policy documents_project_access on app.documents is
    'A restricted project''s documents are hidden from who does not see the project (404).';
comment on policy documents_select_member on app.documents is 'Members and keys of the org read its documents.';
comment on policy documents_insert_member on app.documents is
    'Members and up upload, as themselves, status uploaded, into a project they may write.';
comment on policy documents_update_writer on app.documents is 'The uploader or an org admin renames.';
comment on policy documents_delete_writer on app.documents is
    'The uploader or an org admin deletes; the object is purged by the worker.';
comment on policy documents_all_definer on app.documents is 'Definer functions: processing (claim, finish).';

alter table app.document_chunks enable row level security;
alter table app.document_chunks force row level security;

-- The guard names every role but the owner, and the owner's policy is `true` rather than
-- `(select app.is_definer())` (the same thing for the owner, which is all is_definer()
-- tests): the owner's row-level security then plans to nothing, so app.search_chunks()
-- (a definer) may use document_chunks_org_search_idx -- an InitPlan-guarded policy would
-- keep `@@` out of the index conditions here too, as it does for the runtime role.
drop policy if exists document_chunks_guard on app.document_chunks;
create policy document_chunks_guard on app.document_chunks as restrictive for all
    to palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (false);

-- The runtime role's tenant guard in index form (no definer OR), as documents_guard_runtime:
-- the assistant's retrieval reads the org's chunks through document_chunks_org_idx. The
-- full-text match cannot use the search index for this role: @@ is not leakproof, so under
-- row-level security it is evaluated after the policies, never as an index condition.
drop policy if exists document_chunks_guard_runtime on app.document_chunks;
create policy document_chunks_guard_runtime on app.document_chunks as restrictive for all to palisade_runtime
    using (org_id = (select app.current_org_id()));

drop policy if exists document_chunks_select_visible on app.document_chunks;
create policy document_chunks_select_visible on app.document_chunks for select to palisade_runtime
    using (exists (select 1 from app.documents d where d.id = document_id));

drop policy if exists document_chunks_all_definer on app.document_chunks;
create policy document_chunks_all_definer on app.document_chunks for all to palisade_owner
    using (true) with check (true);

revoke all on app.document_chunks from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select on app.document_chunks to palisade_runtime;

comment on policy document_chunks_guard on app.document_chunks is
    'Restrictive tenant guard for the credential and worker lanes: only rows of the org in context. The runtime lane meets document_chunks_guard_runtime alone (one context check a statement, not two), the owner''s definer functions document_chunks_all_definer.';
comment on policy document_chunks_guard_runtime on app.document_chunks is
    'The tenant guard for the runtime role in index-friendly form (no definer OR).';
comment on policy document_chunks_select_visible on app.document_chunks is
    'Whoever reads the document reads its chunks (the subquery runs under documents'' policies).';
comment on policy document_chunks_all_definer on app.document_chunks is
    'The owner (definer functions: app.finish_document, app.search_chunks), unconditionally, so its searches use the index.';

-- search_terms: lexeme counts per org (sql/V17), written by the trigger on document_chunks
-- and read by app.search_chunks(), both definers. No other role has a grant.
alter table app.search_terms enable row level security;
alter table app.search_terms force row level security;

drop policy if exists search_terms_guard on app.search_terms;
create policy search_terms_guard on app.search_terms as restrictive for all
    to palisade_runtime, palisade_credentials, palisade_jobs
    using (false) with check (false);

drop policy if exists search_terms_all_definer on app.search_terms;
create policy search_terms_all_definer on app.search_terms for all to palisade_owner
    using (true) with check (true);

revoke all on app.search_terms from public, palisade_runtime, palisade_credentials, palisade_jobs;

comment on policy search_terms_guard on app.search_terms is 'Restrictive guard: definer functions only.';
comment on policy search_terms_all_definer on app.search_terms is
    'Definer functions: the counting trigger, app.search_chunks.';
