-- V3: complete identity: rotating refresh tokens, one-time email tokens, login throttling.
--
-- Why: a session (V1) can now be refreshed with opaque rotating tokens (stored only as
-- SHA-256). Rotation keeps a short-lived sealed copy of the successor so concurrent
-- refreshes with the same token converge on one successor instead of signing the
-- user out. Verification and reset tokens are single-use and expire. Failed logins are
-- counted here, in Postgres, so throttling holds across replicas.

create table app.refresh_tokens (
    session_id       uuid        not null,
    id               uuid        not null default gen_random_uuid(),
    token_hash       bytea       not null,
    created_at       timestamptz not null default now(),
    rotated_at       timestamptz,
    successor_id     uuid,
    successor_sealed bytea,
    constraint refresh_tokens_pkey primary key (session_id, id),
    constraint refresh_tokens_token_hash_key unique (token_hash),
    constraint refresh_tokens_session_id_fkey foreign key (session_id)
        references app.sessions (id) on delete cascade
);
comment on table app.refresh_tokens is
    'One row per refresh token ever issued for a session; rotated_at set when it was exchanged.';

create table app.user_tokens (
    id         uuid        not null default gen_random_uuid(),
    user_id    uuid        not null,
    purpose    text        not null,
    token_hash bytea       not null,
    expires_at timestamptz not null,
    used_at    timestamptz,
    created_at timestamptz not null default now(),
    constraint user_tokens_pkey primary key (id),
    constraint user_tokens_token_hash_key unique (token_hash),
    constraint user_tokens_purpose_check check (purpose in ('verify_email', 'password_reset')),
    constraint user_tokens_user_id_fkey foreign key (user_id) references app.users (id) on delete cascade
);
create index user_tokens_user_id_idx on app.user_tokens (user_id);
comment on table app.user_tokens is 'Single-use email verification and password reset tokens (SHA-256 only).';

create table app.login_attempts (
    id          bigint      generated always as identity,
    account_key bytea       not null,
    ip          inet,
    status      text        not null default 'pending',
    created_at  timestamptz not null default now(),
    constraint login_attempts_pkey primary key (id),
    constraint login_attempts_status_check check (status in ('pending', 'failed'))
);
create index login_attempts_account_idx on app.login_attempts (account_key, created_at);
create index login_attempts_ip_idx on app.login_attempts (ip, created_at);
comment on table app.login_attempts is
    'Password checks in flight or failed, keyed by SHA-256 of the normalized email (not the email itself).';
