-- V14: an operator can disable an account (issue 16, `palisade users disable`).
--
-- Why: on-call needs to stop an account at once -- a compromised or abusive user --
-- without deleting it (deleting would take its orgs, keys and audit trail with it).
-- While disabled_at is set, the account cannot sign in (403 account_disabled), its
-- sessions were revoked in the same transaction that set it, and the API keys it created
-- stop authenticating; clearing it (`palisade users enable`) restores sign-in and those
-- keys. Only the schema owner writes it (policies/functions_operator.sql); no runtime
-- role has a grant on the column.

alter table app.users add column disabled_at timestamptz;
comment on column app.users.disabled_at is
    'Set while an operator has disabled the account (palisade users disable); NULL otherwise.';
