-- V11: workspace data in hybrid storage. Metadata and indexes live here; payloads (event
-- segments, document bytes) live in the object store under keys the database derives from
-- ids it generated (`object_key` columns are generated, never written).
--
--   projects.access            open (every member) | restricted (project members + org admins)
--   project_members            who is in a restricted project, as admin | editor | viewer
--   conversations              metadata, counters, visibility (private | org)
--   conversation_segments      one row per appended batch: seq range, bytes, SHA-256
--   documents                  uploaded files: status uploaded -> processing -> ready | failed
--   document_chunks            extracted text in chunks, for search (the assistant's retrieval)
--   org_storage                bytes each org holds in the object store (the storage_bytes meter)
--   storage_purge              objects whose rows are gone, deleted by the worker (durable)

alter table app.projects
    add column access text not null default 'open',
    add constraint projects_access_check check (access in ('open', 'restricted'));
create index projects_restricted_idx on app.projects (org_id) where access = 'restricted';

create table app.project_members (
    org_id     uuid        not null default nullif(current_setting('app.current_org_id', true), '')::uuid,
    project_id uuid        not null,
    user_id    uuid        not null,
    role       text        not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint project_members_pkey primary key (project_id, user_id),
    constraint project_members_role_check check (role in ('admin', 'editor', 'viewer')),
    constraint project_members_project_fkey foreign key (org_id, project_id)
        references app.projects (org_id, id) on delete cascade,
    -- Leaving the org leaves its projects.
    constraint project_members_membership_fkey foreign key (org_id, user_id)
        references app.memberships (org_id, user_id) on delete cascade
);
create index project_members_org_user_idx on app.project_members (org_id, user_id);

create table app.conversations (
    id                  uuid          not null default gen_random_uuid(),
    org_id              uuid          not null default nullif(current_setting('app.current_org_id', true), '')::uuid,
    project_id          uuid,
    created_by          uuid          default nullif(current_setting('app.current_user_id', true), '')::uuid,
    created_by_key      uuid          default nullif(current_setting('app.current_api_key_id', true), '')::uuid,
    title               text,
    visibility          text          not null default 'private',
    selected_repository text,
    selected_branch     text,
    git_provider        text,
    trigger             text,
    pr_numbers          integer[]     not null default '{}',
    llm_model           text,
    accumulated_cost    numeric(24,8) not null default 0,
    prompt_tokens       bigint        not null default 0,
    completion_tokens   bigint        not null default 0,
    total_tokens        bigint        generated always as (prompt_tokens + completion_tokens) stored,
    event_count         bigint        not null default 0,
    created_at          timestamptz   not null default now(),
    last_updated_at     timestamptz   not null default now(),
    constraint conversations_pkey primary key (id),
    constraint conversations_org_id_id_key unique (org_id, id),
    constraint conversations_org_fkey foreign key (org_id) references app.orgs (id) on delete cascade,
    -- A project's conversations go with it (a restricted project's data never falls open).
    constraint conversations_project_fkey foreign key (org_id, project_id)
        references app.projects (org_id, id) on delete cascade,
    constraint conversations_created_by_fkey foreign key (created_by)
        references app.users (id) on delete set null,
    constraint conversations_visibility_check check (visibility in ('private', 'org')),
    constraint conversations_title_length check (char_length(title) <= 200),
    constraint conversations_texts_length check (
        char_length(selected_repository) <= 200 and char_length(selected_branch) <= 200
        and char_length(git_provider) <= 50 and char_length(trigger) <= 50
        and char_length(llm_model) <= 200),
    constraint conversations_pr_numbers_length check (cardinality(pr_numbers) <= 100),
    constraint conversations_counters_check check (
        accumulated_cost >= 0 and prompt_tokens >= 0 and completion_tokens >= 0 and event_count >= 0)
);
create index conversations_org_updated_idx on app.conversations (org_id, last_updated_at desc, id desc);
create index conversations_project_idx on app.conversations (org_id, project_id, last_updated_at desc, id desc)
    where project_id is not null;
create index conversations_created_by_idx on app.conversations (created_by);

create table app.conversation_segments (
    org_id          uuid        not null default nullif(current_setting('app.current_org_id', true), '')::uuid,
    conversation_id uuid        not null,
    first_seq       bigint      not null,
    last_seq        bigint      not null,
    segment_id      uuid        not null,
    bytes           integer     not null,
    sha256          bytea       not null,
    created_at      timestamptz not null default now(),
    object_key      text        generated always as (
        'orgs/' || org_id::text || '/conversations/' || conversation_id::text
        || '/events/' || segment_id::text || '.ndjson') stored,
    constraint conversation_segments_pkey primary key (conversation_id, first_seq),
    constraint conversation_segments_segment_key unique (segment_id),
    constraint conversation_segments_conversation_fkey foreign key (org_id, conversation_id)
        references app.conversations (org_id, id) on delete cascade,
    constraint conversation_segments_range_check check (first_seq >= 1 and last_seq >= first_seq
        and last_seq - first_seq < 1000),
    constraint conversation_segments_bytes_check check (bytes > 0),
    constraint conversation_segments_sha256_check check (octet_length(sha256) = 32)
);

create table app.documents (
    id             uuid        not null,
    org_id         uuid        not null default nullif(current_setting('app.current_org_id', true), '')::uuid,
    project_id     uuid,
    created_by     uuid        default nullif(current_setting('app.current_user_id', true), '')::uuid,
    created_by_key uuid        default nullif(current_setting('app.current_api_key_id', true), '')::uuid,
    title          text        not null,
    filename       text        not null,
    content_type   text        not null,
    bytes          bigint      not null,
    sha256         bytea       not null,
    status         text        not null default 'uploaded',
    error          text,
    chunk_count    integer,
    text_bytes     bigint,
    created_at     timestamptz not null default now(),
    updated_at     timestamptz not null default now(),
    processed_at   timestamptz,
    object_key     text        generated always as (
        'orgs/' || org_id::text || '/documents/' || id::text) stored,
    constraint documents_pkey primary key (id),
    constraint documents_org_id_id_key unique (org_id, id),
    constraint documents_org_fkey foreign key (org_id) references app.orgs (id) on delete cascade,
    constraint documents_project_fkey foreign key (org_id, project_id)
        references app.projects (org_id, id) on delete cascade,
    constraint documents_created_by_fkey foreign key (created_by)
        references app.users (id) on delete set null,
    constraint documents_status_check check (status in ('uploaded', 'processing', 'ready', 'failed')),
    constraint documents_title_length check (char_length(title) between 1 and 200),
    constraint documents_filename_length check (char_length(filename) between 1 and 255),
    constraint documents_content_type_length check (char_length(content_type) between 1 and 255),
    constraint documents_bytes_check check (bytes > 0),
    constraint documents_sha256_check check (octet_length(sha256) = 32)
);
create index documents_org_created_idx on app.documents (org_id, created_at desc, id desc);
create index documents_pending_idx on app.documents (created_at) where status in ('uploaded', 'processing');
create index documents_project_idx on app.documents (org_id, project_id) where project_id is not null;
create index documents_created_by_idx on app.documents (created_by);

create table app.document_chunks (
    org_id      uuid    not null,
    document_id uuid    not null,
    chunk_no    integer not null,
    content     text    not null,
    search      tsvector generated always as (to_tsvector('simple', content)) stored,
    constraint document_chunks_pkey primary key (document_id, chunk_no),
    constraint document_chunks_document_fkey foreign key (org_id, document_id)
        references app.documents (org_id, id) on delete cascade
);
create index document_chunks_search_idx on app.document_chunks using gin (search);
create index document_chunks_org_idx on app.document_chunks (org_id);

create table app.org_storage (
    org_id     uuid        not null,
    bytes      bigint      not null default 0,
    objects    bigint      not null default 0,
    updated_at timestamptz not null default now(),
    constraint org_storage_pkey primary key (org_id),
    constraint org_storage_org_fkey foreign key (org_id) references app.orgs (id) on delete cascade,
    constraint org_storage_bytes_check check (bytes >= 0 and objects >= 0)
);

-- No foreign key: the purge outlives the org whose rows it replaces.
create table app.storage_purge (
    id          bigint      generated always as identity,
    org_id      uuid        not null,
    object_key  text        not null,
    enqueued_at timestamptz not null default now(),
    not_before  timestamptz not null default now(),
    attempts    integer     not null default 0,
    last_error  text,
    constraint storage_purge_pkey primary key (id),
    constraint storage_purge_key_check check (object_key like 'orgs/%')
);
create index storage_purge_due_idx on app.storage_purge (not_before);
