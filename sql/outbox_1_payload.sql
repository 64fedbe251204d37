-- Outbox rows: the event map, Intempt payloads (golden), history, userId rules
\getenv fake_url FAKE_STRIPE_URL
\set SHOW_CONTEXT never
SET client_min_messages = warning;

-- the default map of SPEC §5: 17 Stripe event types, 14 Intempt names
SELECT count(*) AS types, count(DISTINCT intempt_event) AS names FROM stripe_sync.event_map;
SELECT intempt_event, string_agg(stripe_event, ', ' ORDER BY stripe_event) AS stripe_events
  FROM stripe_sync.event_map GROUP BY 1 ORDER BY 1;

-- amounts in major units: two, zero and three decimals
SELECT c, stripe_sync.currency_exponent(c) AS exponent, stripe_sync.major_units(1234, c) AS major
  FROM unnest(ARRAY['usd', 'EUR', 'jpy', 'krw', 'ugx', 'kwd', 'bhd', 'isk']) c;
SELECT stripe_sync.major_units(1200, 'usd') AS twelve, stripe_sync.major_units(-5, 'eur') AS minus_5_cents;

-- a source (no destination: nothing ships from here) and its local tables
CREATE SERVER ob_stripe FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_url :'fake_url');
CREATE USER MAPPING FOR CURRENT_USER SERVER ob_stripe OPTIONS (api_key 'sk_test_fake');
CREATE SCHEMA ob;
SELECT stripe_sync.create_source('ob', server => 'ob_stripe', target_schema => 'ob', objects => ARRAY['customers', 'charges']);
SELECT stripe_sync.alter_source('ob', enabled => false);
-- the account its rows are keyed by, as its first sync learns it
UPDATE stripe_sync.sources SET account_id = 'acct_fake000000000' WHERE name = 'ob';
INSERT INTO ob.customers (id, attrs, account_id, synced_at, observed_at) VALUES
  ('cus_A', '{"id": "cus_A", "object": "customer", "email": "ada@example.com"}', 'acct_fake000000000', now(), now()),
  ('cus_B', '{"id": "cus_B", "object": "customer", "email": null}', 'acct_fake000000000', now(), now()),
  -- another account's row of the same id: never this source's
  ('cus_A', '{"id": "cus_A", "object": "customer", "email": "other@example.com"}', 'acct_other', now(), now());
INSERT INTO ob.charges (id, attrs, account_id, synced_at, observed_at) VALUES
  ('ch_1', '{"id": "ch_1", "object": "charge", "customer": "cus_A"}', 'acct_fake000000000', now(), now()),
  ('ch_3', '{"id": "ch_3", "object": "charge", "customer": null, "billing_details": {"email": "guest3@example.com"}}', 'acct_fake000000000', now(), now());

-- a destination must be an intempt server
SELECT stripe_sync.alter_source('ob', destination => 'ob_stripe');
CREATE SERVER ob_intempt FOREIGN DATA WRAPPER intempt OPTIONS (org 'acme', project 'web', source_id '123456789');

-- one event of each mapped type, and one unmapped (customer.deleted)
CREATE TEMP TABLE ev (id text, type text, created bigint, obj jsonb);
INSERT INTO ev VALUES
 ('evt_01', 'charge.succeeded', 1700000001, '{"id": "ch_1", "object": "charge", "amount": 1234, "amount_captured": 1234, "amount_refunded": 0, "application_fee_amount": null, "currency": "usd", "customer": "cus_A", "status": "succeeded", "paid": true, "refunded": false, "payment_intent": "pi_1", "created": 1700000001, "livemode": false, "metadata": {"order": "42"}}'),
 ('evt_02', 'charge.failed', 1700000002, '{"id": "ch_2", "object": "charge", "amount": 500, "currency": "jpy", "customer": null, "billing_details": {"email": "guest@example.com"}, "status": "failed", "failure_code": "card_declined", "failure_message": "Your card was declined.", "created": 1700000002, "livemode": false}'),
 ('evt_03', 'customer.created', 1700000003, '{"id": "cus_A", "object": "customer", "email": "ada@example.com", "name": "Ada", "balance": 0, "currency": "usd", "created": 1700000003, "livemode": false}'),
 ('evt_04', 'customer.updated', 1700000004, '{"id": "cus_B", "object": "customer", "email": null, "name": "Bob", "balance": -250, "currency": "eur", "created": 1700000000, "livemode": false}'),
 ('evt_05', 'invoice.created', 1700000005, '{"id": "in_1", "object": "invoice", "customer": "cus_A", "status": "draft", "currency": "kwd", "amount_due": 12345, "amount_paid": 0, "amount_remaining": 12345, "subtotal": 12345, "total": 12345, "billing_reason": "subscription_create", "subscription": "sub_1", "created": 1700000005, "livemode": false}'),
 ('evt_06', 'invoice.updated', 1700000006, '{"id": "in_1", "object": "invoice", "customer": "cus_A", "status": "open", "currency": "kwd", "amount_due": 12345, "amount_paid": 0, "amount_remaining": 12345, "total": 12345, "number": "INV-0001", "created": 1700000005}'),
 ('evt_07', 'invoice.paid', 1700000007, '{"id": "in_1", "object": "invoice", "customer": "cus_A", "status": "paid", "currency": "kwd", "amount_due": 12345, "amount_paid": 12345, "amount_remaining": 0, "total": 12345, "number": "INV-0001", "created": 1700000005}'),
 ('evt_08', 'invoice.voided', 1700000008, '{"id": "in_2", "object": "invoice", "customer": "cus_B", "customer_email": "bob@billing.example", "status": "void", "currency": "usd", "amount_due": 700, "total": 700, "created": 1700000000}'),
 ('evt_09', 'invoice.marked_uncollectible', 1700000009, '{"id": "in_3", "object": "invoice", "customer": {"id": "cus_A", "object": "customer"}, "status": "uncollectible", "currency": "usd", "amount_due": 900, "amount_remaining": 900, "total": 900, "created": 1700000000}'),
 ('evt_10', 'payment_intent.created', 1700000010, '{"id": "pi_1", "object": "payment_intent", "amount": 1234, "amount_received": 0, "amount_capturable": 0, "currency": "usd", "customer": "cus_A", "status": "requires_payment_method", "created": 1700000010}'),
 ('evt_11', 'payment_intent.succeeded', 1700000011, '{"id": "pi_2", "object": "payment_intent", "amount": 2000, "amount_received": 2000, "currency": "eur", "customer": null, "latest_charge": "ch_3", "receipt_email": null, "status": "succeeded", "created": 1700000011}'),
 ('evt_12', 'refund.created', 1700000012, '{"id": "re_1", "object": "refund", "amount": 1234, "charge": "ch_1", "currency": "usd", "status": "succeeded", "reason": "requested_by_customer", "payment_intent": "pi_1", "created": 1700000012}'),
 ('evt_13', 'application_fee.refunded', 1700000013, '{"id": "fee_1", "object": "application_fee", "amount": 100, "amount_refunded": 100, "charge": "ch_9", "currency": "usd", "refunded": true, "created": 1700000000}'),
 ('evt_14', 'customer.subscription.created', 1700000014, '{"id": "sub_1", "object": "subscription", "customer": "cus_B", "status": "active", "currency": "eur", "cancel_at_period_end": false, "items": {"object": "list", "data": [{"id": "si_1", "price": {"id": "price_1", "unit_amount": 999}, "quantity": 2}, {"id": "si_2", "price": {"id": "price_2", "unit_amount": 1}}]}, "created": 1700000014}'),
 ('evt_15', 'customer.subscription.updated', 1700000015, '{"id": "sub_1", "object": "subscription", "customer": "cus_B", "status": "past_due", "currency": "eur", "items": {"data": [{"price": {"unit_amount": 999}, "quantity": 3}]}, "created": 1700000014}'),
 ('evt_16', 'customer.subscription.paused', 1700000016, '{"id": "sub_1", "object": "subscription", "customer": "cus_B", "status": "paused", "currency": "eur", "items": {"data": [{"price": {"unit_amount": null}, "quantity": 1}]}, "created": 1700000014}'),
 ('evt_17', 'customer.subscription.resumed', 1700000017, '{"id": "sub_1", "object": "subscription", "customer": "cus_B", "status": "active", "currency": "eur", "created": 1700000014}'),
 ('evt_18', 'customer.deleted', 1700000018, '{"id": "cus_B", "object": "customer", "deleted": true}');

SELECT stripe_sync.outbox_add('ob', array_agg(id ORDER BY id), array_agg(type ORDER BY id),
                              array_agg(created ORDER BY id), array_agg(obj::text ORDER BY id), 0) AS written
  FROM ev;
-- the golden payloads
SELECT event_name, stripe_event, event_id = payload->>'eventId' AS same_id, payload
  FROM stripe_sync.outbox WHERE source = 'ob' ORDER BY id;
-- an event read again (overlap, or a page again after a crash) is not written twice
SELECT stripe_sync.outbox_add('ob', ARRAY['evt_01'], ARRAY['charge.succeeded'], ARRAY[1700000001::bigint],
                              ARRAY[(SELECT obj::text FROM ev WHERE id = 'evt_01')], 0) AS written_again;
-- a disabled mapping writes nothing; a renamed one writes the new name
UPDATE stripe_sync.event_map SET enabled = false WHERE stripe_event = 'charge.failed';
UPDATE stripe_sync.event_map SET intempt_event = 'Payment received' WHERE stripe_event = 'charge.succeeded';
SELECT stripe_sync.outbox_add('ob', ARRAY['evt_20', 'evt_21'], ARRAY['charge.failed', 'charge.succeeded'],
                              ARRAY[1700000020, 1700000021]::bigint[],
                              ARRAY['{"id": "ch_20", "object": "charge", "status": "failed", "amount": 1, "currency": "usd"}',
                                    '{"id": "ch_21", "object": "charge", "status": "succeeded", "amount": 2, "currency": "usd"}'], 0) AS written;
SELECT event_name, event_id FROM stripe_sync.outbox WHERE event_id IN ('evt_20', 'evt_21');
UPDATE stripe_sync.event_map SET enabled = true WHERE stripe_event = 'charge.failed';
UPDATE stripe_sync.event_map SET intempt_event = 'Charge succeeded' WHERE stripe_event = 'charge.succeeded';

-- history: backfilled objects stand for their creation (and success) before history_until
SELECT stripe_sync.outbox_add('ob', NULL, NULL, ARRAY[1600000000, 1600000001, 1600000002, 1600000003, 1600000004, 1600000005, 1600000006, 1800000000]::bigint[],
  ARRAY['{"id": "cus_H", "object": "customer", "email": "h@example.com", "created": 1600000000}',
        '{"id": "ch_H1", "object": "charge", "status": "succeeded", "customer": "cus_H", "amount": 100, "currency": "usd", "created": 1600000001}',
        '{"id": "ch_H2", "object": "charge", "status": "pending", "amount": 100, "currency": "usd", "created": 1600000002}',
        '{"id": "pi_H", "object": "payment_intent", "status": "succeeded", "amount": 300, "currency": "usd", "created": 1600000003}',
        '{"id": "in_H", "object": "invoice", "status": "paid", "total": 300, "currency": "usd", "created": 1600000004}',
        '{"id": "prod_H", "object": "product", "created": 1600000005}',
        '{"id": "sub_H", "object": "subscription", "status": "canceled", "customer": "cus_H", "created": 1600000006}',
        '{"id": "cus_N", "object": "customer", "created": 1800000000}'], 1700000000) AS history_written;
SELECT event_name, event_id, payload->>'timestamp' AS ts, payload->>'userId' AS user_id,
       payload->'data'->>'historical' AS historical
  FROM stripe_sync.outbox WHERE event_id LIKE 'hist\_%' ORDER BY id;

-- one identity per customer: cus_H's creation, its charge and its subscription
-- all go to h@example.com, the customer arriving in the same batch
SELECT DISTINCT payload->>'userId' AS one_identity FROM stripe_sync.outbox
 WHERE event_id IN ('hist_customer.created_cus_H', 'hist_charge.succeeded_ch_H1',
                    'hist_customer.subscription.created_sub_H');

-- dead rows come back with retry_dead()
UPDATE stripe_sync.outbox SET state = 'dead', last_error = 'HTTP 400', response = '{"error": "bad"}'
 WHERE event_id IN ('evt_01', 'evt_02');
SELECT stripe_sync.retry_dead() AS requeued;
SELECT state, count(*) FROM stripe_sync.outbox WHERE source = 'ob' GROUP BY 1;

-- any role may read the outbox and the map (it sees only its own sources'
-- rows, see 009_privileges) and call retry_dead (on its own sources)
CREATE ROLE ob_nobody;
SELECT has_table_privilege('ob_nobody', 'stripe_sync.outbox', 'SELECT') AS outbox_readable,
       has_table_privilege('ob_nobody', 'stripe_sync.event_map', 'SELECT') AS map_readable,
       has_function_privilege('ob_nobody', 'stripe_sync.retry_dead(text)', 'EXECUTE') AS can_retry;
DROP ROLE ob_nobody;

-- dropping the source drops its undelivered events with it
SELECT stripe_sync.drop_source('ob');
SELECT count(*) FROM stripe_sync.outbox;
DROP SCHEMA ob CASCADE;
DROP SERVER ob_stripe, ob_intempt CASCADE;

-- the shipper's settings: batches of up to outbox_batch_size events, up to
-- outbox_concurrency of them in flight at once; both reloadable, not per session
SELECT name, setting, min_val, max_val, context FROM pg_settings
 WHERE name IN ('stripe_sync.outbox_batch_size', 'stripe_sync.outbox_concurrency') ORDER BY name;
SET stripe_sync.outbox_concurrency = 2;
ALTER SYSTEM SET stripe_sync.outbox_concurrency = 0;
ALTER SYSTEM SET stripe_sync.outbox_concurrency = 65;
