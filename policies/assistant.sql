-- assistant_conversations, assistant_messages: the assistant's conversations are private
-- to whoever started them -- the signed-in user or the API key -- and to nobody else in
-- the org (admins included: people ask an assistant things they would not post). Any
-- member or key of the org may start one; the server appends the turns and their token
-- counts as the same principal; the starter deletes. Token usage is metered by
-- app.assistant_record_usage() (functions_assistant.sql), never by the runtime role.
alter table app.assistant_conversations enable row level security;
alter table app.assistant_conversations force row level security;

drop policy if exists assistant_conversations_guard on app.assistant_conversations;
create policy assistant_conversations_guard on app.assistant_conversations as restrictive for all
    to palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (org_id = (select app.current_org_id()));

drop policy if exists assistant_conversations_guard_runtime on app.assistant_conversations;
create policy assistant_conversations_guard_runtime on app.assistant_conversations as restrictive
    for all to palisade_runtime
    using (org_id = (select app.current_org_id())
           and (created_by = (select app.current_user_id())
                or created_by_key = (select app.current_api_key_id())))
    with check (org_id = (select app.current_org_id()));

drop policy if exists assistant_conversations_select_own on app.assistant_conversations;
create policy assistant_conversations_select_own on app.assistant_conversations for select using (true);

drop policy if exists assistant_conversations_insert_own on app.assistant_conversations;
create policy assistant_conversations_insert_own on app.assistant_conversations for insert to palisade_runtime
    with check (created_by is not distinct from (select app.current_user_id())
                and created_by_key is not distinct from (select app.current_api_key_id()));

drop policy if exists assistant_conversations_update_own on app.assistant_conversations;
create policy assistant_conversations_update_own on app.assistant_conversations for update to palisade_runtime
    using (true) with check (true);

drop policy if exists assistant_conversations_delete_own on app.assistant_conversations;
create policy assistant_conversations_delete_own on app.assistant_conversations for delete to palisade_runtime
    using (true);

drop policy if exists assistant_conversations_all_definer on app.assistant_conversations;
create policy assistant_conversations_all_definer on app.assistant_conversations for all to palisade_owner
    using (true) with check (true);

revoke all on app.assistant_conversations from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select, delete on app.assistant_conversations to palisade_runtime;
grant insert (id, title) on app.assistant_conversations to palisade_runtime;
grant update (title, message_count, prompt_tokens, completion_tokens, cost, last_message_at)
    on app.assistant_conversations to palisade_runtime;

comment on policy assistant_conversations_guard on app.assistant_conversations is
    'Restrictive tenant guard for the credential and worker lanes: only rows of the org in context. The runtime lane meets assistant_conversations_guard_runtime alone (one context check a statement, not two), the owner''s definer functions assistant_conversations_all_definer.';
comment on policy assistant_conversations_guard_runtime on app.assistant_conversations is
    'The runtime role sees only the caller''s own conversations (its user, or its API key): anyone else''s is 404.';
comment on policy assistant_conversations_select_own on app.assistant_conversations is
    'The starter reads its conversations (the guard above narrows to them).';
comment on policy assistant_conversations_insert_own on app.assistant_conversations is
    'Any member or key of the org starts one, as itself.';
comment on policy assistant_conversations_update_own on app.assistant_conversations is
    'The server records each turn (counters, last_message_at) and renames, as the starter.';
comment on policy assistant_conversations_delete_own on app.assistant_conversations is
    'The starter deletes its conversation and its messages.';
comment on policy assistant_conversations_all_definer on app.assistant_conversations is
    'Definer functions: app.assistant_record_usage() reads the conversation it meters.';

alter table app.assistant_messages enable row level security;
alter table app.assistant_messages force row level security;

drop policy if exists assistant_messages_guard on app.assistant_messages;
create policy assistant_messages_guard on app.assistant_messages as restrictive for all
    to palisade_runtime, palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id()))
    with check (org_id = (select app.current_org_id()));

drop policy if exists assistant_messages_select_own on app.assistant_messages;
create policy assistant_messages_select_own on app.assistant_messages for select to palisade_runtime
    using (exists (select 1 from app.assistant_conversations c where c.id = conversation_id));

drop policy if exists assistant_messages_insert_own on app.assistant_messages;
create policy assistant_messages_insert_own on app.assistant_messages for insert to palisade_runtime
    with check (exists (select 1 from app.assistant_conversations c where c.id = conversation_id));

drop policy if exists assistant_messages_all_definer on app.assistant_messages;
create policy assistant_messages_all_definer on app.assistant_messages for all to palisade_owner
    using (true) with check (true);

revoke all on app.assistant_messages from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select on app.assistant_messages to palisade_runtime;
grant insert (conversation_id, seq, role, content, status, error, citations, model,
              prompt_tokens, completion_tokens, cost)
    on app.assistant_messages to palisade_runtime;

comment on policy assistant_messages_guard on app.assistant_messages is
    'Restrictive tenant guard for every lane: only messages of the org in context. The owner''s definer functions meet assistant_messages_all_definer alone.';
comment on policy assistant_messages_select_own on app.assistant_messages is
    'Whoever reads the conversation reads its messages (the subquery runs under its policies).';
comment on policy assistant_messages_insert_own on app.assistant_messages is
    'Turns are appended to a conversation the caller reads (its own); never updated.';
comment on policy assistant_messages_all_definer on app.assistant_messages is 'Definer functions (none write messages).';
