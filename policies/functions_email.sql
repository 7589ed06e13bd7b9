-- functions_email: the outbox's only doors. Enqueue runs in the request transaction
-- (so the email exists iff the request commits); claim/mark are used by the sender.

create or replace function app.enqueue_email(
    p_to_email text, p_user_id uuid, p_org_id uuid, p_template text, p_subject text, p_body_sealed bytea)
returns uuid
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    insert into app.email_outbox (to_email, user_id, org_id, template, subject, body_sealed)
    values (p_to_email, p_user_id, p_org_id, p_template, p_subject, p_body_sealed)
    returning id
$$;

-- Claims up to p_limit due emails for p_lease: they are not handed out again until the
-- lease passes, so concurrent senders (replicas) never deliver the same email twice at once.
create or replace function app.claim_emails(p_limit integer, p_lease interval)
returns table (id uuid, to_email text, subject text, body_sealed bytea, attempts integer)
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    with due as (
        select o.id from app.email_outbox o
         where o.sent_at is null and o.next_attempt_at <= now() and o.attempts < 10
         order by o.next_attempt_at
         limit p_limit
         for update skip locked
    )
    update app.email_outbox o
       set attempts = o.attempts + 1, next_attempt_at = now() + p_lease, updated_at = now()
      from due where o.id = due.id
    returning o.id, o.to_email, o.subject, o.body_sealed, o.attempts
$$;

-- Delivered: the sealed body is dropped, keeping only the envelope for the record.
create or replace function app.mark_email_sent(p_id uuid) returns void
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    update app.email_outbox
       set sent_at = now(), body_sealed = '\x'::bytea, last_error = null, updated_at = now()
     where id = p_id
$$;

-- Failed: retried with exponential backoff (capped at one hour), at most 10 attempts.
create or replace function app.mark_email_failed(p_id uuid, p_error text) returns void
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    update app.email_outbox
       set last_error = left(p_error, 500),
           next_attempt_at = now() + least(interval '1 hour', interval '5 seconds' * power(2, attempts)),
           updated_at = now()
     where id = p_id
$$;

revoke all on function app.enqueue_email(text, uuid, uuid, text, text, bytea),
    app.claim_emails(integer, interval), app.mark_email_sent(uuid), app.mark_email_failed(uuid, text)
    from public;
grant execute on function app.enqueue_email(text, uuid, uuid, text, text, bytea),
    app.claim_emails(integer, interval), app.mark_email_sent(uuid), app.mark_email_failed(uuid, text)
    to palisade_runtime;
