-- POST /v1/billing/webhook as the database sees it, for a new event about org :i: the
-- credential role's transaction -- the request's audit context, then
-- app.billing_receive_event (stored, audited in the org's chain), COMMIT. Run at the
-- same fixed rate as the API's deliveries (pgbench -R), so the two p99s compare.
\set i 100000000000 + random(1, :orgs)
\set n random(1, 9000000000000000000)
begin;
select app.bind_request_meta('{"ip": "127.0.0.1", "user_agent": "pgbench", "request_id": "pgbench"}');
select app.billing_receive_event('evt_pgbench' || :n, 'customer.updated', now(), false,
    jsonb_build_object('id', 'evt_pgbench' || :n, 'object', 'event', 'type', 'customer.updated',
        'created', 0, 'livemode', false, 'data', jsonb_build_object('object', jsonb_build_object(
            'id', 'cus_pgbench' || :n, 'object', 'customer',
            'metadata', jsonb_build_object('org_id', '0000000a-0000-4000-8000-' || :i)))),
    false);
commit;
