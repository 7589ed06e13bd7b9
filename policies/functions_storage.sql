-- functions_storage: project access, the conversation writer rule, storage accounting,
-- the durable purge queue of object-store keys, reconcile, document processing.
--
-- Consistency between PostgreSQL and the object store (README "Consistency model"):
--   write  the server PUTs the object first, then commits the row that names it (a
--          segment, a document). An object with no committed row is an orphan: never
--          served (every read starts from a row), removed by `palisade storage reconcile`.
--   delete deleting rows (a conversation, a document, a project, an org) enqueues their
--          object keys in app.storage_purge in the same transaction (statement triggers
--          below); the worker deletes the objects and then the queue rows, so a restart
--          loses nothing.

-- ---------------------------------------------------------------------------
-- Project access
-- ---------------------------------------------------------------------------

-- The caller's role in project p_project of the org in context (admin | editor | viewer),
-- or NULL. Definer: policies on project_members call it (an invoker would recurse).
create or replace function app.project_role(p_project uuid) returns text
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_context record := app.verified_context();
begin
    return (select pm.role from app.project_members pm
             where pm.project_id = p_project and pm.org_id = v_context.org_id
               and pm.user_id = v_context.user_id);
end
$$;

-- The restricted projects of the org in context the caller may not see: every one for a
-- member who is not in it (API keys are in no project), none for org admins and owners.
-- Policies compare with it as an InitPlan: one evaluation per statement.
-- The context is verified once (each app.current_*() call verifies its MAC again): a
-- member's or viewer's statement paid three verifications here, an admin's one.
create or replace function app.hidden_projects() returns uuid[]
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_context record := app.verified_context();
begin
    if coalesce(v_context.org_role >= 'admin', false) then
        return '{}'::uuid[];
    end if;
    return coalesce((select pg_catalog.array_agg(p.id) from app.projects p
                      where p.org_id = v_context.org_id and p.access = 'restricted'
                        and not exists (select 1 from app.project_members pm
                                         where pm.project_id = p.id
                                           and pm.user_id = v_context.user_id)), '{}');
end
$$;

-- True when the caller may add data to project p_project (NULL: no project): a member and
-- up, and in a restricted project an org admin or a project admin or editor. A project the
-- caller cannot see is 404 (PT404 not_found), a read-only role 403.
create or replace function app.require_project_writer(p_project uuid) returns boolean
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_access text;
    v_role text;
begin
    perform app.require_role('member');
    if p_project is null then
        return true;
    end if;
    select p.access into v_access from app.projects p
     where p.id = p_project and p.org_id = app.current_org_id();
    if v_access is null or p_project = any (app.hidden_projects()) then
        perform app.refuse(404, 'not_found', 'no such project in this organization');
    end if;
    if v_access = 'open' or app.has_org_role('admin') then
        return true;
    end if;
    v_role := app.project_role(p_project);
    if v_role in ('admin', 'editor') then
        return true;
    end if;
    return app.require_role('admin', app.current_org_role(),
        'project viewers read a restricted project''s data; editors and admins write it');
end
$$;

-- True when the caller may manage project p_project's members and access: an org admin
-- or owner, or a project admin; else 403.
create or replace function app.require_project_admin(p_project uuid) returns boolean
language plpgsql stable security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    perform app.require_signed_in_user();
    if app.has_org_role('admin') or app.project_role(p_project) = 'admin' then
        return true;
    end if;
    return app.require_role('admin', app.current_org_role(),
        'managing a project''s access needs the org admin role or the project admin role');
end
$$;

-- Trigger: changing a project's access is for its admins (org admins, project admins);
-- a non-admin creating a restricted project becomes its project admin.
create or replace function app.projects_access_rules() returns trigger
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if tg_op = 'UPDATE' then
        if new.access is distinct from old.access then
            perform app.require_project_admin(new.id);
        end if;
        return new;
    end if;
    if new.access = 'restricted' and app.current_user_id() is not null
       and not app.has_org_role('admin') then
        insert into app.project_members (org_id, project_id, user_id, role)
        values (new.org_id, new.id, app.current_user_id(), 'admin');
    end if;
    return new;
end
$$;
create or replace trigger projects_access_rules_update before update of access on app.projects
    for each row execute function app.projects_access_rules();
create or replace trigger projects_access_rules_insert after insert on app.projects
    for each row execute function app.projects_access_rules();

-- ---------------------------------------------------------------------------
-- Conversations
-- ---------------------------------------------------------------------------

-- True when the caller may change a conversation (metadata, events, deletion): its
-- creator (the user or key in context) or an org admin, and a writer of its project;
-- else 403 (the row was visible, so this is never a 404 for another tenant). It reads
-- the verified context once for the creator and role checks (the app.current_*() helpers
-- would verify it once each).
create or replace function app.require_creator_or_admin(
    p_created_by uuid, p_created_by_key uuid, p_project uuid) returns boolean
language plpgsql stable
set search_path = pg_catalog, pg_temp
as $$
declare
    v_context record;
begin
    perform app.require_project_writer(p_project);
    v_context := app.verified_context();
    if (p_created_by is not null and p_created_by = v_context.user_id)
       or (p_created_by_key is not null and p_created_by_key = v_context.api_key_id) then
        return true;
    end if;
    return app.require_role('admin', v_context.org_role,
        'only its creator or an org admin may change it');
end
$$;

-- Trigger: wakes the live tails of a conversation. The payload is only the id: the
-- subscribers read the events themselves, under their own policies.
create or replace function app.conversation_segments_notify() returns trigger
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    perform pg_catalog.pg_notify('palisade_events', new.conversation_id::text);
    return null;
end
$$;
create or replace trigger conversation_segments_notify after insert on app.conversation_segments
    for each row execute function app.conversation_segments_notify();

-- Trigger: a change that may take access away (visibility, project, a membership or
-- project membership removed, a session revoked) wakes every live tail to re-check.
create or replace function app.access_changed_notify() returns trigger
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    perform pg_catalog.pg_notify('palisade_access', tg_table_name);
    return null;
end
$$;
create or replace trigger conversations_access_notify
    after update of visibility, project_id or delete on app.conversations
    for each statement execute function app.access_changed_notify();
create or replace trigger memberships_access_notify after update or delete on app.memberships
    for each statement execute function app.access_changed_notify();
create or replace trigger project_members_access_notify after update or delete on app.project_members
    for each statement execute function app.access_changed_notify();
create or replace trigger projects_access_notify after update of access or delete on app.projects
    for each statement execute function app.access_changed_notify();
create or replace trigger sessions_access_notify after update of revoked_at on app.sessions
    for each statement execute function app.access_changed_notify();

-- ---------------------------------------------------------------------------
-- Storage accounting and the purge queue
-- ---------------------------------------------------------------------------

-- Trigger (before insert of a segment or a document): the bytes count against the plan's
-- storage_bytes (402 past a hard limit, in the write's transaction) and are added to the
-- org's total. A caller below member is left to the insert policy (403).
create or replace function app.storage_take() returns trigger
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    if app.has_org_role('member') then
        perform app.take_quota(new.org_id, 'storage_bytes', new.bytes);
        insert into app.org_storage as s (org_id, bytes, objects) values (new.org_id, new.bytes, 1)
        on conflict (org_id) do update
           set bytes = s.bytes + excluded.bytes, objects = s.objects + 1, updated_at = now();
    end if;
    return new;
end
$$;
create or replace trigger conversation_segments_storage_take before insert on app.conversation_segments
    for each row execute function app.storage_take();
create or replace trigger documents_storage_take before insert on app.documents
    for each row execute function app.storage_take();

-- Trigger (after delete of segments or documents, by any path: a handler, a cascade from
-- a conversation, project or org): their objects go to the purge queue and their bytes
-- leave the org's total, in the deleting transaction.
create or replace function app.storage_release() returns trigger
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    insert into app.storage_purge (org_id, object_key)
    select g.org_id, g.object_key from gone g;
    update app.org_storage s
       set bytes = greatest(s.bytes - d.bytes, 0),
           objects = greatest(s.objects - d.objects, 0), updated_at = now()
      from (select g.org_id, sum(g.bytes)::bigint as bytes, count(*) as objects
              from gone g group by g.org_id) d
     where s.org_id = d.org_id;
    return null;
end
$$;
create or replace trigger conversation_segments_storage_release after delete on app.conversation_segments
    referencing old table as gone
    for each statement execute function app.storage_release();
create or replace trigger documents_storage_release after delete on app.documents
    referencing old table as gone
    for each statement execute function app.storage_release();

-- Worker: leases up to p_limit due purges (skip locked: replicas never take the same
-- one); a failed delete comes back after a lease that grows with its attempts.
create or replace function app.claim_storage_purge(p_limit integer)
returns table (id bigint, object_key text, attempts integer)
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    with due as (
        select q.id from app.storage_purge q
         where q.not_before <= now()
         order by q.not_before
         limit p_limit
         for update skip locked
    )
    update app.storage_purge q
       set attempts = q.attempts + 1,
           not_before = now() + least(interval '1 minute' * power(2, q.attempts), interval '6 hours')
      from due where q.id = due.id
    returning q.id, q.object_key, q.attempts
$$;

-- Worker: the objects of p_ids are gone (or were never there): forget them.
create or replace function app.finish_storage_purge(p_ids bigint[]) returns integer
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    with done as (delete from app.storage_purge q where q.id = any (p_ids) returning 1)
    select count(*)::integer from done
$$;

-- Worker: records why a purge failed (it is retried after its lease).
create or replace function app.fail_storage_purge(p_id bigint, p_error text) returns void
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    update app.storage_purge q set last_error = pg_catalog.left(p_error, 500) where q.id = p_id
$$;

-- Reconcile: what the database knows of each key: 'live' (a segment or document names it),
-- 'purging' (queued for deletion), or absent (an orphan).
create or replace function app.storage_key_states(p_keys text[])
returns table (object_key text, state text)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select k.key, 'live' from pg_catalog.unnest(p_keys) k(key)
     where exists (select 1 from app.conversation_segments s where s.object_key = k.key)
        or exists (select 1 from app.documents d where d.object_key = k.key)
    union all
    select k.key, 'purging' from pg_catalog.unnest(p_keys) k(key)
     where exists (select 1 from app.storage_purge q where q.object_key = k.key)
$$;

-- ---------------------------------------------------------------------------
-- Document processing (the worker)
-- ---------------------------------------------------------------------------

-- Leases up to p_limit documents to process: new uploads, and any left `processing` by
-- a worker that stopped more than 10 minutes ago.
create or replace function app.claim_documents(p_limit integer)
returns table (id uuid, org_id uuid, object_key text, content_type text, bytes bigint, sha256 bytea)
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    with due as (
        select d.id from app.documents d
         where d.status = 'uploaded'
            or (d.status = 'processing' and d.updated_at < now() - interval '10 minutes')
         order by d.created_at
         limit p_limit
         for update skip locked
    )
    -- updated_at is the lease's start: a worker that stops leaves it to age out.
    update app.documents d set status = 'processing', updated_at = now()
      from due where d.id = due.id
    returning d.id, d.org_id, d.object_key, d.content_type, d.bytes, d.sha256
$$;

-- Ends processing: `ready` with the extracted text's chunks, or `failed` with a reason.
create or replace function app.finish_document(
    p_id uuid, p_error text, p_chunks text[], p_text_bytes bigint) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_org uuid;
begin
    select d.org_id into v_org from app.documents d where d.id = p_id and d.status = 'processing'
       for update;
    if not found then
        return;  -- deleted meanwhile
    end if;
    delete from app.document_chunks c where c.document_id = p_id;
    if p_error is null then
        -- Indexed with the org's search language as it is now.
        insert into app.document_chunks (org_id, document_id, chunk_no, content, config)
        select v_org, p_id, c.ord::integer, c.content,
               coalesce((select s.search_language from app.org_settings s where s.org_id = v_org),
                        'simple'::regconfig)
          from pg_catalog.unnest(p_chunks) with ordinality c(content, ord);
    end if;
    update app.documents d
       set status = case when p_error is null then 'ready' else 'failed' end,
           error = p_error,
           chunk_count = case when p_error is null then pg_catalog.cardinality(p_chunks) end,
           text_bytes = case when p_error is null then p_text_bytes end,
           processed_at = now(),
           updated_at = now()
     where d.id = p_id;
end
$$;

comment on function app.project_role(uuid) is
    'The caller''s project role (admin, editor, viewer) in a project of the org in context, else NULL.';
comment on function app.hidden_projects() is
    'Restricted projects of the org in context the caller may not see (none for org admins); policies use it as an InitPlan.';
comment on function app.require_project_writer(uuid) is
    'True when the caller may add data to the project (NULL: none); PT404 when it cannot see it, 42501 when read-only.';
comment on function app.require_project_admin(uuid) is
    'True for org admins and project admins; else 42501 (403).';
comment on function app.projects_access_rules() is
    'Trigger: access changes need a project admin; a non-admin creating a restricted project becomes its admin.';
comment on function app.require_creator_or_admin(uuid, uuid, uuid) is
    'True for the conversation''s creator (user or key) or an org admin, who may write its project; else 403.';
comment on function app.conversation_segments_notify() is
    'Trigger: NOTIFY palisade_events with the conversation id (a wake-up, never the data).';
comment on function app.access_changed_notify() is
    'Trigger: NOTIFY palisade_access so live tails re-check their access.';
comment on function app.storage_take() is
    'Trigger: stored bytes count against the plan''s storage_bytes (402) and the org''s total.';
comment on function app.storage_release() is
    'Trigger: deleted segments and documents queue their objects for purge and leave the org''s total.';
comment on function app.claim_storage_purge(integer) is 'Worker: leases due object purges (skip locked).';
comment on function app.finish_storage_purge(bigint[]) is 'Worker: forgets purges whose objects are deleted.';
comment on function app.fail_storage_purge(bigint, text) is 'Worker: records a failed purge (retried later).';
comment on function app.storage_key_states(text[]) is
    'Reconcile: live (a row names the key), purging (queued) or absent (an orphan).';
comment on function app.claim_documents(integer) is 'Worker: leases documents to process.';
comment on function app.finish_document(uuid, text, text[], bigint) is
    'Worker: a processed document becomes ready with its chunks, or failed with a reason.';

revoke all on function app.project_role(uuid), app.hidden_projects(), app.require_project_writer(uuid),
    app.require_project_admin(uuid), app.projects_access_rules(),
    app.require_creator_or_admin(uuid, uuid, uuid), app.conversation_segments_notify(),
    app.access_changed_notify(), app.storage_take(), app.storage_release(),
    app.claim_storage_purge(integer), app.finish_storage_purge(bigint[]),
    app.fail_storage_purge(bigint, text), app.storage_key_states(text[]),
    app.claim_documents(integer), app.finish_document(uuid, text, text[], bigint)
    from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant execute on function app.project_role(uuid), app.hidden_projects(), app.require_project_writer(uuid),
    app.require_project_admin(uuid), app.require_creator_or_admin(uuid, uuid, uuid)
    to palisade_runtime;
grant execute on function app.claim_storage_purge(integer), app.finish_storage_purge(bigint[]),
    app.fail_storage_purge(bigint, text), app.storage_key_states(text[]),
    app.claim_documents(integer), app.finish_document(uuid, text, text[], bigint)
    to palisade_jobs;
