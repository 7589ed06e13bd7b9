-- V8: password-reset requests are queued, then handled by the worker.
--
-- Why: answering "reset my password" used to look the email up, mint a token and queue an
-- email inside the request, so a known address took measurably longer than an unknown
-- one (an account-enumeration oracle), and the credential code chose the token. Now the
-- request only records the address here -- the same single insert whatever it is -- and
-- answers 202; the worker (role palisade_jobs) picks requests up, mints the token and
-- queues the email for addresses that have an account, and deletes the request.

create table app.password_reset_requests (
    id         bigint      generated always as identity,
    email      text        not null,
    created_at timestamptz not null default now(),
    constraint password_reset_requests_pkey primary key (id),
    constraint password_reset_requests_email_length check (char_length(email) between 3 and 254)
);
comment on table app.password_reset_requests is
    'Password-reset requests waiting for the worker. Written by app.request_password_reset(), consumed by app.issue_password_reset().';
