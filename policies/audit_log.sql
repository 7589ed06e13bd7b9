-- audit_log: append-only for every role; an org's admins read their org's chain, a
-- signed-in user reads their own account's chain, and only the definer functions below
-- write it -- in the transaction of the change they record.
--
-- The chain itself (seq, prev_hash, hash, occurred_at) is built by the trigger of
-- sql/V12__audit_log.sql. Here: who reads, the writers, what is recorded, the
-- append-only guard, verification and retention.
--
-- What is recorded, and by what (one mechanism per kind of write, nothing left to a
-- handler to remember):
--   * tables the request role writes itself (projects, project_members, conversations,
--     conversation_segments, documents, meters, orgs, users, org_settings,
--     secrets, assistant_conversations): a trigger on the table,
--     app.audit_table_change(), deferred to commit -- so the chain's lock is taken last
--     and held only while the transaction commits;
--   * tables only definer functions write (memberships, invitations, api_keys,
--     sessions, usage, plans): the function calls app.audit_org_event() or
--     app.audit_account_event() itself, after its checks;
--   * sign-ins and failed sign-ins: app.audit_sign_in(), from the credential lane.
-- tests/api/audit_log.rs fails when an operation of openapi.json that changes anything
-- writes no audit row.
--
-- The actor is never an argument a request can choose: it is the verified context's user
-- or API key (context.sql), or -- only where there is no context, inside the credential
-- and worker lanes -- the account the definer function itself looked up; else 'system'.
-- The context column (ip, user agent, request id) comes from app.request_meta(), sealed.

alter table app.audit_log enable row level security;
alter table app.audit_log force row level security;

drop policy if exists audit_log_guard on app.audit_log;
create policy audit_log_guard on app.audit_log as restrictive for all
    to palisade_runtime, palisade_credentials, palisade_jobs
    using (org_id = (select app.current_org_id())
           or (org_id is null and account_id = (select app.current_user_id())))
    with check (false);

drop policy if exists audit_log_select_admin on app.audit_log;
create policy audit_log_select_admin on app.audit_log for select to palisade_runtime
    using (org_id is not null and (select app.has_org_role('admin')));

drop policy if exists audit_log_select_own on app.audit_log;
create policy audit_log_select_own on app.audit_log for select to palisade_runtime
    using (org_id is null and account_id = (select app.current_user_id()));

drop policy if exists audit_log_select_definer on app.audit_log;
create policy audit_log_select_definer on app.audit_log for select to palisade_owner
    using (true);

drop policy if exists audit_log_insert_definer on app.audit_log;
create policy audit_log_insert_definer on app.audit_log for insert to palisade_owner
    with check (true);

-- The retention purge (app.purge_audit_log) deletes as the owner; the trigger below
-- refuses every delete of a chain whose org or account still exists.
drop policy if exists audit_log_delete_definer on app.audit_log;
create policy audit_log_delete_definer on app.audit_log for delete to palisade_owner
    using (true);

-- No row is ever updated: this policy only lets the owner's UPDATE reach the
-- append-only trigger, which refuses it loudly (PT409) instead of the silent "UPDATE 0"
-- forced RLS would answer without a policy.
drop policy if exists audit_log_update_definer on app.audit_log;
create policy audit_log_update_definer on app.audit_log for update to palisade_owner
    using (true);

revoke all on app.audit_log from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant select on app.audit_log to palisade_runtime;

comment on policy audit_log_guard on app.audit_log is
    'Restrictive, for every lane: rows of the org in context, or of the signed-in user''s own account chain; no lane writes (the owner''s definer functions do, through audit_log_insert_definer).';
comment on policy audit_log_select_admin on app.audit_log is
    'Admins and owners of the org in context (signed in, or an admin API key) read its log.';
comment on policy audit_log_select_own on app.audit_log is
    'A signed-in user reads their own account''s chain (sign-ins, password and session changes).';
comment on policy audit_log_select_definer on app.audit_log is
    'The definer functions read chains to append to and verify them.';
comment on policy audit_log_insert_definer on app.audit_log is
    'Written only by app.audit_org_event(), app.audit_account_event() and app.audit_sign_in().';
comment on policy audit_log_update_definer on app.audit_log is
    'Lets the owner''s UPDATE reach audit_log_append_only, which refuses it (PT409): no row is ever updated.';
comment on policy audit_log_delete_definer on app.audit_log is
    'Only the retention purge deletes, and the append-only trigger lets it only for chains whose org or account is gone.';

-- ---------------------------------------------------------------------------
-- Append-only, for every role the owner included: no update ever; no delete while the
-- chain's org (or account) exists; no truncate. Only a superuser who disables triggers
-- can rewrite history -- which app.verify_audit_chain() and the daily chain heads in
-- the object store then show.
-- ---------------------------------------------------------------------------

create or replace function app.audit_log_append_only() returns trigger
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    if tg_op = 'DELETE'
       and not exists (select 1 from app.orgs o where o.id = old.org_id)
       and not exists (select 1 from app.users u where u.id = old.account_id) then
        return old;
    end if;
    raise exception 'the audit log is append-only (% refused)', lower(tg_op)
        using errcode = 'PT409', hint = 'audit_log_append_only';
end
$$;
comment on function app.audit_log_append_only() is
    'Trigger: refuses update, truncate, and delete of a chain whose org or account still exists -- even for the owner.';

create or replace trigger audit_log_append_only before update or delete on app.audit_log
    for each row execute function app.audit_log_append_only();
create or replace trigger audit_log_no_truncate before truncate on app.audit_log
    for each statement execute function app.audit_log_append_only();

-- ---------------------------------------------------------------------------
-- Writers (internal: no lane may execute them; definer functions and triggers call them)
-- ---------------------------------------------------------------------------

-- Who acts: the verified context's user, else its API key; with no context at all (the
-- credential and worker lanes), p_fallback_user when the caller looked one up; else
-- the system. The name is a snapshot: the user's email, the key's name and start.
create or replace function app.audit_actor(
    p_fallback_user uuid, out actor_type text, out actor_id uuid, out actor_name text)
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_context record := app.verified_context();
    v_user uuid := v_context.user_id;
    v_key uuid := v_context.api_key_id;
begin
    if v_user is null and v_key is null then
        v_user := p_fallback_user;
    end if;
    if v_user is not null then
        actor_type := 'user';
        actor_id := v_user;
        select u.email into actor_name from app.users u where u.id = v_user;
    elsif v_key is not null then
        actor_type := 'api_key';
        actor_id := v_key;
        select k.name || ' (' || k.start || '...)' into actor_name from app.api_keys k where k.id = v_key;
    else
        actor_type := 'system';
    end if;
end
$$;

-- The small SQL helpers below have no SET clause (every name is qualified) so the
-- planner inlines them; the writers are PL/pgSQL, whose plans are cached per session.
-- (A SQL function with a SET clause is planned again at every call: written that way,
-- these cost a project creation 30 % of its throughput.)

-- A target: {"type": ..., "id": ..., "name": ...} (name left out when NULL).
-- Stable, not immutable: jsonb_build_object is stable, and the planner never inlines an
-- immutable SQL function whose body is not (it ran through fmgr_sql, planned per call).
create or replace function app.audit_target(p_type text, p_id uuid, p_name text default null)
returns jsonb
language sql stable
as $$
    select pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object('type', p_type, 'id', p_id, 'name', p_name))
$$;

-- A user as a target, with their email as its name.
-- PL/pgSQL: a SQL body with a subquery is never inlined, and would be planned per call.
create or replace function app.audit_user_target(p_user_id uuid) returns jsonb
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
begin
    return app.audit_target('user', p_user_id, (select u.email from app.users u where u.id = p_user_id));
end
$$;

-- Appends one row to a chain: an org's (p_org_id) or an account's (p_account_id).
create or replace function app.audit_append(
    p_org_id uuid, p_account_id uuid, p_action text, p_targets jsonb, p_metadata jsonb,
    p_fallback_user uuid)
returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    a record := app.audit_actor(p_fallback_user);
begin
    insert into app.audit_log (org_id, account_id, actor_type, actor_id, actor_name, action, targets,
                               context, metadata)
    values (p_org_id, p_account_id, a.actor_type, a.actor_id, a.actor_name, p_action,
            coalesce(p_targets, '[]'), app.request_meta(), coalesce(p_metadata, '{}'));
end
$$;

-- Appends to org p_org_id's chain.
create or replace function app.audit_org_event(
    p_org_id uuid, p_action text, p_targets jsonb default '[]', p_metadata jsonb default '{}',
    p_fallback_user uuid default null)
returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    perform app.audit_append(p_org_id, null, p_action, p_targets, p_metadata, p_fallback_user);
end
$$;

-- Appends to account p_user's chain; the actor is that user unless the context says
-- otherwise (or 'system' when p_by_system: the worker acting on their behalf).
create or replace function app.audit_account_event(
    p_user uuid, p_action text, p_metadata jsonb default '{}', p_targets jsonb default '[]',
    p_by_system boolean default false)
returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    perform app.audit_append(null, p_user, p_action, p_targets, p_metadata,
                             case when p_by_system then null else p_user end);
end
$$;

-- A sign-in (auth.login) or failed sign-in (auth.login_failed) of p_user: in their
-- account's chain and in the chain of every org they belong to (an org's admins see
-- their members' sign-ins), with the account as the target. A sign-in is acted by the
-- account; a failed one by nobody proven -- whoever typed the password -- so its actor
-- is 'system' (the request's ip and user agent are in its context). Orgs in id order,
-- so concurrent sign-ins take the chains' locks in one order.
create or replace function app.audit_sign_in(p_user uuid, p_action text, p_metadata jsonb default '{}')
returns void
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_org uuid;
    v_proven boolean := p_action <> 'auth.login_failed';
    v_target jsonb := jsonb_build_array(app.audit_user_target(p_user));
begin
    perform app.audit_account_event(p_user, p_action, p_metadata, v_target, not v_proven);
    for v_org in select m.org_id from app.memberships m where m.user_id = p_user order by m.org_id loop
        perform app.audit_org_event(v_org, p_action, v_target, p_metadata,
            case when v_proven then p_user end);
    end loop;
end
$$;

-- ---------------------------------------------------------------------------
-- What the request role writes itself: one trigger function, deferred to commit.
-- A row that went with its parent (a project deleted with its org, a conversation with
-- its project, a project membership with the org membership) is not recorded again:
-- the parent's own row says it.
-- ---------------------------------------------------------------------------

-- {"column": {"from": old, "to": new}} for each listed column that changed.
create or replace function app.audit_changes(p_old jsonb, p_new jsonb, p_columns text[])
returns jsonb
language plpgsql immutable
set search_path = pg_catalog, pg_temp
as $$
begin
    return (select coalesce(jsonb_object_agg(c, jsonb_build_object('from', p_old -> c, 'to', p_new -> c)), '{}')
              from unnest(p_columns) c
             where (p_old -> c) is distinct from (p_new -> c));
end
$$;

create or replace function app.audit_table_change() returns trigger
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_row jsonb := to_jsonb(case when tg_op = 'DELETE' then old else new end);
    v_old jsonb := case when tg_op = 'UPDATE' then to_jsonb(old) end;
    v_org uuid := (v_row ->> 'org_id')::uuid;
    v_columns text[] := tg_argv[1:];
    v_entity text := tg_argv[0];
    v_changes jsonb;
    v_verb text := case tg_op when 'INSERT' then 'created' when 'UPDATE' then 'updated' else 'deleted' end;
    v_targets jsonb;
    v_metadata jsonb;
begin
    if tg_op = 'DELETE' then
        if v_org is not null and not exists (select 1 from app.orgs o where o.id = v_org) then
            return null;
        end if;
        if v_row ? 'project_id' and v_row ->> 'project_id' is not null
           and not exists (select 1 from app.projects p where p.id = (v_row ->> 'project_id')::uuid) then
            return null;
        end if;
    end if;
    if tg_table_name = 'users' then
        v_changes := app.audit_changes(v_old, v_row, v_columns);
        if v_changes <> '{}' then
            perform app.audit_account_event((v_row ->> 'id')::uuid, 'user.updated',
                jsonb_build_object('changes', v_changes));
        end if;
        return null;
    end if;
    if tg_table_name = 'project_members' then
        if tg_op = 'DELETE' and not exists (select 1 from app.memberships m
                                             where m.org_id = v_org and m.user_id = (v_row ->> 'user_id')::uuid) then
            return null;
        end if;
        v_verb := case tg_op when 'INSERT' then 'member_added' when 'UPDATE' then 'member_role_changed'
                             else 'member_removed' end;
        v_targets := jsonb_build_array(app.audit_target('project', (v_row ->> 'project_id')::uuid),
            app.audit_target('user', (v_row ->> 'user_id')::uuid,
                             (select u.email from app.users u where u.id = (v_row ->> 'user_id')::uuid)));
    elsif tg_table_name = 'assistant_conversations' then
        -- Private to its starter: the title (the first question) stays out of the org's log.
        v_targets := jsonb_build_array(app.audit_target(v_entity, (v_row ->> 'id')::uuid));
    elsif tg_table_name = 'org_settings' then
        v_targets := jsonb_build_array(app.audit_target(v_entity, v_org));
    elsif tg_table_name = 'conversation_segments' then
        v_verb := 'events_appended';
        v_targets := jsonb_build_array(app.audit_target('conversation', (v_row ->> 'conversation_id')::uuid));
        v_metadata := jsonb_build_object('first_seq', v_row -> 'first_seq', 'last_seq', v_row -> 'last_seq',
                                         'bytes', v_row -> 'bytes');
    else
        v_targets := jsonb_build_array(app.audit_target(v_entity, (v_row ->> 'id')::uuid,
            coalesce(v_row ->> 'name', v_row ->> 'title', v_row ->> 'key')));
        if v_row ? 'project_id' and v_row ->> 'project_id' is not null then
            v_targets := v_targets || app.audit_target('project', (v_row ->> 'project_id')::uuid);
        end if;
    end if;
    if tg_op = 'UPDATE' then
        v_changes := app.audit_changes(v_old, v_row, v_columns);
        if v_changes = '{}' then
            return null;
        end if;
        v_metadata := coalesce(v_metadata, '{}') || jsonb_build_object('changes', v_changes);
    elsif tg_op = 'INSERT' and v_metadata is null then
        select coalesce(jsonb_object_agg(c, v_row -> c), '{}') into v_metadata
          from unnest(v_columns) c where v_row -> c is not null and v_row -> c <> 'null';
    end if;
    perform app.audit_org_event(v_org, v_entity || '.' || v_verb, v_targets, coalesce(v_metadata, '{}'));
    return null;
end
$$;
comment on function app.audit_table_change() is
    'Trigger (deferred to commit): records a change the request role made to a table as <entity>.<verb> in the org''s chain. Arguments: the entity, then the columns whose values (insert) or changes (update) go into metadata.';

drop trigger if exists audit_projects on app.projects;
create constraint trigger audit_projects after insert or update of name, description, access or delete on app.projects
    deferrable initially deferred for each row
    execute function app.audit_table_change('project', 'name', 'description', 'access');
drop trigger if exists audit_project_members on app.project_members;
create constraint trigger audit_project_members after insert or update of role or delete on app.project_members
    deferrable initially deferred for each row
    execute function app.audit_table_change('project', 'role');
-- The counters an append moves (event_count, accumulated_cost, prompt_tokens,
-- completion_tokens) are not audited as a conversation change: the append itself is,
-- once, as conversation.events_appended (its sequence range; the events carry their
-- usage). Listed, they made every append fire this trigger for nothing (no usage: an
-- empty diff of two whole rows) or record a second row (usage: conversation.updated).
drop trigger if exists audit_conversations on app.conversations;
create constraint trigger audit_conversations
    after insert or update of project_id, title, visibility, selected_repository, selected_branch, git_provider,
                              trigger, pr_numbers, llm_model
       or delete on app.conversations
    deferrable initially deferred for each row
    execute function app.audit_table_change('conversation', 'title', 'visibility', 'project_id',
        'selected_repository', 'selected_branch', 'git_provider', 'trigger', 'pr_numbers', 'llm_model');
drop trigger if exists audit_conversation_segments on app.conversation_segments;
create constraint trigger audit_conversation_segments after insert on app.conversation_segments
    deferrable initially deferred for each row
    execute function app.audit_table_change('conversation');
drop trigger if exists audit_documents on app.documents;
create constraint trigger audit_documents after insert or update of title or delete on app.documents
    deferrable initially deferred for each row
    execute function app.audit_table_change('document', 'title', 'filename', 'content_type', 'bytes');
drop trigger if exists audit_meters on app.meters;
create constraint trigger audit_meters after insert or update or delete on app.meters
    deferrable initially deferred for each row
    execute function app.audit_table_change('meter', 'key', 'name', 'aggregation', 'value_property', 'unit');
drop trigger if exists audit_org_settings on app.org_settings;
create constraint trigger audit_org_settings after update on app.org_settings
    deferrable initially deferred for each row
    execute function app.audit_table_change('settings', 'agent', 'max_iterations', 'security_analyzer',
        'confirmation_mode', 'llm_model', 'llm_base_url', 'llm_input_price_per_mtok',
        'llm_output_price_per_mtok', 'mcp_config_digest', 'max_budget_per_task', 'conversation_expiration',
        'enable_default_condenser', 'billing_margin', 'search_language');
-- Never the value: its name, scope and when it changed (value_updated_at, key_version).
drop trigger if exists audit_secrets on app.secrets;
create constraint trigger audit_secrets after insert or update or delete on app.secrets
    deferrable initially deferred for each row
    execute function app.audit_table_change('secret', 'name', 'kind', 'user_id', 'description',
        'value_updated_at', 'key_version');
drop trigger if exists audit_assistant_conversations on app.assistant_conversations;
create constraint trigger audit_assistant_conversations
    after insert or update of message_count or delete on app.assistant_conversations
    deferrable initially deferred for each row
    execute function app.audit_table_change('assistant_conversation', 'message_count');
drop trigger if exists audit_users on app.users;
create constraint trigger audit_users after update of name on app.users
    deferrable initially deferred for each row
    execute function app.audit_table_change('user', 'name');

-- ---------------------------------------------------------------------------
-- Verification, chain heads, retention
-- ---------------------------------------------------------------------------

-- The first broken link of chain p_chain_id (an org's id, or an account's), or no row
-- when the chain is intact: a seq out of order (a row deleted or moved), a prev_hash
-- that is not the previous row's hash (a row deleted, inserted or reordered), or a hash
-- that does not match the row (a row edited).
create or replace function app.verify_audit_chain(p_chain_id uuid)
returns table (seq bigint, problem text)
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    r app.audit_log;
    v_seq bigint := 0;
    v_prev bytea := decode(repeat('00', 32), 'hex');
begin
    for r in select l.* from app.audit_log l where l.chain_id = p_chain_id order by l.seq loop
        if r.seq <> v_seq + 1 then
            return query select v_seq + 1, pg_catalog.format('row %s is missing (found %s next)', v_seq + 1, r.seq);
            return;
        elsif r.prev_hash <> v_prev then
            return query select r.seq, 'prev_hash is not the previous row''s hash'::text;
            return;
        elsif r.hash <> app.audit_row_hash(r) then
            return query select r.seq, 'hash does not match the row (edited)'::text;
            return;
        end if;
        v_seq := r.seq;
        v_prev := r.hash;
    end loop;
end
$$;
comment on function app.verify_audit_chain(uuid) is
    'The first broken link of an audit chain (org or account id), or no row. The worker lane and DBAs: palisade audit-log verify.';

-- Every chain's newest link: what the worker writes to the object store each day, and
-- what `palisade audit-log verify` checks those files against.
create or replace function app.audit_chain_heads()
returns table (chain_id uuid, scope text, seq bigint, hash text, occurred_at timestamptz)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select distinct on (l.chain_id) l.chain_id, case when l.org_id is null then 'account' else 'org' end,
           l.seq, encode(l.hash, 'hex'), l.occurred_at
      from app.audit_log l
     order by l.chain_id, l.seq desc
$$;
comment on function app.audit_chain_heads() is
    'The newest (seq, hash) of every audit chain. Worker lane: the daily chain-head file.';

-- The hash at (chain, seq), to check a stored chain head against the table.
create or replace function app.audit_hash_at(p_chain_id uuid, p_seq bigint) returns text
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select encode(l.hash, 'hex') from app.audit_log l where l.chain_id = p_chain_id and l.seq = p_seq
$$;
comment on function app.audit_hash_at(uuid, bigint) is
    'The hash of one audit row (hex), or NULL. Worker lane: checking stored chain heads.';

-- Retention: the chains of orgs deleted more than p_retention ago (their last row is
-- org.deleted). Returns the number of rows deleted.
create or replace function app.purge_audit_log(p_retention interval) returns bigint
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_count bigint;
begin
    with gone as (
        select l.org_id from app.audit_log l
         where l.action = 'org.deleted' and l.occurred_at < now() - p_retention
           and not exists (select 1 from app.orgs o where o.id = l.org_id)
    ), purged as (
        delete from app.audit_log l using gone where l.chain_id = gone.org_id returning 1
    )
    select count(*) into v_count from purged;
    return v_count;
end
$$;
comment on function app.purge_audit_log(interval) is
    'Deletes the audit chains of orgs deleted longer than the retention ago (AUDIT_RETENTION_DAYS). Worker lane.';

comment on function app.audit_actor(uuid) is
    'The actor of an audit row: the verified context''s user or API key, else the given account, else system. Internal.';
comment on function app.audit_target(text, uuid, text) is 'An audit target object {type, id, name}. Internal.';
comment on function app.audit_user_target(uuid) is 'A user as an audit target (email as name). Internal.';
comment on function app.audit_append(uuid, uuid, text, jsonb, jsonb, uuid) is
    'Appends a row to an org''s or an account''s audit chain, acted by the verified context (or the given account). Internal.';
comment on function app.audit_org_event(uuid, text, jsonb, jsonb, uuid) is
    'Appends a row to an org''s audit chain, acted by the verified context (or the given account). Internal.';
comment on function app.audit_account_event(uuid, text, jsonb, jsonb, boolean) is
    'Appends a row to an account''s audit chain. Internal.';
comment on function app.audit_sign_in(uuid, text, jsonb) is
    'Records a sign-in or failed sign-in in the account''s chain and each of its orgs''. Internal.';
comment on function app.audit_changes(jsonb, jsonb, text[]) is 'The listed columns that changed, from and to. Internal.';

revoke all on function app.audit_log_append_only(), app.audit_actor(uuid), app.audit_target(text, uuid, text),
    app.audit_user_target(uuid), app.audit_append(uuid, uuid, text, jsonb, jsonb, uuid),
    app.audit_org_event(uuid, text, jsonb, jsonb, uuid), app.audit_account_event(uuid, text, jsonb, jsonb, boolean),
    app.audit_sign_in(uuid, text, jsonb), app.audit_changes(jsonb, jsonb, text[]), app.audit_table_change(),
    app.verify_audit_chain(uuid), app.audit_chain_heads(), app.audit_hash_at(uuid, bigint),
    app.purge_audit_log(interval), app.audit_row_hash(app.audit_log), app.audit_log_chain()
    from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant execute on function app.verify_audit_chain(uuid), app.audit_chain_heads(), app.audit_hash_at(uuid, bigint),
    app.purge_audit_log(interval) to palisade_jobs;
