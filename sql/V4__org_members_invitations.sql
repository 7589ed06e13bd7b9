-- V4: invitations and the organization event log.
--
-- Why: teams invite people by email and manage their members' roles (issue 4).
-- An invitation is bound to one org (its row) and one email (accept compares it with
-- the signed-in user's). Its token is 256 random bits, sent only by email and stored
-- here only as its SHA-256; it expires after 7 days and is used at most once (a
-- resend replaces the hash, so the old token dies).
-- Every membership change, invitation and role change writes one org_events row in
-- the same transaction, for the audit log to expose later.
--
-- Row-level security, grants, and the security definer functions that are the only
-- writers of these tables, live in policies/invitations.sql, policies/org_events.sql
-- and policies/functions_orgs.sql.

create table app.invitations (
    org_id       uuid        not null,
    id           uuid        not null default gen_random_uuid(),
    email        text        not null,
    role         text        not null,
    token_hash   bytea       not null,
    status       text        not null default 'pending',
    invited_by   uuid,
    expires_at   timestamptz not null,
    responded_at timestamptz,
    accepted_by  uuid,
    created_at   timestamptz not null default now(),
    updated_at   timestamptz not null default now(),
    constraint invitations_pkey primary key (org_id, id),
    constraint invitations_id_key unique (id),
    constraint invitations_token_hash_key unique (token_hash),
    constraint invitations_token_hash_sha256 check (octet_length(token_hash) = 32),
    constraint invitations_email_lowercase check (email = lower(btrim(email)) and email like '_%@_%'),
    constraint invitations_role_check check (role in ('owner', 'admin', 'member', 'viewer')),
    -- pending: usable until expires_at; expired: a pending one superseded after expiry.
    constraint invitations_status_check
        check (status in ('pending', 'accepted', 'declined', 'revoked', 'expired')),
    constraint invitations_responded check ((status = 'pending') = (responded_at is null)),
    constraint invitations_org_id_fkey foreign key (org_id) references app.orgs (id) on delete cascade,
    constraint invitations_invited_by_fkey foreign key (invited_by) references app.users (id) on delete set null,
    constraint invitations_accepted_by_fkey foreign key (accepted_by) references app.users (id) on delete set null
);
-- At most one pending invitation per email and org (a re-invite is a 409; resend instead).
create unique index invitations_org_id_email_pending_key on app.invitations (org_id, email)
    where status = 'pending';
create index invitations_org_id_created_at_idx on app.invitations (org_id, created_at, id);
comment on table app.invitations is
    'Invitations to join an org by email. Only the SHA-256 of the token is stored; 7-day expiry; single use.';
comment on column app.invitations.token_hash is
    'SHA-256 of the emailed token. Never granted to the runtime role; matched only inside definer functions.';

create table app.org_events (
    org_id         uuid        not null,
    id             uuid        not null default gen_random_uuid(),
    actor_user_id  uuid,
    action         text        not null,
    target_user_id uuid,
    target_email   text,
    metadata       jsonb       not null default '{}'::jsonb,
    -- clock_timestamp(): several events of one transaction keep their order.
    created_at     timestamptz not null default clock_timestamp(),
    constraint org_events_pkey primary key (org_id, id),
    constraint org_events_action_format check (action ~ '^[a-z_]{1,60}$'),
    constraint org_events_metadata_object check (jsonb_typeof(metadata) = 'object'),
    constraint org_events_org_id_fkey foreign key (org_id) references app.orgs (id) on delete cascade,
    constraint org_events_actor_user_id_fkey foreign key (actor_user_id) references app.users (id) on delete set null,
    constraint org_events_target_user_id_fkey foreign key (target_user_id) references app.users (id) on delete set null
);
create index org_events_org_id_created_at_idx on app.org_events (org_id, created_at, id);
comment on table app.org_events is
    'Append-only log of membership, role, invitation and org-settings changes, written in the same transaction.';
