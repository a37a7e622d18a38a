-- Keyed ordering in work queues (ordering => 'key').
\set VERBOSITY terse
CREATE EXTENSION mq;

-- option checks
SELECT mq.create_queue('bad', ordering => 'fifo');
SELECT mq.create_queue('bad', ordering => NULL);
SELECT mq.create_queue('kdlq', ordering => 'key');
SELECT mq.create_queue('x', dead_letter_queue => 'kdlq');
SELECT mq.drop_queue('kdlq');

SELECT mq.create_queue('dlq');
SELECT mq.create_queue('k', ordering => 'key', max_attempts => 2, retry_delay => '0',
                       dead_letter_queue => 'dlq');
SELECT ordering FROM mq.queues WHERE queue_name = 'k';
-- the messages, to look at blocked flags (tests run as superuser): the
-- queue's segments and its delayed table
SELECT format('(SELECT * FROM mq.q_%1$s_0 UNION ALL SELECT * FROM mq.q_%1$s_1 UNION ALL SELECT * FROM mq.q_%1$s_2'
              ' UNION ALL SELECT * FROM mq.q_%1$s_3 UNION ALL SELECT * FROM mq.q_%1$s_d) m', queue_id) AS qt
  FROM mq.queue WHERE queue_name = 'k' \gset

-- a batch keeps its own order per key; unkeyed messages are never blocked
SELECT count(*) FROM mq.send_batch('k',
    ARRAY['{"n":1}', '{"n":1}', '{"n":2}', '{"n":0}', '{"n":3}', '{"n":2}']::jsonb[],
    ARRAY['a', 'b', 'a', NULL, 'a', 'b']);
SELECT depth, blocked FROM mq.metrics('k');

-- one message per key at a time
SELECT key, payload->>'n' AS n FROM mq.read('k', 10) ORDER BY msg_id;
SELECT count(*) FROM mq.read('k', 10);

-- a: nacked on the last attempt -> dead-lettered, and the key proceeds
SELECT mq.nack('k', msg_id, NULL, '0', 'boom') FROM :qt WHERE key = 'a' AND NOT blocked;
SELECT key, payload->>'n' AS n, attempts FROM mq.read('k', 10) ORDER BY msg_id;
SELECT mq.nack('k', msg_id, NULL, NULL, 'boom again') FROM :qt WHERE key = 'a' AND NOT blocked;
SELECT key, payload->>'n' AS n, dead_letter->>'error' AS error FROM mq.read('dlq', 10);
SELECT key, payload->>'n' AS n FROM mq.read('k', 10) ORDER BY msg_id;

-- acking b1 lets b2 through; an ack of a blocked message (no receipt) keeps
-- the key's head where it is
SELECT mq.ack('k', msg_id) FROM :qt WHERE key = 'b' AND NOT blocked;
SELECT mq.send('k', '{"n":4}', 'a') > 0 AS sent;
SELECT mq.ack('k', max(msg_id)) FROM :qt WHERE key = 'a';
SELECT key, payload->>'n' AS n, blocked FROM :qt ORDER BY msg_id;
SELECT key, payload->>'n' AS n FROM mq.read('k', 10) ORDER BY msg_id;

-- archive and batch ack unblock too
SELECT mq.archive('k', msg_id) FROM :qt WHERE key = 'a' AND NOT blocked;
SELECT mq.ack('k', array_agg(msg_id)) FROM :qt WHERE key = 'b' AND NOT blocked;
SELECT count(*) AS left FROM :qt;

-- one transaction sending 1000 distinct keys one by one holds a bounded
-- number of locks (src/keylocks.c): past 256 it takes every key of the
-- queue at once, which nothing else holds here
BEGIN;
SELECT count(mq.send('k', to_jsonb(i), 'many' || i)) FROM generate_series(1, 1000) i;
SELECT count(*) <= 258 AS bounded FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();
COMMIT;
SELECT count(*) AS sent_unblocked FROM :qt WHERE key LIKE 'many%' AND NOT blocked;

-- batches of 20,000 distinct keys (batches go up to 100,000) hold a
-- bounded number of locks, not one per key, which filled the server's lock
-- table (53200): a send_batch of two messages per key, a batch ack of the
-- 20,000 heads, which unblocks each key's second message, and the same
-- again in a transaction that already used the queue's keys
SELECT mq.create_queue('wide', ordering => 'key');
SELECT format('(SELECT * FROM mq.q_%1$s_0 UNION ALL SELECT * FROM mq.q_%1$s_1 UNION ALL SELECT * FROM mq.q_%1$s_2'
              ' UNION ALL SELECT * FROM mq.q_%1$s_3 UNION ALL SELECT * FROM mq.q_%1$s_d) m', queue_id) AS wt
  FROM mq.queue WHERE queue_name = 'wide' \gset
SELECT count(*) FROM mq.send_batch('wide',
    (SELECT array_agg(to_jsonb(i)) FROM generate_series(1, 40000) i),
    (SELECT array_agg('w' || (i % 20000)) FROM generate_series(1, 40000) i));
SELECT mq.ack('wide', (SELECT array_agg(msg_id) FROM :wt WHERE NOT blocked));
SELECT count(*) AS unblocked, count(DISTINCT key) AS keys FROM :wt WHERE NOT blocked;
BEGIN;
SELECT mq.send('wide', '0', 'w-first') > 0 AS sent;
SELECT mq.ack('wide', (SELECT array_agg(msg_id) FROM :wt WHERE key <> 'w-first'));
SELECT count(*) <= 258 AS bounded FROM pg_locks WHERE locktype = 'advisory' AND pid = pg_backend_pid();
COMMIT;
SELECT count(*) AS left FROM :wt;

DROP EXTENSION mq CASCADE;
