-- Billing's definer functions: the only writers of the billing tables (policies/billing.sql)
-- and, through app.billing_entitle(), of an org's entitlement once it has subscribed.
--
-- Three lanes, three sets of functions:
--   * the request role (palisade_runtime), for the org's owner: app.billing_begin() before
--     Palisade calls Stripe, app.billing_record_checkout() / app.billing_portal_opened()
--     after; the caller, org and role come from the verified context, never an argument;
--   * the credential role (palisade_credentials), for the webhook (no bearer: the
--     signature, checked by the server, is its authentication): app.billing_receive_event()
--     stores the event once -- a redelivery finds its id and changes nothing;
--   * the worker role (palisade_jobs): claims stored events, and applies what Stripe's API
--     says (app.billing_sync_subscription, app.billing_complete_checkout,
--     app.billing_payment_failed), ends the past_due grace (app.billing_expire_grace), and
--     emails owners (app.billing_email_owners).
-- Every change writes the org's audit log in the same transaction.

-- ---------------------------------------------------------------------------
-- Request role: the owner starts a checkout, a top-up, or opens the portal
-- ---------------------------------------------------------------------------

-- Checks that the caller may start p_purpose ('subscription', 'top_up', 'portal') for the
-- org in context -- a signed-in owner -- and returns what Palisade needs to call Stripe:
-- the org's customer (NULL: none yet), its name, and for a subscription, refuses 409
-- subscription_exists when one is live (changes go through the portal).
create or replace function app.billing_begin(
    p_purpose text, out stripe_customer_id text, out org_name text)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_org uuid := app.current_org_id();
begin
    perform app.require_signed_in_user();
    perform app.require_role('owner', app.current_org_role(), 'billing is managed by the organization''s owners');
    if p_purpose not in ('subscription', 'top_up', 'portal') then
        raise exception 'unknown billing purpose %', p_purpose;
    end if;
    select o.name into org_name from app.orgs o where o.id = v_org;
    select c.stripe_customer_id into stripe_customer_id
      from app.billing_customers c where c.org_id = v_org;
    if p_purpose = 'subscription' and exists (
        select 1 from app.billing_subscriptions s
         where s.org_id = v_org and s.status in ('active', 'trialing', 'past_due', 'unpaid', 'paused')) then
        perform app.refuse(409, 'subscription_exists',
            'the organization already has a subscription: change or cancel it in the billing portal (POST .../billing/portal-session)');
    end if;
    if p_purpose = 'portal' and stripe_customer_id is null then
        perform app.refuse(409, 'no_billing_account',
            'the organization has no billing account yet: start a checkout or a top-up first');
    end if;
end
$$;

-- Records the Checkout Session the owner just created at Stripe (and the org's customer,
-- the first time: a second click racing the first found the same customer through
-- Stripe's idempotency key, and the first insert wins here). Returns the session's id.
create or replace function app.billing_record_checkout(
    p_customer_id text, p_kind text, p_stripe_session_id text, p_plan text,
    p_amount_cents bigint, p_currency text, p_url text, p_expires_at timestamptz)
returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_org uuid := app.current_org_id();
    v_id uuid;
begin
    perform app.require_signed_in_user();
    perform app.require_role('owner', app.current_org_role(), 'billing is managed by the organization''s owners');
    insert into app.billing_customers (org_id, stripe_customer_id, currency)
    values (v_org, p_customer_id, p_currency)
    on conflict (org_id) do nothing;
    if found then
        perform app.audit_org_event(v_org, 'billing.customer_created',
            pg_catalog.jsonb_build_array(app.audit_target('stripe_customer', null, p_customer_id)));
    end if;
    insert into app.billing_sessions (org_id, kind, stripe_session_id, plan_id, amount_cents,
                                      currency, url, created_by, expires_at)
    values (v_org, p_kind, p_stripe_session_id, p_plan, p_amount_cents, p_currency, p_url,
            app.current_user_id(), p_expires_at)
    returning id into v_id;
    perform app.audit_org_event(v_org,
        case p_kind when 'direct_payment' then 'billing.top_up_started' else 'billing.checkout_started' end,
        pg_catalog.jsonb_build_array(app.audit_target('billing_session', v_id, p_stripe_session_id)),
        pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'kind', p_kind, 'plan', p_plan, 'amount_cents', p_amount_cents, 'currency', p_currency)));
    return v_id;
end
$$;

-- Records that the owner opened the Customer Portal (where plans are changed, cards
-- updated and subscriptions cancelled -- what happens there comes back as webhooks).
create or replace function app.billing_portal_opened(p_customer_id text) returns void
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
begin
    perform app.require_signed_in_user();
    perform app.require_role('owner', app.current_org_role(), 'billing is managed by the organization''s owners');
    perform app.audit_org_event(app.current_org_id(), 'billing.portal_opened',
        pg_catalog.jsonb_build_array(app.audit_target('stripe_customer', null, p_customer_id)));
end
$$;

-- Trigger: an org with a live subscription is not deleted (Stripe would go on charging
-- for it): the owner cancels in the portal first. Runs as the deleting role; the owner
-- reads the org's subscriptions under RLS (billing_subscriptions_select_admin).
create or replace function app.orgs_refuse_delete_while_subscribed() returns trigger
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
begin
    if exists (select 1 from app.billing_subscriptions s
                where s.org_id = old.id and s.status in ('active', 'trialing', 'past_due', 'unpaid', 'paused')) then
        raise exception 'the organization has a live subscription: cancel it in the billing portal, then delete the organization'
            using errcode = 'PT409', hint = 'subscription_exists';
    end if;
    return old;
end
$$;
create or replace trigger orgs_refuse_delete_while_subscribed before delete on app.orgs
    for each row execute function app.orgs_refuse_delete_while_subscribed();

-- ---------------------------------------------------------------------------
-- Credential role: the webhook
-- ---------------------------------------------------------------------------

drop function if exists app.billing_receive_event(text, text, timestamptz, boolean, jsonb);

-- The org a Stripe object concerns: its customer's org (Palisade created every customer),
-- else the org id Palisade put in its metadata / client_reference_id, if that org exists.
create or replace function app.billing_org_of(p_customer text, p_hint text) returns uuid
language sql stable
set search_path = pg_catalog, pg_temp
as $$
    select coalesce(
        (select c.org_id from app.billing_customers c where c.stripe_customer_id = p_customer),
        (select o.id from app.orgs o
          where p_hint ~* '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
            and o.id = p_hint::uuid))
$$;

-- Stores a verified webhook event once. Returns true when it is new (recorded in its
-- org's audit log, and queued for the worker when p_applies -- a type Palisade acts on;
-- others are stored as ignored), false for a redelivery (nothing changes).
create or replace function app.billing_receive_event(
    p_id text, p_type text, p_created timestamptz, p_livemode boolean, p_payload jsonb,
    p_applies boolean)
returns boolean
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_object jsonb := p_payload -> 'data' -> 'object';
    v_org uuid;
begin
    -- A redelivery: one index probe, no write.
    if exists (select 1 from app.billing_events e where e.id = p_id) then
        return false;
    end if;
    v_org := app.billing_org_of(
        case when v_object ->> 'object' = 'customer' then v_object ->> 'id' else v_object ->> 'customer' end,
        coalesce(v_object -> 'metadata' ->> 'org_id', v_object ->> 'client_reference_id'));
    insert into app.billing_events (id, type, created, livemode, org_id, payload, status, processed_at)
    values (p_id, p_type, p_created, p_livemode, v_org, p_payload,
            case when p_applies then 'pending' else 'ignored' end,
            case when p_applies then null else now() end)
    on conflict (id) do nothing;
    if not found then
        return false;  -- a concurrent delivery of the same event stored it first
    end if;
    if v_org is not null then
        perform app.audit_org_event(v_org, 'billing.event_received',
            pg_catalog.jsonb_build_array(app.audit_target('stripe_event', null, p_id)),
            pg_catalog.jsonb_build_object('type', p_type, 'object_id', v_object ->> 'id',
                                          'livemode', p_livemode));
    end if;
    return true;
end
$$;

-- ---------------------------------------------------------------------------
-- Worker role: apply what Stripe reports
-- ---------------------------------------------------------------------------

-- Claims up to p_limit due events for p_lease (another worker skips them meanwhile; a
-- worker that dies leaves them due again when the lease passes).
create or replace function app.claim_billing_events(p_limit integer, p_lease interval)
returns table (id text, type text, org_id uuid, payload jsonb, attempts integer)
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    with due as (
        select e.id from app.billing_events e
         where e.status = 'pending' and e.next_attempt_at <= now()
         order by e.created, e.received_at
         limit p_limit
         for update skip locked
    )
    update app.billing_events e
       set attempts = e.attempts + 1, next_attempt_at = now() + p_lease
      from due where e.id = due.id
    returning e.id, e.type, e.org_id, e.payload, e.attempts
$$;

-- Ends an event: 'processed', 'ignored' (a type Palisade does not act on), or 'retry'
-- with the error (backing off 2^attempts seconds, at most an hour; 'failed' after 12).
create or replace function app.billing_event_done(p_id text, p_outcome text, p_error text default null)
returns void
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    update app.billing_events e
       set status = case when p_outcome in ('processed', 'ignored') then p_outcome
                         when e.attempts >= 12 then 'failed'
                         else 'pending' end,
           processed_at = case when p_outcome in ('processed', 'ignored') then now() end,
           last_error = case when p_outcome in ('processed', 'ignored') then null
                             else pg_catalog.left(p_error, 1000) end,
           next_attempt_at = case when p_outcome in ('processed', 'ignored') then e.next_attempt_at
                                  else now() + pg_catalog.make_interval(
                                      secs => least(3600, pg_catalog.power(2, e.attempts))) end
     where e.id = p_id
$$;

-- Sets the org's entitlement from its subscriptions: the best live one (active or
-- trialing before past_due, then the higher plan) gives its plan; a past_due one keeps
-- it for p_grace from when it fell past due, then the free (cheapest) plan's limits
-- apply; with none live, an org that had one is on the free plan, status canceled.
-- An org that never subscribed keeps what `palisade orgs set-plan` gave it; so does one
-- whose only subscriptions are for prices Palisade does not sell (plan_id NULL). Records
-- plan.changed. Returns the plan before and after. Internal.
create or replace function app.billing_entitle(
    p_org uuid, p_grace interval, out old_plan text, out new_plan text, out new_status text)
language plpgsql volatile
set search_path = pg_catalog, pg_temp
as $$
declare
    v_sub record;
    -- The free plan: the cheapest of the catalogue (not the default for new orgs, which a
    -- deployment may set to a trial plan).
    v_default text := (select p.id from app.plans p order by p.rank limit 1);
    v_start timestamptz;
    v_end timestamptz;
    v_old_status text;
begin
    select op.plan_id, op.status into old_plan, v_old_status
      from app.org_plans op where op.org_id = p_org for update;
    if not found then
        return;
    end if;
    select s.* into v_sub
      from app.billing_subscriptions s join app.plans p on p.id = s.plan_id
     where s.org_id = p_org and s.status in ('active', 'trialing', 'past_due')
     order by (s.status <> 'past_due') desc, p.rank desc, s.stripe_read_at desc
     limit 1;
    if found then
        new_status := v_sub.status;
        if v_sub.status = 'past_due' and v_sub.past_due_since + p_grace <= now() then
            new_plan := v_default;
        else
            new_plan := v_sub.plan_id;
            v_start := v_sub.current_period_start;
            v_end := v_sub.current_period_end;
        end if;
    elsif exists (select 1 from app.billing_subscriptions s
                   where s.org_id = p_org and s.plan_id is not null and s.status not in ('incomplete')) then
        new_plan := v_default;
        new_status := 'canceled';
    else
        new_plan := old_plan;
        new_status := v_old_status;
        return;
    end if;
    if v_end is null or v_start is null or v_end <= v_start then
        v_start := null;
        v_end := null;
    end if;
    update app.org_plans op
       set plan_id = new_plan, status = new_status,
           current_period_start = v_start, current_period_end = v_end,
           changed_at = case when op.plan_id is distinct from new_plan then now() else op.changed_at end
     where op.org_id = p_org;
    if old_plan is distinct from new_plan then
        perform app.audit_org_event(p_org, 'plan.changed',
            pg_catalog.jsonb_build_array(app.audit_target('plan', null, new_plan)),
            pg_catalog.jsonb_build_object('from', old_plan, 'to', new_plan, 'status', new_status,
                                          'source', 'billing'));
    end if;
end
$$;

-- Projects a subscription as just read from Stripe's API (p_read_at: when the read
-- began). A read older than the stored one is ignored -- so events applied in any order
-- leave the newest state -- then the org's entitlement follows. Returns the org (NULL
-- when no org can be found for it), and its plan before and after.
create or replace function app.billing_sync_subscription(
    p_subscription_id text, p_customer_id text, p_org_hint text, p_status text,
    p_price_id text, p_plan text, p_period_start timestamptz, p_period_end timestamptz,
    p_cancel_at_period_end boolean, p_canceled_at timestamptz, p_read_at timestamptz,
    p_grace interval, out org_id uuid, out old_plan text, out new_plan text, out new_status text)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_before app.billing_subscriptions;
    v_after app.billing_subscriptions;
begin
    org_id := coalesce(
        (select s.org_id from app.billing_subscriptions s where s.stripe_subscription_id = p_subscription_id),
        app.billing_org_of(p_customer_id, p_org_hint));
    if org_id is null then
        return;
    end if;
    perform 1 from app.orgs o where o.id = org_id for no key update;
    select s.* into v_before from app.billing_subscriptions s
     where s.stripe_subscription_id = p_subscription_id;
    insert into app.billing_subscriptions as s (
        org_id, stripe_subscription_id, stripe_customer_id, plan_id, price_id, status,
        current_period_start, current_period_end, cancel_at_period_end, canceled_at,
        past_due_since, stripe_read_at)
    values (org_id, p_subscription_id, p_customer_id, p_plan, p_price_id, p_status,
            p_period_start, p_period_end, coalesce(p_cancel_at_period_end, false), p_canceled_at,
            case when p_status = 'past_due' then now() end, p_read_at)
    on conflict (stripe_subscription_id) do update
       set plan_id = excluded.plan_id, price_id = excluded.price_id, status = excluded.status,
           current_period_start = excluded.current_period_start,
           current_period_end = excluded.current_period_end,
           cancel_at_period_end = excluded.cancel_at_period_end, canceled_at = excluded.canceled_at,
           past_due_since = case when excluded.status = 'past_due'
                                 then coalesce(s.past_due_since, now()) end,
           stripe_read_at = excluded.stripe_read_at
     where s.stripe_read_at < excluded.stripe_read_at
    returning s.* into v_after;
    if v_after.stripe_subscription_id is not null and (
           v_before.stripe_subscription_id is null
        or (v_before.status, v_before.plan_id, v_before.cancel_at_period_end, v_before.current_period_end)
           is distinct from (v_after.status, v_after.plan_id, v_after.cancel_at_period_end, v_after.current_period_end)) then
        perform app.audit_org_event(org_id,
            case when v_before.stripe_subscription_id is null then 'billing.subscription_created'
                 else 'billing.subscription_updated' end,
            pg_catalog.jsonb_build_array(app.audit_target('stripe_subscription', null, p_subscription_id)),
            pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                'status', v_after.status, 'previous_status', v_before.status,
                'plan', v_after.plan_id, 'cancel_at_period_end', v_after.cancel_at_period_end,
                'current_period_end', v_after.current_period_end)));
    end if;
    select e.old_plan, e.new_plan, e.new_status into old_plan, new_plan, new_status
      from app.billing_entitle(org_id, p_grace) e;
end
$$;

-- Ends a Checkout Session as Stripe reports it: 'completed' (paid), 'cancelled'
-- (expired) or 'error' (its payment failed). Only an in_progress session changes, so
-- a redelivered or late event does nothing; a completed top-up credits the org's balance
-- by the amount Stripe collected -- once. Returns the org, the kind and the credits
-- added (0 if none); org_id NULL when the session is unknown.
create or replace function app.billing_complete_checkout(
    p_stripe_session_id text, p_outcome text, p_amount_paid bigint,
    out org_id uuid, out kind text, out changed boolean, out credited bigint)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_session app.billing_sessions;
begin
    changed := false;
    credited := 0;
    if p_outcome not in ('completed', 'cancelled', 'error') then
        raise exception 'unknown checkout outcome %', p_outcome;
    end if;
    update app.billing_sessions s
       set status = p_outcome,
           completed_at = case when p_outcome = 'completed' then now() end
     where s.stripe_session_id = p_stripe_session_id and s.status = 'in_progress'
    returning s.* into v_session;
    if not found then
        select s.org_id, s.kind into org_id, kind
          from app.billing_sessions s where s.stripe_session_id = p_stripe_session_id;
        return;
    end if;
    org_id := v_session.org_id;
    kind := v_session.kind;
    changed := true;
    if p_outcome = 'completed' and v_session.kind = 'direct_payment' then
        credited := coalesce(p_amount_paid, v_session.amount_cents);
        update app.billing_customers c
           set credit_balance_cents = c.credit_balance_cents + credited
         where c.org_id = v_session.org_id;
    end if;
    perform app.audit_org_event(v_session.org_id,
        case when p_outcome = 'completed' and v_session.kind = 'direct_payment' then 'billing.credits_added'
             else 'billing.checkout_' || p_outcome end,
        pg_catalog.jsonb_build_array(app.audit_target('billing_session', v_session.id, p_stripe_session_id)),
        pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
            'kind', v_session.kind, 'plan', v_session.plan_id,
            'amount_cents', case when credited > 0 then credited end, 'currency', v_session.currency)));
end
$$;

-- Records a failed invoice payment in its org's audit log (the subscription's new
-- status arrives through app.billing_sync_subscription). Returns the org, or NULL.
create or replace function app.billing_payment_failed(
    p_customer_id text, p_org_hint text, p_invoice_id text, p_amount_due bigint,
    p_currency text, p_attempt_count integer, p_next_attempt_at timestamptz)
returns uuid
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_org uuid := app.billing_org_of(p_customer_id, p_org_hint);
begin
    if v_org is not null then
        perform app.audit_org_event(v_org, 'billing.payment_failed',
            pg_catalog.jsonb_build_array(app.audit_target('stripe_invoice', null, p_invoice_id)),
            pg_catalog.jsonb_strip_nulls(pg_catalog.jsonb_build_object(
                'amount_due', p_amount_due, 'currency', p_currency,
                'attempt_count', p_attempt_count, 'next_attempt_at', p_next_attempt_at)));
    end if;
    return v_org;
end
$$;

-- Orgs whose past_due grace has run out move to the default plan's limits (their
-- subscription keeps its state; a later payment restores the plan). Returns each org
-- moved, with its plans before and after.
create or replace function app.billing_expire_grace(p_grace interval)
returns table (org_id uuid, old_plan text, new_plan text)
language plpgsql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
declare
    v_org uuid;
    v_entitled record;
begin
    for v_org in
        select distinct s.org_id from app.billing_subscriptions s
          join app.org_plans op on op.org_id = s.org_id
         where s.status = 'past_due' and s.past_due_since + p_grace <= now()
           and op.plan_id = s.plan_id
    loop
        select e.* into v_entitled from app.billing_entitle(v_org, p_grace) e;
        if v_entitled.old_plan is distinct from v_entitled.new_plan then
            org_id := v_org;
            old_plan := v_entitled.old_plan;
            new_plan := v_entitled.new_plan;
            return next;
        end if;
    end loop;
end
$$;

-- Queues an email (sealed by the server) to each owner of p_org. Returns how many.
create or replace function app.billing_email_owners(
    p_org uuid, p_template text, p_subject text, p_body_sealed bytea)
returns integer
language sql volatile security definer
set search_path = pg_catalog, pg_temp
as $$
    select app.enqueue_org_email(p_org, 'owner', p_template, p_subject, p_body_sealed)
$$;

-- ---------------------------------------------------------------------------
-- What each function is, for \df+ and the audit
-- ---------------------------------------------------------------------------

comment on function app.billing_begin(text) is
    'Checks the caller is a signed-in owner of the org in context and returns its Stripe customer and name (409 subscription_exists / no_billing_account). Request role.';
comment on function app.billing_record_checkout(text, text, text, text, bigint, text, text, timestamptz) is
    'Records a Checkout Session the owner created (and the org''s customer, first time wins). Request role.';
comment on function app.billing_portal_opened(text) is 'Records that the owner opened the Customer Portal. Request role.';
comment on function app.orgs_refuse_delete_while_subscribed() is
    'Trigger: an org with a live subscription cannot be deleted (409 subscription_exists).';
comment on function app.billing_org_of(text, text) is
    'The org of a Stripe customer, else of an org id from Palisade''s metadata (if it exists). Internal.';
comment on function app.billing_receive_event(text, text, timestamptz, boolean, jsonb, boolean) is
    'Stores a verified webhook event once (false: a redelivery, nothing changed). Credential role (the webhook).';
comment on function app.claim_billing_events(integer, interval) is 'Claims due webhook events for a lease. Worker role.';
comment on function app.billing_event_done(text, text, text) is
    'Marks an event processed or ignored, or schedules its retry (failed after 12 attempts). Worker role.';
comment on function app.billing_entitle(uuid, interval) is
    'Sets an org''s plan and status from its subscriptions (grace for past_due); records plan.changed. Internal.';
comment on function app.billing_sync_subscription(text, text, text, text, text, text, timestamptz, timestamptz, boolean, timestamptz, timestamptz, interval) is
    'Projects a subscription read from Stripe (older reads ignored) and re-entitles its org. Worker role.';
comment on function app.billing_complete_checkout(text, text, bigint) is
    'Ends an in_progress Checkout Session once; a paid top-up credits the org. Worker role.';
comment on function app.billing_payment_failed(text, text, text, bigint, text, integer, timestamptz) is
    'Records a failed invoice payment in its org''s audit log. Worker role.';
comment on function app.billing_expire_grace(interval) is
    'Moves orgs past_due beyond the grace period to the default plan''s limits. Worker role.';
comment on function app.billing_email_owners(uuid, text, text, bytea) is
    'Queues a sealed email to each owner of an org. Worker role.';

-- ---------------------------------------------------------------------------
-- Grants
-- ---------------------------------------------------------------------------

revoke all on function app.billing_begin(text),
    app.billing_record_checkout(text, text, text, text, bigint, text, text, timestamptz),
    app.billing_portal_opened(text), app.billing_org_of(text, text),
    app.orgs_refuse_delete_while_subscribed(), app.billing_receive_event(text, text, timestamptz, boolean, jsonb, boolean),
    app.claim_billing_events(integer, interval), app.billing_event_done(text, text, text),
    app.billing_entitle(uuid, interval),
    app.billing_sync_subscription(text, text, text, text, text, text, timestamptz, timestamptz, boolean, timestamptz, timestamptz, interval),
    app.billing_complete_checkout(text, text, bigint),
    app.billing_payment_failed(text, text, text, bigint, text, integer, timestamptz),
    app.billing_expire_grace(interval), app.billing_email_owners(uuid, text, text, bytea)
    from public, palisade_runtime, palisade_credentials, palisade_jobs;
grant execute on function app.billing_begin(text),
    app.billing_record_checkout(text, text, text, text, bigint, text, text, timestamptz),
    app.billing_portal_opened(text)
    to palisade_runtime;
grant execute on function app.billing_receive_event(text, text, timestamptz, boolean, jsonb, boolean)
    to palisade_credentials;
grant execute on function app.claim_billing_events(integer, interval), app.billing_event_done(text, text, text),
    app.billing_sync_subscription(text, text, text, text, text, text, timestamptz, timestamptz, boolean, timestamptz, timestamptz, interval),
    app.billing_complete_checkout(text, text, bigint),
    app.billing_payment_failed(text, text, text, bigint, text, integer, timestamptz),
    app.billing_expire_grace(interval), app.billing_email_owners(uuid, text, text, bytea)
    to palisade_jobs;
