-- V18: a key's current secret, and whether its creator is disabled, on the key's own row
-- (issue 10).
--
-- Why: every request with a key runs two statements that find the key by its secret's
-- SHA-256 (the limiter and the context). Both joined app.api_key_secrets to app.api_keys,
-- and the context then joined app.memberships to app.users for the creator's disabled
-- flag: four relations where a signed-in user's request reads two (sessions,
-- memberships). Counted with callgrind in one PostgreSQL backend (benches/
-- README-performance.md, "The key's request reads what a session's reads"), the key's
-- context statement cost 86,000 instructions more than the session's, and the whole key
-- request 8 % more. Now:
--
--   * app.api_keys.secret_hash holds the SHA-256 of the key's current secret (unique);
--     app.api_key_secrets keeps only the secrets a rotation replaced, each until the end
--     of its grace window (expires_at is never NULL there any more). A presented secret
--     is looked up on app.api_keys first and in app.api_key_secrets only when it is not
--     the current one.
--   * app.api_keys.creator_disabled mirrors app.users.disabled_at of the key's creator,
--     kept by a trigger on app.users (policies/functions_api_keys.sql), so the context
--     no longer reads app.users.
--
-- The hash is not a credential (a request presents the secret, which is hashed to find
-- the row), and still no runtime role can read it: palisade_runtime's select on
-- app.api_keys is granted column by column, without secret_hash (policies/api_keys.sql).

alter table app.api_keys add column secret_hash bytea;
alter table app.api_keys add column creator_disabled boolean not null default false;

-- Only the columns here: until the policies that follow this migration at the same start
-- commit (one transaction, moments later), the functions before V18 keep serving every
-- replica, and they read and write current secrets in app.api_key_secrets. The policies
-- file (policies/functions_api_keys.sql, at its top) fills both columns in the
-- transaction that installs the new functions -- each current secret, including one
-- written meanwhile, moves onto its key; creator_disabled is synced with app.users --
-- then deletes the rows left in app.api_key_secrets and makes both columns NOT NULL.
alter table app.api_keys
    add constraint api_keys_secret_hash_key unique (secret_hash),
    add constraint api_keys_secret_hash_sha256 check (octet_length(secret_hash) = 32);

comment on column app.api_keys.secret_hash is
    'SHA-256 of the key''s current secret (the secret itself is never stored). Not granted to any runtime role.';
comment on column app.api_keys.creator_disabled is
    'Whether the key''s creator is disabled (app.users.disabled_at): kept by the trigger users_disabled_api_keys.';
comment on column app.api_key_secrets.expires_at is
    'The end of the grace window of a secret a rotation replaced.';
comment on table app.api_key_secrets is
    'SHA-256 of each secret a rotation replaced, until the end of its grace window (the current one is app.api_keys.secret_hash). Never granted to any runtime role.';
