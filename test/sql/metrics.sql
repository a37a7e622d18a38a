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

-- the first claim (message 1) lapses (extend to 0): a lapsed claim counts as visible
SELECT mq.extend('met', :m1, '0') IS NOT NULL AS lapsed;
SELECT depth, in_flight, delayed FROM mq.metrics('met');

-- second (last) attempt lapses too: counted as visible until read or
-- maintain dead-letters it, then as dead_lettered
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

-- a rolled-back send uses a msg_id: total_sent counts it (documented), depth does not
BEGIN;
SELECT mq.send('met', '7') IS NOT NULL AS sent;
SELECT depth FROM mq.metrics('met');
ROLLBACK;
SELECT depth, total_sent FROM mq.metrics('met');

-- metrics reads without changing anything, and is one row per call
SELECT count(*) FROM (SELECT * FROM mq.metrics('met') UNION ALL SELECT * FROM mq.metrics('met.dead')) s;

SELECT mq.drop_queue('met'), mq.drop_queue('met.dead');
DROP EXTENSION mq;
