-- V9: API keys owned by organizations, and the shared rate limiter.
--
-- Why: programs need credentials that are not a person's session (issue 10). A key
-- belongs to one org and authenticates only there, with a role no higher than its
-- creator's (checked at every request, so a demoted creator's keys shrink with them).
-- Its secret is shown once; only SHA-256 of it is stored, in api_key_secrets, one row per
-- secret so a rotation can keep the previous secret alive for a grace window.
--
-- Rate limits must hold across every API replica, so their state lives here, in one
-- UNLOGGED table: a limiter row is hot (written by every request of its subject) and
-- worthless after a crash -- losing it only refills every bucket -- so it skips the WAL
-- (no fsync on the request path, no replication traffic). The request-role functions of
-- policies/functions_api_keys.sql and policies/functions_rate_limits.sql are the only
-- writers of these tables.

create table app.api_keys (
    org_id         uuid         not null,
    id             uuid         not null default gen_random_uuid(),
    name           text         not null,
    role           app.org_role not null default 'member',
    -- The non-secret display start of the current secret, e.g. 'pal_Ab12'.
    start          text         not null,
    created_by     uuid,
    expires_at     timestamptz,
    last_used_at   timestamptz,
    rotated_at     timestamptz,
    revoked_at     timestamptz,
    -- 'revoked' (DELETE) or 'creator_removed' (its creator left or was removed).
    revoked_reason text,
    created_at     timestamptz  not null default now(),
    constraint api_keys_pkey primary key (org_id, id),
    constraint api_keys_id_key unique (id),
    constraint api_keys_name_length check (char_length(name) between 1 and 100),
    constraint api_keys_role_not_owner check (role <> 'owner'),
    constraint api_keys_start_format check (start ~ '^pal_[0-9A-Za-z]{4}$'),
    constraint api_keys_revoked check ((revoked_at is null) = (revoked_reason is null)),
    constraint api_keys_revoked_reason_check check (revoked_reason in ('revoked', 'creator_removed')),
    constraint api_keys_org_id_fkey foreign key (org_id) references app.orgs (id) on delete cascade,
    constraint api_keys_created_by_fkey foreign key (created_by) references app.users (id) on delete set null
);
create index api_keys_org_id_created_at_idx on app.api_keys (org_id, created_at, id);
create index api_keys_created_by_idx on app.api_keys (created_by);
comment on table app.api_keys is
    'API keys of an org: name, role (never owner), display start, creator, expiry, last use (at most once a minute), revocation.';

create table app.api_key_secrets (
    secret_hash bytea       not null,
    key_id      uuid        not null,
    created_at  timestamptz not null default now(),
    -- NULL for the current secret; the end of the grace window for a rotated-out one.
    expires_at  timestamptz,
    constraint api_key_secrets_pkey primary key (secret_hash),
    constraint api_key_secrets_sha256 check (octet_length(secret_hash) = 32),
    constraint api_key_secrets_key_id_fkey foreign key (key_id) references app.api_keys (id) on delete cascade
);
create index api_key_secrets_key_id_idx on app.api_key_secrets (key_id);
comment on table app.api_key_secrets is
    'SHA-256 of each secret of a key: the current one (expires_at NULL) and rotated-out ones in their grace window. Never granted to any runtime role.';

create unlogged table app.rate_limits (
    bucket text        not null,
    -- GCRA: the theoretical arrival time of the next request; the bucket is full again
    -- once it has passed.
    tat    timestamptz not null,
    constraint rate_limits_pkey primary key (bucket),
    constraint rate_limits_bucket_length check (char_length(bucket) <= 120)
) with (fillfactor = 50);
comment on table app.rate_limits is
    'Rate-limit state (GCRA), one row per subject: ''key:<id>'', ''user:<id>:<org>'', ''ip:<addr>''. UNLOGGED: emptied by a crash, which only refills buckets.';
