-- V2: the email outbox.
--
-- Why: an email (verification, password reset, invitation) must be sent if and only
-- if the transaction that caused it commits. Writing it to this table in that same
-- transaction gives exactly that; a background sender delivers committed rows.
-- The body carries one-time tokens, so it is stored encrypted (ChaCha20-Poly1305,
-- key derived from the server's master key): no usable token sits here in plaintext.

create table app.email_outbox (
    id            uuid        not null default gen_random_uuid(),
    user_id       uuid,
    org_id        uuid,
    to_email      text        not null,
    template      text        not null,
    subject       text        not null,
    body_sealed   bytea       not null,
    attempts      integer     not null default 0,
    last_error    text,
    next_attempt_at timestamptz not null default now(),
    sent_at       timestamptz,
    created_at    timestamptz not null default now(),
    updated_at    timestamptz not null default now(),
    constraint email_outbox_pkey primary key (id),
    constraint email_outbox_user_id_fkey foreign key (user_id) references app.users (id) on delete cascade,
    constraint email_outbox_org_id_fkey foreign key (org_id) references app.orgs (id) on delete cascade,
    constraint email_outbox_template_check check (template ~ '^[a-z_]{1,40}$')
);
create index email_outbox_pending_idx on app.email_outbox (next_attempt_at) where sent_at is null;
comment on table app.email_outbox is 'Emails written in the transaction that causes them; delivered by the sender afterwards. Bodies are encrypted.';
