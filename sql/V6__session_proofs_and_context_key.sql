-- V6: an unforgeable request context.
--
-- Why: the request context used to be plain settings (app.current_org_id, ...) that any
-- SQL running as the request role could set itself with set_config(). Two things change:
--
-- 1. A session is proven, not named. The server derives a proof for each session (an
--    HMAC of the session id under a key only the server holds) and the database keeps
--    only its SHA-256 here. app.set_request_context() takes the session id and that
--    proof, and derives the user from the session: knowing a session id (or a user id)
--    is no longer enough to act as someone. Sessions created before this migration have
--    no proof and cannot be used: their users sign in again.
-- 2. The context is sealed. app.context_key holds an HMAC-SHA256 key (as its inner and
--    outer pads) that only the owner's security definer functions read; the context
--    helpers in policies/context.sql return the context only when its MAC, bound to this
--    backend and this transaction, verifies. The key is created by policies/context.sql.

alter table app.sessions add column proof_hash bytea;
alter table app.sessions add constraint sessions_proof_hash_sha256
    check (proof_hash is null or octet_length(proof_hash) = 32);
comment on column app.sessions.proof_hash is
    'SHA-256 of the session proof the server derives from the session id; never granted to any runtime role.';

create table app.context_key (
    singleton  boolean     not null default true,
    inner_pad  bytea       not null,
    outer_pad  bytea       not null,
    created_at timestamptz not null default now(),
    constraint context_key_pkey primary key (singleton),
    constraint context_key_singleton check (singleton),
    constraint context_key_pad_length check (octet_length(inner_pad) = 64 and octet_length(outer_pad) = 64)
);
comment on table app.context_key is
    'The HMAC-SHA256 key sealing the request context, stored as its inner and outer pads. Read only by security definer functions.';

-- Functions whose signature changed: their replacements are in policies/.
drop function if exists app.set_request_context(uuid, uuid, uuid) cascade;
drop function if exists app.create_session(uuid, interval, text, inet, bytea) cascade;
drop function if exists app.create_org(text, text, boolean) cascade;
drop function if exists app.request_password_reset(text, bytea, interval, text, bytea) cascade;
drop function if exists app.issue_email_verification(bytea, interval) cascade;
drop function if exists app.login_attempt_end(bigint, text) cascade;
drop function if exists app.resend_invitation(uuid, bytea) cascade;
drop function if exists app.enqueue_email(text, uuid, uuid, text, text, bytea) cascade;
-- Return types changed (an enum instead of text).
drop function if exists app.invitation_lookup(bytea) cascade;
drop function if exists app.lock_org_for_change(uuid) cascade;
