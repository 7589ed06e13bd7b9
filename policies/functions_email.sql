-- functions_email: the outbox's only doors. app.enqueue_email() is internal: only the
-- definer functions that decide an email is due call it, in the transaction of the change
-- (so the email exists iff that transaction commits), each to an address it looked up
-- itself (the invitee's, the signed-in user's). No runtime role can queue an email
-- directly. Claiming and marking are the worker's (palisade_jobs).

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
comment on function app.enqueue_email(text, uuid, uuid, text, text, bytea) is
    'Queues a sealed email in the current transaction. Internal: called by definer functions only.';

-- Queues an email (sealed by the server) to every member of p_org at p_min_role or
-- above, addresses looked up here. Returns how many. Internal: called by definer functions.
create or replace function app.enqueue_org_email(
    p_org uuid, p_min_role app.org_role, p_template text, p_subject text, p_body_sealed bytea)
returns integer
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_to record;
    v_sent integer := 0;
begin
    for v_to in select u.id, u.email from app.memberships m join app.users u on u.id = m.user_id
                 where m.org_id = p_org and m.role >= p_min_role order by u.email loop
        perform app.enqueue_email(v_to.email, v_to.id, p_org, p_template, p_subject, p_body_sealed);
        v_sent := v_sent + 1;
    end loop;
    return v_sent;
end
$$;
comment on function app.enqueue_org_email(uuid, app.org_role, text, text, bytea) is
    'Queues a sealed email to an org''s members at or above a role. Internal: called by definer functions only.';
revoke all on function app.enqueue_org_email(uuid, app.org_role, text, text, bytea) from public;

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
       set attempts = o.attempts + 1, next_attempt_at = now() + p_lease
      from due where o.id = due.id
    returning o.id, o.to_email, o.subject, o.body_sealed, o.attempts
$$;
comment on function app.claim_emails(integer, interval) is
    'Leases up to p_limit due emails to this sender (skip locked: replicas never send one twice at once). Worker role only.';

-- Delivered: the sealed body is dropped, keeping only the envelope for the record.
create or replace function app.mark_email_sent(p_id uuid) returns void
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    update app.email_outbox
       set sent_at = now(), body_sealed = '\x'::bytea, last_error = null
     where id = p_id
$$;
comment on function app.mark_email_sent(uuid) is 'Marks an email delivered and drops its sealed body. Worker role only.';

-- Failed: retried with exponential backoff (capped at one hour), at most 10 attempts.
create or replace function app.mark_email_failed(p_id uuid, p_error text) returns void
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    update app.email_outbox
       set last_error = left(p_error, 500),
           next_attempt_at = now() + least(interval '1 hour', interval '5 seconds' * power(2, attempts))
     where id = p_id
$$;
comment on function app.mark_email_failed(uuid, text) is
    'Records a failed delivery; retried with exponential backoff (at most 10 attempts). Worker role only.';

-- The outbox at a glance, for metrics and `palisade outbox status`: counts and an age,
-- never an address or a body, over the undelivered rows only (the partial index).
-- "waiting" were never refused, "retrying" failed and will be tried again, "failed" are
-- the emails claim_emails no longer hands out (10 attempts); "due" may be claimed now.
drop function if exists app.email_outbox_stats();
create function app.email_outbox_stats(
    out waiting bigint, out retrying bigint, out failed bigint, out due bigint,
    out oldest_pending_seconds double precision)
language sql stable security definer
set search_path = pg_catalog, pg_temp
as $$
    select count(*) filter (where o.attempts < 10 and o.last_error is null),
           count(*) filter (where o.attempts < 10 and o.last_error is not null),
           count(*) filter (where o.attempts >= 10),
           count(*) filter (where o.attempts < 10 and o.next_attempt_at <= now()),
           extract(epoch from now() - min(o.created_at) filter (where o.attempts < 10))::double precision
      from app.email_outbox o
     where o.sent_at is null
$$;
comment on function app.email_outbox_stats() is
    'Undelivered emails: waiting, retrying, given up, due now, and the age of the oldest still to be tried (counts only). Worker role (metrics) and the owner (palisade outbox status).';

revoke all on function app.enqueue_email(text, uuid, uuid, text, text, bytea),
    app.claim_emails(integer, interval), app.mark_email_sent(uuid), app.mark_email_failed(uuid, text),
    app.email_outbox_stats()
    from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant execute on function app.claim_emails(integer, interval), app.mark_email_sent(uuid),
    app.mark_email_failed(uuid, text), app.email_outbox_stats() to palisade_jobs;
