-- Golden Intempt payloads written by hand, independent of the extension: for five
-- event types, Stripe's documented object as the event carries it, and the
-- payload README "From Stripe to Intempt" says it becomes (eventId, timestamp in
-- ms, userId, and data with ids, status, currency, the telling scalars, every
-- top-level amount in major units under its name and as Stripe's integer under
-- <name>_minor; no metadata, no nested object; stripeAccount, the Stripe account
-- the event is of, when known).  Currencies of 0, 2 and 3 decimals.
\set SHOW_CONTEXT never
SET client_min_messages = warning;
\getenv fake_url FAKE_STRIPE_URL
CREATE SERVER g_stripe FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_url :'fake_url');
CREATE USER MAPPING FOR CURRENT_USER SERVER g_stripe OPTIONS (api_key 'sk_test_fake');
CREATE SCHEMA g;
SELECT stripe_sync.create_source('g', server => 'g_stripe', target_schema => 'g', objects => ARRAY['customers', 'charges']);
SELECT stripe_sync.alter_source('g', enabled => false);
-- the account its rows are keyed by, as its first sync learns it (Connect: a connected account's own)
UPDATE stripe_sync.sources SET account_id = 'acct_1Golden' WHERE name = 'g';
-- the customers and the charge the events point at, as synced
INSERT INTO g.customers (id, attrs, account_id, synced_at, observed_at) VALUES
  ('cus_G1', '{"id": "cus_G1", "object": "customer", "email": "grace@example.com"}', 'acct_1Golden', now(), now()),
  ('cus_G2', '{"id": "cus_G2", "object": "customer", "email": "kim@example.com"}', 'acct_1Golden', now(), now());
INSERT INTO g.charges (id, attrs, account_id, synced_at, observed_at) VALUES
  ('ch_3G1', '{"id": "ch_3G1", "object": "charge", "customer": "cus_G1"}', 'acct_1Golden', now(), now());

CREATE TEMP TABLE golden (id text, type text, created bigint, obj jsonb, want jsonb);
INSERT INTO golden VALUES
 ('evt_G1', 'charge.succeeded', 1710000001,
  '{"id": "ch_3G1", "object": "charge", "amount": 2000, "amount_captured": 2000, "amount_refunded": 0,
    "balance_transaction": "txn_G1", "billing_details": {"address": null, "email": null, "name": null, "phone": null},
    "captured": true, "created": 1710000001, "currency": "jpy", "customer": "cus_G1", "description": "Gold plan",
    "livemode": false, "metadata": {"order_id": "6735"}, "outcome": {"network_status": "approved_by_network", "type": "authorized"},
    "paid": true, "payment_intent": "pi_3G1", "refunded": false, "status": "succeeded"}',
  '{"eventId": "evt_G1", "timestamp": 1710000001000, "userId": "grace@example.com",
    "data": {"stripeAccount": "acct_1Golden", "stripe_event_id": "evt_G1", "stripe_event_type": "charge.succeeded", "stripe_object_id": "ch_3G1",
             "object": "charge", "customer_id": "cus_G1", "status": "succeeded", "currency": "jpy",
             "created": 1710000001, "livemode": false, "description": "Gold plan", "paid": true, "captured": true,
             "refunded": false, "payment_intent": "pi_3G1",
             "amount": 2000, "amount_minor": 2000, "amount_captured": 2000, "amount_captured_minor": 2000,
             "amount_refunded": 0, "amount_refunded_minor": 0}}'),
 ('evt_G2', 'customer.created', 1710000002,
  '{"id": "cus_G2", "object": "customer", "address": null, "balance": -1500, "created": 1710000002, "currency": "kwd",
    "email": "kim@example.com", "invoice_settings": {"default_payment_method": null}, "livemode": false,
    "metadata": {}, "name": "Kim"}',
  '{"eventId": "evt_G2", "timestamp": 1710000002000, "userId": "kim@example.com",
    "data": {"stripeAccount": "acct_1Golden", "stripe_event_id": "evt_G2", "stripe_event_type": "customer.created", "stripe_object_id": "cus_G2",
             "object": "customer", "customer_id": "cus_G2", "currency": "kwd", "created": 1710000002,
             "livemode": false, "email": "kim@example.com", "name": "Kim", "balance": -1.5, "balance_minor": -1500}}'),
 ('evt_G3', 'invoice.paid', 1710000003,
  '{"id": "in_G3", "object": "invoice", "amount_due": 1999, "amount_paid": 1999, "amount_remaining": 0,
    "billing_reason": "subscription_cycle", "created": 1710000003, "currency": "usd", "customer": "cus_G1",
    "customer_email": "grace@example.com", "lines": {"object": "list", "data": [{"id": "il_G3", "amount": 1999}]},
    "livemode": false, "metadata": {}, "number": "GOLD-0001", "status": "paid", "subscription": "sub_G5",
    "subtotal": 1999, "total": 1999}',
  '{"eventId": "evt_G3", "timestamp": 1710000003000, "userId": "grace@example.com",
    "data": {"stripeAccount": "acct_1Golden", "stripe_event_id": "evt_G3", "stripe_event_type": "invoice.paid", "stripe_object_id": "in_G3",
             "object": "invoice", "customer_id": "cus_G1", "status": "paid", "currency": "usd",
             "created": 1710000003, "livemode": false, "number": "GOLD-0001", "customer_email": "grace@example.com",
             "billing_reason": "subscription_cycle", "subscription": "sub_G5",
             "amount_due": 19.99, "amount_due_minor": 1999, "amount_paid": 19.99, "amount_paid_minor": 1999,
             "amount_remaining": 0, "amount_remaining_minor": 0, "subtotal": 19.99, "subtotal_minor": 1999,
             "total": 19.99, "total_minor": 1999}}'),
 ('evt_G4', 'refund.created', 1710000004,
  '{"id": "re_G4", "object": "refund", "amount": 500, "balance_transaction": "txn_G4", "charge": "ch_3G1",
    "created": 1710000004, "currency": "jpy", "metadata": {}, "payment_intent": "pi_3G1",
    "reason": "requested_by_customer", "status": "succeeded"}',
  '{"eventId": "evt_G4", "timestamp": 1710000004000, "userId": "grace@example.com",
    "data": {"stripeAccount": "acct_1Golden", "stripe_event_id": "evt_G4", "stripe_event_type": "refund.created", "stripe_object_id": "re_G4",
             "object": "refund", "customer_id": "cus_G1", "status": "succeeded", "currency": "jpy",
             "created": 1710000004, "charge": "ch_3G1", "payment_intent": "pi_3G1",
             "reason": "requested_by_customer", "amount": 500, "amount_minor": 500}}'),
 ('evt_G5', 'customer.subscription.created', 1710000005,
  '{"id": "sub_G5", "object": "subscription", "cancel_at_period_end": false, "created": 1710000005,
    "currency": "kwd", "customer": "cus_G2", "livemode": false, "metadata": {}, "status": "active",
    "items": {"object": "list", "data": [
      {"id": "si_G5", "object": "subscription_item", "quantity": 3,
       "price": {"id": "price_G5", "object": "price", "currency": "kwd", "unit_amount": 2500}}]}}',
  '{"eventId": "evt_G5", "timestamp": 1710000005000, "userId": "kim@example.com",
    "data": {"stripeAccount": "acct_1Golden", "stripe_event_id": "evt_G5", "stripe_event_type": "customer.subscription.created",
             "stripe_object_id": "sub_G5", "object": "subscription", "customer_id": "cus_G2",
             "status": "active", "currency": "kwd", "created": 1710000005, "livemode": false,
             "cancel_at_period_end": false, "amount": 7.5, "amount_minor": 7500}}');

SELECT stripe_sync.outbox_add('g', array_agg(id ORDER BY id), array_agg(type ORDER BY id),
                              array_agg(created ORDER BY id), array_agg(obj::text ORDER BY id), 0) AS written
  FROM golden;
-- each payload: the hand-written one, exactly
SELECT g.type, o.event_name,
       o.payload = g.want AS as_written,
       (SELECT jsonb_object_agg(k, o.payload->'data'->k) FROM jsonb_object_keys(o.payload->'data') k
         WHERE NOT g.want->'data' ? k) AS extra,
       (SELECT jsonb_object_agg(k, g.want->'data'->k) FROM jsonb_object_keys(g.want->'data') k
         WHERE o.payload->'data'->k IS DISTINCT FROM g.want->'data'->k) AS missing_or_different
  FROM golden g LEFT JOIN stripe_sync.outbox o ON o.source = 'g' AND o.event_id = g.id
 ORDER BY g.id;

SELECT stripe_sync.drop_source('g');
DROP SCHEMA g CASCADE;
DROP SERVER g_stripe CASCADE;
