-- conversations, conversation_segments: workspace data whose event payloads live in the
-- object store. A conversation is `private` (its creator -- user or API key -- and org
-- admins) or `org` (every member of the org); in a restricted project only who sees the
-- project sees it. Members and up create; the creator or an org admin changes, appends to
-- and deletes it. Segments (one per appended batch) are readable by whoever reads their
-- conversation, inserted by an append, never updated, and deleted only with their
-- conversation (the cascade queues their objects for purge: functions_storage.sql).
alter table app.conversations enable row level security;
alter table app.conversations force row level security;

drop policy if exists conversations_guard on app.conversations;
create policy conversations_guard on app.conversations as restrictive for all
    to palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (org_id = (select app.current_org_id()));

drop policy if exists conversations_guard_runtime on app.conversations;
create policy conversations_guard_runtime on app.conversations as restrictive for all to palisade_runtime
    using (org_id = (select app.current_org_id()))
    with check (org_id = (select app.current_org_id()));

drop policy if exists conversations_project_access on app.conversations;
create policy conversations_project_access on app.conversations as restrictive for all to palisade_runtime
    using (project_id is null or not (project_id = any ((select app.hidden_projects())::uuid[])))
    with check (true);

drop policy if exists conversations_select_visible on app.conversations;
create policy conversations_select_visible on app.conversations for select to palisade_runtime
    using (visibility = 'org'
           or created_by = (select app.current_user_id())
           or created_by_key = (select app.current_api_key_id())
           or (select app.has_org_role('admin')));

drop policy if exists conversations_insert_member on app.conversations;
create policy conversations_insert_member on app.conversations for insert to palisade_runtime
    with check (app.require_project_writer(project_id)
                and created_by is not distinct from (select app.current_user_id())
                and created_by_key is not distinct from (select app.current_api_key_id()));

drop policy if exists conversations_update_writer on app.conversations;
create policy conversations_update_writer on app.conversations for update to palisade_runtime
    using (true)
    with check (app.require_creator_or_admin(created_by, created_by_key, project_id));

drop policy if exists conversations_delete_writer on app.conversations;
create policy conversations_delete_writer on app.conversations for delete to palisade_runtime
    using (case when org_id = (select app.current_org_id())
                then app.require_creator_or_admin(created_by, created_by_key, project_id) else false end);

drop policy if exists conversations_all_definer on app.conversations;
create policy conversations_all_definer on app.conversations for all to palisade_owner
    using (true) with check (true);

revoke all on app.conversations from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select, delete on app.conversations to palisade_runtime;
grant insert (id, project_id, title, visibility, selected_repository, selected_branch, git_provider,
              trigger, pr_numbers, llm_model)
    on app.conversations to palisade_runtime;
grant update (project_id, title, visibility, selected_repository, selected_branch, git_provider,
              trigger, pr_numbers, llm_model, accumulated_cost, prompt_tokens, completion_tokens,
              event_count, last_updated_at)
    on app.conversations to palisade_runtime;

comment on policy conversations_guard on app.conversations is
    'Restrictive tenant guard for the credential and worker lanes: only rows of the org in context. The runtime lane meets conversations_guard_runtime alone (one context check a statement, not two), the owner''s definer functions conversations_all_definer.';
comment on policy conversations_guard_runtime on app.conversations is
    'The tenant guard for the runtime role in index-friendly form (no definer OR).';
comment on policy conversations_project_access on app.conversations is
    'A restricted project''s conversations are hidden from who does not see the project (404).';
comment on policy conversations_select_visible on app.conversations is
    'org: every member and key of the org; private: its creator (user or key) and org admins.';
comment on policy conversations_insert_member on app.conversations is
    'Members and up create, as themselves, in a project they may write (404 hidden, 403 read-only).';
comment on policy conversations_update_writer on app.conversations is
    'The creator or an org admin changes metadata and appends events (counters); others who see it get 403.';
comment on policy conversations_delete_writer on app.conversations is
    'The creator or an org admin deletes; its segments cascade and their objects are purged.';
comment on policy conversations_all_definer on app.conversations is 'Definer functions (none write conversations today).';

alter table app.conversation_segments enable row level security;
alter table app.conversation_segments force row level security;

drop policy if exists conversation_segments_guard on app.conversation_segments;
create policy conversation_segments_guard on app.conversation_segments as restrictive for all
    to palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (org_id = (select app.current_org_id()));

drop policy if exists conversation_segments_guard_runtime on app.conversation_segments;
create policy conversation_segments_guard_runtime on app.conversation_segments as restrictive for all to palisade_runtime
    using (org_id = (select app.current_org_id()))
    with check (org_id = (select app.current_org_id()));

-- The conversation's own policies decide: the subquery runs under them.
drop policy if exists conversation_segments_select_visible on app.conversation_segments;
create policy conversation_segments_select_visible on app.conversation_segments for select to palisade_runtime
    using (exists (select 1 from app.conversations c where c.id = conversation_id));

-- An append: the conversation was just advanced past this range by the caller (its
-- update policy checked the writer), in this org.
drop policy if exists conversation_segments_insert_append on app.conversation_segments;
create policy conversation_segments_insert_append on app.conversation_segments for insert to palisade_runtime
    with check ((select app.require_role('member'))
                and exists (select 1 from app.conversations c
                             where c.id = conversation_id and c.event_count >= last_seq
                               and app.require_creator_or_admin(c.created_by, c.created_by_key, c.project_id)));

drop policy if exists conversation_segments_all_definer on app.conversation_segments;
create policy conversation_segments_all_definer on app.conversation_segments for all to palisade_owner
    using (true) with check (true);

revoke all on app.conversation_segments from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select on app.conversation_segments to palisade_runtime;
grant insert (conversation_id, first_seq, last_seq, segment_id, bytes, sha256)
    on app.conversation_segments to palisade_runtime;

comment on policy conversation_segments_guard on app.conversation_segments is
    'Restrictive tenant guard for the credential and worker lanes: only rows of the org in context. The runtime lane meets conversation_segments_guard_runtime alone (one context check a statement, not two), the owner''s definer functions conversation_segments_all_definer.';
comment on policy conversation_segments_guard_runtime on app.conversation_segments is
    'The tenant guard for the runtime role in index-friendly form (no definer OR).';
comment on policy conversation_segments_select_visible on app.conversation_segments is
    'Whoever reads the conversation reads its segment index (the subquery runs under conversations'' policies).';
comment on policy conversation_segments_insert_append on app.conversation_segments is
    'An append by a writer of the conversation, for a range its event_count already covers.';
comment on policy conversation_segments_all_definer on app.conversation_segments is
    'Definer functions (the storage triggers read them).';
