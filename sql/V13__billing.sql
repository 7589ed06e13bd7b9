-- V13: billing with Stripe (issue 14). Stripe owns the money; these tables are
-- Palisade's projection of it, and the one place an org's entitlement (app.org_plans)
-- is set from:
--
--   billing_customers      the org's Stripe customer (one per org, created once) and
--                          its prepaid credit balance
--   billing_subscriptions  each Stripe subscription of the org as last read from Stripe's
--                          API, with the moment it was read (the order guard: an older
--                          read never overwrites a newer one)
--   billing_sessions       each Checkout Session the org started: a subscription
--                          (monthly_subscription) or a credit top-up (direct_payment),
--                          in_progress -> completed | cancelled | error
--   billing_events         every webhook event received, keyed by Stripe's event id:
--                          the idempotency store (a redelivery finds its id and changes
--                          nothing) and the worker's queue (applied after the 200)
--
-- Every table is written only by the definer functions of policies/functions_billing.sql;
-- admins and owners read their org's rows (policies/billing.sql).

create table app.billing_customers (
    org_id               uuid        not null,
    stripe_customer_id   text        not null,
    -- Prepaid credits (top-ups), in the smallest unit of `currency`.
    credit_balance_cents bigint      not null default 0,
    currency             text        not null default 'usd',
    created_at           timestamptz not null default now(),
    updated_at           timestamptz not null default now(),
    constraint billing_customers_pkey primary key (org_id),
    constraint billing_customers_org_id_fkey foreign key (org_id) references app.orgs (id) on delete cascade,
    constraint billing_customers_stripe_customer_id_key unique (stripe_customer_id),
    constraint billing_customers_stripe_customer_id_format check (stripe_customer_id ~ '^cus_[A-Za-z0-9_]{1,250}$'),
    constraint billing_customers_credit_nonnegative check (credit_balance_cents >= 0),
    constraint billing_customers_currency_format check (currency ~ '^[a-z]{3}$')
);
comment on table app.billing_customers is
    'Each org''s Stripe customer (created once, race-safe) and its prepaid credit balance.';

create table app.billing_subscriptions (
    org_id                 uuid        not null,
    stripe_subscription_id text        not null,
    stripe_customer_id     text        not null,
    -- The plan its price maps to (STRIPE_PRICE_IDS); NULL: a price Palisade does not sell.
    plan_id                text,
    price_id               text        not null,
    -- Stripe's subscription status, verbatim.
    status                 text        not null,
    current_period_start   timestamptz,
    current_period_end     timestamptz,
    cancel_at_period_end   boolean     not null default false,
    canceled_at            timestamptz,
    -- When Palisade first saw it past_due (the grace period runs from here); NULL otherwise.
    past_due_since         timestamptz,
    -- When this state was read from Stripe's API: a projection older than the stored one
    -- is ignored, so events applied out of order never roll the state back.
    stripe_read_at         timestamptz not null,
    created_at             timestamptz not null default now(),
    updated_at             timestamptz not null default now(),
    constraint billing_subscriptions_pkey primary key (org_id, stripe_subscription_id),
    constraint billing_subscriptions_stripe_subscription_id_key unique (stripe_subscription_id),
    constraint billing_subscriptions_org_id_fkey foreign key (org_id) references app.orgs (id) on delete cascade,
    constraint billing_subscriptions_plan_id_fkey foreign key (plan_id) references app.plans (id) on update cascade,
    constraint billing_subscriptions_status_check check (status in
        ('incomplete', 'incomplete_expired', 'trialing', 'active', 'past_due', 'canceled', 'unpaid', 'paused'))
);
create index billing_subscriptions_plan_id_idx on app.billing_subscriptions (plan_id);
create index billing_subscriptions_past_due_idx on app.billing_subscriptions (past_due_since)
    where status = 'past_due';
comment on table app.billing_subscriptions is
    'Each Stripe subscription of an org, as last read from Stripe''s API (stripe_read_at orders the reads).';

create table app.billing_sessions (
    id                uuid        not null default gen_random_uuid(),
    org_id            uuid        not null,
    kind              text        not null,
    status            text        not null default 'in_progress',
    stripe_session_id text        not null,
    -- monthly_subscription: the plan bought.
    plan_id           text,
    -- direct_payment: the credits bought, in the smallest unit of `currency`.
    amount_cents      bigint,
    currency          text        not null default 'usd',
    url               text        not null,
    created_by        uuid,
    expires_at        timestamptz,
    completed_at      timestamptz,
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    constraint billing_sessions_pkey primary key (org_id, id),
    constraint billing_sessions_id_key unique (id),
    constraint billing_sessions_stripe_session_id_key unique (stripe_session_id),
    constraint billing_sessions_org_id_fkey foreign key (org_id) references app.orgs (id) on delete cascade,
    constraint billing_sessions_created_by_fkey foreign key (created_by) references app.users (id) on delete set null,
    constraint billing_sessions_plan_id_fkey foreign key (plan_id) references app.plans (id) on update cascade,
    constraint billing_sessions_kind_check check (kind in ('monthly_subscription', 'direct_payment')),
    constraint billing_sessions_status_check check (status in ('in_progress', 'completed', 'cancelled', 'error')),
    constraint billing_sessions_kind_fields check (
        (kind = 'monthly_subscription' and plan_id is not null and amount_cents is null)
        or (kind = 'direct_payment' and plan_id is null and amount_cents is not null and amount_cents > 0)),
    constraint billing_sessions_currency_format check (currency ~ '^[a-z]{3}$')
);
create index billing_sessions_org_created_idx on app.billing_sessions (org_id, created_at desc, id desc);
create index billing_sessions_created_by_idx on app.billing_sessions (created_by);
create index billing_sessions_plan_id_idx on app.billing_sessions (plan_id);
comment on table app.billing_sessions is
    'Checkout Sessions an org started: subscriptions and credit top-ups, in_progress -> completed | cancelled | error.';

create table app.billing_events (
    id              text        not null,
    type            text        not null,
    -- Stripe's `created` of the event.
    created         timestamptz not null,
    livemode        boolean     not null default false,
    -- The org it concerns, resolved at receipt (its customer, or our metadata); NULL when
    -- none (still applied: the worker may resolve it from the object it reads).
    org_id          uuid,
    payload         jsonb       not null,
    status          text        not null default 'pending',
    attempts        integer     not null default 0,
    next_attempt_at timestamptz not null default now(),
    last_error      text,
    received_at     timestamptz not null default now(),
    processed_at    timestamptz,
    constraint billing_events_pkey primary key (id),
    constraint billing_events_org_id_fkey foreign key (org_id) references app.orgs (id) on delete set null,
    constraint billing_events_id_format check (id ~ '^evt_[A-Za-z0-9_]{1,250}$'),
    constraint billing_events_type_format check (type ~ '^[a-z0-9_.]{1,100}$'),
    constraint billing_events_status_check check (status in ('pending', 'processed', 'ignored', 'failed'))
);
create index billing_events_org_id_idx on app.billing_events (org_id, received_at);
create index billing_events_due_idx on app.billing_events (next_attempt_at) where status = 'pending';
comment on table app.billing_events is
    'Stripe webhook events by id: the idempotency store (a redelivery changes nothing) and the worker''s queue.';
