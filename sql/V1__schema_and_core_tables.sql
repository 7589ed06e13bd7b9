-- V1: the application schema and the core identity/tenant tables.
--
-- Why: everything the foundation needs to prove isolation end to end: users,
-- organizations, memberships (with ranked roles), sessions (so an access token
-- can be revoked at once), and projects, the first tenant-owned resource.
--
-- Row-level security, grants and the functions policies read live in
-- policies/, which the server re-applies after every migration. This file only
-- shapes data. Every tenant table carries org_id first in its primary key and
-- defaults it from the request context (the same expression as
-- app.current_org_id() in policies/context.sql, inlined because policies are
-- applied after migrations).

-- The group role that holds every runtime grant. The login role the server
-- uses (palisade_app by default) is made a member of it by the bootstrap or by
-- the DBA. Created here only if a privileged bootstrap has not already done so.
do $$
begin
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'palisade_runtime') then
        create role palisade_runtime nologin nosuperuser nobypassrls noinherit;
    end if;
end
$$;

create schema app;
comment on schema app is 'Palisade application schema: every table here has RLS enabled and forced.';

create table app.users (
    id                uuid        not null default gen_random_uuid(),
    email             text        not null,
    name              text        not null,
    password_hash     text        not null,
    email_verified_at timestamptz,
    current_org_id    uuid,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    constraint users_pkey primary key (id),
    constraint users_email_key unique (email),
    constraint users_email_lowercase check (email = lower(btrim(email))),
    constraint users_name_length check (char_length(name) between 1 and 100)
);
comment on table app.users is 'Accounts. Emails are stored trimmed and lowercased.';

create table app.orgs (
    id         uuid        not null default gen_random_uuid(),
    name       text        not null,
    slug       text        not null,
    personal   boolean     not null default false,
    created_by uuid,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint orgs_pkey primary key (id),
    constraint orgs_slug_key unique (slug),
    constraint orgs_name_length check (char_length(name) between 1 and 100),
    constraint orgs_slug_format check (slug ~ '^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$'),
    constraint orgs_created_by_fkey foreign key (created_by) references app.users (id) on delete set null
);
comment on table app.orgs is 'Organizations (tenants). Every user has one personal org.';

alter table app.users
    add constraint users_current_org_id_fkey foreign key (current_org_id)
    references app.orgs (id) on delete set null;

create table app.memberships (
    org_id     uuid        not null,
    user_id    uuid        not null,
    role       text        not null,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    constraint memberships_pkey primary key (org_id, user_id),
    constraint memberships_role_check check (role in ('owner', 'admin', 'member', 'viewer')),
    constraint memberships_org_id_fkey foreign key (org_id) references app.orgs (id) on delete cascade,
    constraint memberships_user_id_fkey foreign key (user_id) references app.users (id) on delete cascade
);
create index memberships_user_id_idx on app.memberships (user_id);
comment on table app.memberships is 'Who belongs to which org, with a ranked role: owner > admin > member > viewer.';

create table app.sessions (
    id           uuid        not null default gen_random_uuid(),
    user_id      uuid        not null,
    created_at   timestamptz not null default now(),
    last_used_at timestamptz not null default now(),
    expires_at   timestamptz not null,
    revoked_at   timestamptz,
    user_agent   text,
    ip           inet,
    constraint sessions_pkey primary key (id),
    constraint sessions_user_id_fkey foreign key (user_id) references app.users (id) on delete cascade
);
create index sessions_user_id_idx on app.sessions (user_id);
comment on table app.sessions is 'Sign-in sessions. An access token names its session; revoking the session rejects the token on its next request.';

create table app.projects (
    org_id      uuid        not null default nullif(current_setting('app.current_org_id', true), '')::uuid,
    id          uuid        not null default gen_random_uuid(),
    name        text        not null,
    description text,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    constraint projects_pkey primary key (org_id, id),
    constraint projects_id_key unique (id),
    constraint projects_org_id_name_key unique (org_id, name),
    constraint projects_name_length check (char_length(name) between 1 and 100),
    constraint projects_description_length check (char_length(description) <= 2000),
    constraint projects_org_id_fkey foreign key (org_id) references app.orgs (id) on delete cascade
);
create index projects_org_id_created_at_idx on app.projects (org_id, created_at, id);
comment on table app.projects is 'Projects: the first tenant-owned resource.';
