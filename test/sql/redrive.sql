-- redrive: mq.dead_letters lists a dead-letter queue's letters without
-- claiming them, mq.redrive moves them back to their origin queues (all,
-- by origin, by msg_id, at most max_messages), keeps payload, key and
-- headers and records the redrive in the headers; rights, errors and
-- all-or-nothing.  Concurrent claims: test/specs/redrive_claim.spec.
-- pgTAP.  Never sleeps: claims made with visibility_timeout '0' lapse at
-- once, and mq.maintain() dead-letters them.
CREATE EXTENSION mq;
SET client_min_messages = warning;

SELECT plan(40);

SELECT mq.create_queue('rd_dlq');
SELECT mq.create_queue('rd_jobs', max_attempts => 1, dead_letter_queue => 'rd_dlq');
SELECT mq.create_queue('rd_keyed', max_attempts => 1, dead_letter_queue => 'rd_dlq', ordering => 'key');
SELECT mq.create_queue('rd_log', partitions => 1);

-- three letters from rd_jobs, one from rd_keyed, and one plain message
-- sent straight to the dead-letter queue (not a dead letter)
SELECT mq.send('rd_jobs', '{"n":1}', NULL, '{"trace":"a"}');
SELECT mq.send('rd_jobs', '{"n":2}');
SELECT mq.send('rd_jobs', '{"n":3}', NULL, '[1,2]');
SELECT mq.send('rd_keyed', '{"k":1}', 'key-1');
SELECT mq.send('rd_dlq', '{"direct":true}');
SELECT is((SELECT count(*) FROM mq.read('rd_jobs', 10, '0')), 3::bigint, 'three jobs delivered once');
SELECT is((SELECT count(*) FROM mq.read('rd_keyed', 10, '0')), 1::bigint, 'the keyed job delivered once');
SELECT mq.maintain();

-- ---- dead_letters --------------------------------------------------------
SELECT is((SELECT array_agg(origin || ':' || payload::text ORDER BY msg_id) FROM mq.dead_letters('rd_dlq')),
          ARRAY['rd_jobs:{"n": 1}', 'rd_jobs:{"n": 2}', 'rd_jobs:{"n": 3}', 'rd_keyed:{"k": 1}'],
          'dead_letters lists the four letters in msg_id order, not the direct message');
SELECT is((SELECT count(*) FROM mq.dead_letters('rd_dlq', 'rd_keyed')), 1::bigint, 'dead_letters by origin');
SELECT is((SELECT count(*) FROM mq.dead_letters('rd_dlq', max_messages => 2)), 2::bigint, 'dead_letters max_messages');
SELECT is((SELECT dead_letter->>'reason' FROM mq.dead_letters('rd_dlq') LIMIT 1),
          'visibility timeout lapsed on the last attempt', 'dead_letters shows why');
SELECT is((SELECT depth FROM mq.metrics('rd_dlq')), 5::bigint, 'dead_letters claims nothing');

-- ---- redrive: one by msg_id, rolled back -----------------------------------
BEGIN;
SELECT is((SELECT count(*) FROM mq.redrive('rd_dlq', msg_ids => ARRAY[(SELECT min(msg_id) FROM mq.dead_letters('rd_dlq'))])),
          1::bigint, 'redrive by msg_id moves one');
ROLLBACK;
SELECT is((SELECT count(*) FROM mq.dead_letters('rd_dlq')), 4::bigint, 'a rolled-back redrive moved nothing');
SELECT is((SELECT depth FROM mq.metrics('rd_jobs')), 0::bigint, 'and sent nothing');

-- ---- redrive by origin, at most 2 -----------------------------------------
CREATE TEMP TABLE moved AS SELECT * FROM mq.redrive('rd_dlq', 'rd_jobs', max_messages => 2);
SELECT is((SELECT array_agg(queue_name ORDER BY msg_id) FROM moved), ARRAY['rd_jobs', 'rd_jobs'],
          'redrive by origin, max_messages 2');
SELECT is((SELECT depth FROM mq.metrics('rd_jobs')), 2::bigint, 'the two are visible in rd_jobs');
SELECT is((SELECT depth FROM mq.metrics('rd_dlq')), 3::bigint, 'and gone from the dead-letter queue');
CREATE TEMP TABLE got AS SELECT * FROM mq.read('rd_jobs', 10, '0');
SELECT is((SELECT array_agg(msg_id ORDER BY msg_id) FROM got), (SELECT array_agg(new_msg_id ORDER BY msg_id) FROM moved),
          'new_msg_id names the redriven messages');
SELECT is((SELECT array_agg(payload::text ORDER BY msg_id) FROM got), ARRAY['{"n": 1}', '{"n": 2}'], 'payloads kept');
SELECT is((SELECT headers->>'trace' FROM got WHERE payload->>'n' = '1'), 'a', 'headers kept');
SELECT is((SELECT attempts FROM got LIMIT 1), 1, 'a redriven message starts with fresh attempts');
SELECT is((SELECT (headers->'mq.redrive'->>'count')::int FROM got WHERE payload->>'n' = '1'), 1, 'the redrive is recorded: count');
SELECT is((SELECT headers->'mq.redrive'->>'dead_letter_queue' FROM got WHERE payload->>'n' = '1'), 'rd_dlq',
          'the redrive is recorded: from where');
SELECT is((SELECT (headers->'mq.redrive'->>'dead_letter_msg_id')::bigint FROM got WHERE payload->>'n' = '1'),
          (SELECT min(msg_id) FROM moved), 'the redrive is recorded: the letter''s msg_id');
SELECT is((SELECT headers->'mq.redrive'->'dead_letter'->>'reason' FROM got WHERE payload->>'n' = '1'),
          'visibility timeout lapsed on the last attempt', 'the redrive is recorded: the dead letter');

-- the two die again (their one attempt lapsed) and are redriven again
SELECT mq.maintain();
SELECT is((SELECT count(*) FROM mq.redrive('rd_dlq', 'rd_jobs')), 3::bigint, 'redrive the rest of rd_jobs');
SELECT is((SELECT array_agg((headers->'mq.redrive'->>'count')::int ORDER BY payload->>'n') FROM mq.read('rd_jobs', 10, '1 hour')),
          ARRAY[2, 2, NULL], 'a second redrive counts 2; headers that are no object are kept as they are');

-- ---- an in-flight letter stays -------------------------------------------
SELECT is((SELECT count(*) FROM mq.read('rd_dlq', 10, '1 hour')), 2::bigint, 'a consumer of the dead-letter queue claims both');
SELECT is((SELECT count(*) FROM mq.redrive('rd_dlq')), 0::bigint, 'claimed letters are not redriven');
SELECT is((SELECT in_flight FROM mq.metrics('rd_dlq')), 2::bigint, 'and stay claimed');
SELECT is((SELECT count(*) FROM mq.dead_letters('rd_dlq')), 0::bigint, 'dead_letters lists no claimed letter');

-- ---- a keyed origin ------------------------------------------------------
SELECT mq.create_queue('rd_dlq2');
SELECT mq.create_queue('rd_keyed2', max_attempts => 1, dead_letter_queue => 'rd_dlq2', ordering => 'key');
SELECT mq.send('rd_keyed2', '{"k":1}', 'key-1');
SELECT count(*) FROM mq.read('rd_keyed2', 1, '0');
SELECT mq.maintain();
SELECT mq.send('rd_keyed2', '{"k":2}', 'key-1');
SELECT is((SELECT queue_name FROM mq.redrive('rd_dlq2')), 'rd_keyed2', 'a keyed letter is redriven');
SELECT is((SELECT array_agg(key || ':' || (payload->>'k')) FROM mq.read('rd_keyed2', 10, '1 hour')), ARRAY['key-1:2'],
          'with its key, behind the key''s newer message (only that one is visible)');
SELECT is((SELECT blocked FROM mq.metrics('rd_keyed2')), 1::bigint, 'the redriven one waits for its key');

-- ---- rights --------------------------------------------------------------
CREATE ROLE regress_rd_reader;
SELECT mq.grant('rd_dlq2', 'regress_rd_reader', 'consume');
SELECT mq.create_queue('rd_jobs2', max_attempts => 1, dead_letter_queue => 'rd_dlq2');
SELECT mq.send('rd_jobs2', '{"r":1}');
SELECT count(*) FROM mq.read('rd_jobs2', 1, '0');
SELECT mq.maintain();
SET ROLE regress_rd_reader;
SELECT is((SELECT count(*) FROM mq.dead_letters('rd_dlq2')), 1::bigint, 'a consumer of the dead-letter queue lists its letters');
SELECT throws_ok($$SELECT * FROM mq.redrive('rd_dlq2')$$, '42501', NULL, 'redrive needs the send right on the origin');
RESET ROLE;
SELECT is((SELECT count(*) FROM mq.dead_letters('rd_dlq2')), 1::bigint, 'the refused redrive moved nothing');
SET ROLE regress_rd_reader;
SELECT throws_ok($$SELECT * FROM mq.dead_letters('rd_dlq')$$, '42501', NULL, 'dead_letters needs the consume right');
RESET ROLE;

-- ---- bad input -----------------------------------------------------------
SELECT throws_ok($$SELECT * FROM mq.redrive(NULL)$$, '22004', NULL, 'NULL dead_letter_queue');
SELECT throws_ok($$SELECT * FROM mq.dead_letters('rd_dlq', max_messages => 0)$$, '22023', NULL, 'max_messages out of range');
SELECT throws_ok($$SELECT * FROM mq.redrive('rd_nope')$$, '42704', NULL, 'no such queue');
SELECT throws_ok($$SELECT * FROM mq.dead_letters('rd_log')$$, '42809', NULL, 'a partitioned queue has no dead letters');
-- a letter whose origin was dropped: an error, and nothing moved
SELECT mq.drop_queue('rd_jobs2');
SELECT throws_ok($$SELECT * FROM mq.redrive('rd_dlq2')$$, '42704', NULL, 'origin dropped: 42704');
SELECT is((SELECT count(*) FROM mq.dead_letters('rd_dlq2')), 1::bigint, 'and the letter stays');

SELECT * FROM finish();
SELECT mq.drop_queue(q) FROM unnest(ARRAY['rd_jobs', 'rd_keyed', 'rd_keyed2', 'rd_log', 'rd_dlq', 'rd_dlq2']) q;
DROP ROLE regress_rd_reader;
DROP EXTENSION mq;
