-- functions_jobs: the background worker's functions (password-reset mail, retention).
-- Executable by palisade_jobs only: the request and credential roles can call none of them.
-- The email outbox's claim/mark functions are in functions_email.sql.

-- Locks up to p_limit queued password-reset requests for this worker's transaction
-- (skip locked: concurrent workers take different ones). The worker mints a token for
-- each, then calls app.issue_password_reset() in the same transaction.
create or replace function app.claim_password_resets(p_limit integer)
returns table (id bigint, email text)
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    select r.id, r.email from app.password_reset_requests r
     order by r.id
     limit p_limit
       for update skip locked
$$;
comment on function app.claim_password_resets(integer) is
    'Locks queued password-reset requests for the calling worker transaction. Worker role only.';

-- Handles one request and deletes it. For an address with an account: earlier unused
-- reset tokens die, a new one (SHA-256 p_token_hash, valid p_ttl) is stored and the email
-- carrying it is queued -- unless one was issued less than p_min_gap ago (so repeated
-- requests cannot flood a mailbox). Returns whether an email was queued.
create or replace function app.issue_password_reset(
    p_request_id bigint, p_token_hash bytea, p_ttl interval, p_subject text, p_body_sealed bytea,
    p_min_gap interval default interval '60 seconds')
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_email text;
    v_user uuid;
begin
    delete from app.password_reset_requests r where r.id = p_request_id returning r.email into v_email;
    select u.id into v_user from app.users u where u.email = v_email;
    if v_user is null then
        return false;
    end if;
    if exists (select 1 from app.user_tokens t
                where t.user_id = v_user and t.purpose = 'password_reset' and t.used_at is null
                  and t.created_at > now() - p_min_gap) then
        return false;
    end if;
    update app.user_tokens set used_at = now()
     where user_id = v_user and purpose = 'password_reset' and used_at is null;
    insert into app.user_tokens (user_id, purpose, token_hash, expires_at)
        values (v_user, 'password_reset', p_token_hash, now() + p_ttl);
    perform app.enqueue_email(v_email, v_user, null, 'password_reset', p_subject, p_body_sealed);
    perform app.audit_account_event(v_user, 'user.password_reset_requested', '{}', '[]', true);
    return true;
end
$$;
comment on function app.issue_password_reset(bigint, bytea, interval, text, bytea, interval) is
    'Turns a queued request into a reset token and email for a known address (at most one per p_min_gap). Worker role only.';

-- Retention: deletes rows nobody needs any more and returns how many, per table.
--   sessions        ended (revoked or expired) more than p_keep ago, with their refresh tokens;
--   email_outbox    sent, or given up on (10 attempts), more than p_keep ago;
--   user_tokens     used or expired more than a day ago;
--   login_attempts  older than a day (the throttle window is 15 minutes);
--   password_reset_requests  older than a day (a worker that keeps failing on them).
create or replace function app.purge_expired(p_keep interval default interval '30 days')
returns table (table_name text, deleted bigint)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_count bigint;
begin
    delete from app.sessions s
     where coalesce(s.revoked_at, s.expires_at) < now() - p_keep;
    get diagnostics v_count = row_count;
    table_name := 'sessions'; deleted := v_count; return next;

    delete from app.email_outbox o
     where (o.sent_at is not null and o.sent_at < now() - p_keep)
        or (o.sent_at is null and o.attempts >= 10 and o.updated_at < now() - p_keep);
    get diagnostics v_count = row_count;
    table_name := 'email_outbox'; deleted := v_count; return next;

    delete from app.user_tokens t
     where coalesce(t.used_at, t.expires_at) < now() - interval '1 day';
    get diagnostics v_count = row_count;
    table_name := 'user_tokens'; deleted := v_count; return next;

    delete from app.login_attempts a where a.created_at < now() - interval '1 day';
    get diagnostics v_count = row_count;
    table_name := 'login_attempts'; deleted := v_count; return next;

    delete from app.password_reset_requests r where r.created_at < now() - interval '1 day';
    get diagnostics v_count = row_count;
    table_name := 'password_reset_requests'; deleted := v_count; return next;

    -- Secrets a rotation replaced, once their grace window is a day gone.
    delete from app.api_key_secrets s where s.expires_at < now() - interval '1 day';
    get diagnostics v_count = row_count;
    table_name := 'api_key_secrets'; deleted := v_count; return next;

    -- Webhook events Palisade is done with, once well past Stripe's 3 days of retries
    -- (a redelivery after that would be applied again -- harmlessly: applying re-reads
    -- Stripe's current state, and a checkout ends only once).
    delete from app.billing_events e
     where e.status in ('processed', 'ignored', 'failed') and e.received_at < now() - p_keep;
    get diagnostics v_count = row_count;
    table_name := 'billing_events'; deleted := v_count; return next;

    -- Assistant conversations idle longer than their org's conversation_expiration
    -- (seconds; NULL keeps them), with their messages. Each deletion is in the org's
    -- audit log (actor system).
    delete from app.assistant_conversations c
     using app.org_settings s
     where s.org_id = c.org_id and s.conversation_expiration is not null
       and c.last_message_at < now() - pg_catalog.make_interval(secs => s.conversation_expiration);
    get diagnostics v_count = row_count;
    table_name := 'assistant_conversations'; deleted := v_count; return next;

    -- Full buckets carry no state: a missing row is a full bucket. One with calls not
    -- flushed yet, or a key's use of the last five minutes (app.flush_api_calls() copies
    -- it every few seconds), waits for the flush.
    delete from app.rate_limits r where r.tat < now() and r.calls = 0
       and (r.last_used_at is null or r.last_used_at < now() - interval '5 minutes');
    get diagnostics v_count = row_count;
    table_name := 'rate_limits'; deleted := v_count; return next;
end
$$;
comment on function app.purge_expired(interval) is
    'Retention: deletes ended sessions, old emails, spent tokens, old login attempts, stale reset requests, rotated-out key secrets, applied webhook events, assistant conversations idle past their org''s conversation_expiration, and full rate-limit buckets. Worker role only.';

revoke all on function app.claim_password_resets(integer),
    app.issue_password_reset(bigint, bytea, interval, text, bytea, interval), app.purge_expired(interval)
    from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant execute on function app.claim_password_resets(integer),
    app.issue_password_reset(bigint, bytea, interval, text, bytea, interval), app.purge_expired(interval)
    to palisade_jobs;
