-- metrics: depth (visible), in_flight, delayed, dead_lettered, oldest_age_s,
-- total_sent, total_acked, through a message's whole life.  Ages are
-- compared with tolerances, never printed.
CREATE EXTENSION mq;
SELECT mq.create_queue('met.dead');
SELECT mq.create_queue('met', max_attempts => 2, dead_letter_queue => 'met.dead');

-- an empty queue
SELECT queue_name, depth, in_flight, delayed, dead_lettered, oldest_age_s, total_sent, total_acked FROM mq.metrics('met');

-- three visible, one delayed
SELECT count(*) FROM mq.send_batch('met', ARRAY['1', '2', '3']::jsonb[]);
SELECT mq.send('met', '4', delay => '1 hour') IS NOT NULL AS sent;
SELECT queue_name, depth, in_flight, delayed, dead_lettered, total_sent, total_acked,
       oldest_age_s > 0 AND oldest_age_s < 60 AS oldest_age_ok
  FROM mq.metrics('met');

-- one claimed: in flight
SELECT msg_id AS m1, payload FROM mq.read('met') \gset
SELECT :'payload' AS payload;
SELECT depth, in_flight, delayed, total_sent, total_acked FROM mq.metrics('met');

-- acked: gone, counted
SELECT mq.ack('met', msg_id) FROM mq.read('met');
SELECT depth, in_flight, delayed, total_sent, total_acked FROM mq.metrics('met');

-- nacked with a delay: delayed, not in flight
SELECT mq.nack('met', msg_id, receipt, '1 hour') FROM mq.read('met');
SELECT depth, in_flight, delayed, total_sent, total_acked FROM mq.metrics('met');

-- extending the first claim (message 1) by 0 releases it: visible again
SELECT mq.extend('met', :m1, '0') IS NOT NULL AS released;
SELECT depth, in_flight, delayed FROM mq.metrics('met');

-- the second (last) attempt lapses: a claim that lapses stays in flight
-- until its message is read again or, here, maintain dead-letters it
SELECT count(*) FROM mq.read('met', 10, '0');
SELECT depth, in_flight, delayed, dead_lettered FROM mq.metrics('met');
SELECT mq.maintain();
SELECT depth, in_flight, delayed, dead_lettered, oldest_age_s FROM mq.metrics('met');
SELECT depth, in_flight, delayed, dead_lettered, total_sent, total_acked,
       oldest_age_s > 0 AND oldest_age_s < 60 AS oldest_age_ok
  FROM mq.metrics('met.dead');

-- archive counts as acked; purge empties but keeps the totals
SELECT mq.send('met', '6') AS m6 \gset
SELECT mq.archive('met', :m6);
SELECT mq.purge('met');
SELECT depth, in_flight, delayed, dead_lettered, total_sent, total_acked, oldest_age_s FROM mq.metrics('met');

-- a rolled-back send uses a msg_id: total_sent counts it (documented); depth
-- counts committed messages only, so not even its own transaction sees it
BEGIN;
SELECT mq.send('met', '7') IS NOT NULL AS sent;
SELECT depth FROM mq.metrics('met');
ROLLBACK;
SELECT depth, total_sent FROM mq.metrics('met');

-- metrics reads without changing anything, and is one row per call
SELECT count(*) FROM (SELECT * FROM mq.metrics('met') UNION ALL SELECT * FROM mq.metrics('met.dead')) s;

-- The counts are kept as each change commits (src/metrics.c): after a mixed
-- workload on a keyed queue (sends, claims, acks, nacks, dead letters,
-- rollbacks, savepoints), they must equal a fresh count of the tables.
SELECT mq.create_queue('mk', ordering => 'key', max_attempts => 2, dead_letter_queue => 'met.dead',
                       retry_delay => '0');
-- counted now (empty), then kept by the changes
SELECT depth, in_flight, delayed, blocked FROM mq.metrics('mk');
SELECT count(*) FROM mq.send_batch('mk', (SELECT array_agg(to_jsonb(i)) FROM generate_series(1, 60) i),
                                     (SELECT array_agg('k' || (i % 7)) FROM generate_series(1, 60) i));
SELECT count(*) FROM mq.send_batch('mk', ARRAY['1', '2', '3', '4', '5']::jsonb[], delay => '1 hour');
SELECT count(*) FROM (SELECT mq.ack('mk', msg_id) FROM mq.read('mk', 3)) a;
SELECT count(*) FROM (SELECT mq.nack('mk', msg_id, receipt) FROM mq.read('mk', 2)) n;
BEGIN;
SELECT count(*) FROM (SELECT mq.ack('mk', msg_id) FROM mq.read('mk', 2)) a;
SELECT mq.send('mk', '"rolled back"', 'k1') IS NOT NULL AS sent;
ROLLBACK;
BEGIN;
SELECT count(*) FROM mq.read('mk', 2);
SAVEPOINT s;
SELECT count(*) FROM (SELECT mq.ack('mk', msg_id) FROM mq.read('mk', 1)) a;
ROLLBACK TO s;
SELECT mq.send('mk', '"kept"', 'k2') IS NOT NULL AS sent;
COMMIT;
-- the nacked ones come back and use their last attempt: dead letters
SELECT count(*) FROM (SELECT mq.nack('mk', msg_id, receipt) FROM mq.read('mk', 5)) n;
SELECT count(*) FROM mq.read('mk', 5, '0');
CREATE TEMP TABLE held AS SELECT msg_id FROM mq.read('mk', 5);
-- acks unblock their keys' next messages
SELECT count(*) FROM (SELECT mq.ack('mk', msg_id) FROM held ORDER BY msg_id LIMIT 3) a;
CREATE TEMP TABLE kept AS SELECT * FROM mq.metrics('mk');
SELECT depth, in_flight, delayed, blocked FROM kept;
SELECT mq._forget_queue(queue_id) FROM mq.queue WHERE queue_name = 'mk';
SELECT m.depth = k.depth AS depth, m.in_flight = k.in_flight AS in_flight,
       m.delayed = k.delayed AS delayed, m.blocked = k.blocked AS blocked
  FROM mq.metrics('mk') m, kept k;
-- mq.metrics_all: one row per queue, each what mq.metrics says of it
-- (oldest_age_s aside, which moves with the clock)
SELECT a.queue_name, a.depth, a.in_flight, a.delayed, a.dead_lettered, a.blocked,
       (a.depth, a.in_flight, a.delayed, a.dead_lettered, a.total_sent, a.total_acked, a.blocked)
       = (m.depth, m.in_flight, m.delayed, m.dead_lettered, m.total_sent, m.total_acked, m.blocked) AS same,
       a.oldest_age_s >= 0 AS age
  FROM mq.metrics_all() a CROSS JOIN LATERAL mq.metrics(a.queue_name) m
 ORDER BY 1;
SELECT mq.drop_queue('mk');

SELECT mq.drop_queue('met'), mq.drop_queue('met.dead');
DROP EXTENSION mq;
