-- bad_input: every entry point with NULLs (22004), out-of-range qty, delay
-- and visibility_timeout (22023), unknown queues (42704), and odd but legal
-- input.  After the errors, nothing has changed and the backend is alive.
CREATE EXTENSION mq;
\set VERBOSITY terse
SELECT mq.create_queue('bi');
SELECT mq.send('bi', '{"keep": 1}') AS m1 \gset
SELECT receipt AS m1_r FROM mq.read('bi', 1) \gset
SELECT mq.send('bi', '{"keep": 2}') AS m2 \gset
SELECT mq.send('bi', '{"keep": 3}', delay => '1 hour') AS m3 \gset
SELECT mq.send('bi', '{"keep": 4}') AS m4 \gset

-- the state every failure below must leave untouched
CREATE TEMP TABLE before AS SELECT depth, in_flight, delayed, dead_lettered, total_sent, total_acked FROM mq.metrics('bi');
SELECT * FROM before;

-- ---- NULL where it makes no sense: 22004 ----------------------------------
SELECT mq.create_queue(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.create_queue('bi2', visibility_timeout => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.create_queue('bi2', max_attempts => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.create_queue('bi2', retry_delay => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.create_queue('bi2', retry_backoff => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.create_queue('bi2', retry_delay_max => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.drop_queue(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.purge(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM mq.metrics(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.send(NULL, '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.send('bi', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.send('bi', '{}', delay => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.send_batch(NULL, ARRAY['{}']::jsonb[]);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.send_batch('bi', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.send_batch('bi', ARRAY[NULL]::jsonb[]);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.send_batch('bi', ARRAY['{}']::jsonb[], delay => NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM mq.read(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM mq.read('bi', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.ack(NULL, 1::bigint);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.ack('bi', NULL::bigint);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.ack(NULL, ARRAY[1]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.ack('bi', NULL::bigint[]);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.ack('bi', ARRAY[:m1, NULL]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.nack(NULL, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.nack('bi', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.extend(NULL, 1, '1 minute');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.extend('bi', NULL, '1 minute');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.extend('bi', :m1, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.archive(NULL, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.archive('bi', NULL::bigint);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.archive(NULL, ARRAY[1]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.archive('bi', NULL::bigint[]);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.archive('bi', ARRAY[:m1, NULL]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.archive('bi', ARRAY[[1], [2]]::bigint[]);
\echo :LAST_ERROR_SQLSTATE

-- ---- negative or absurd values: 22023 -------------------------------------
SELECT * FROM mq.read('bi', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM mq.read('bi', -5);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM mq.read('bi', 2147483647);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM mq.read('bi', 1, '-1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM mq.read('bi', 1, '1 day');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM mq.read('bi', 1, '1 mon');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM mq.read('bi', 1, '1 day -86401 seconds');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM mq.read('bi', 1, '178000000 years');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.send('bi', '{}', delay => '-1 second');
\echo :LAST_ERROR_SQLSTATE
-- mixed signs: 1 month (30 days) - 31 days is negative
SELECT mq.send('bi', '{}', delay => '1 mon -31 days');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.send('bi', '{}', delay => '366 days');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.send('bi', '{}', delay => '13 mons');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.send('bi', '{}', delay => '-178000000 years');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.send_batch('bi', ARRAY['{}']::jsonb[], delay => '-1 microsecond');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.send_batch('bi', ARRAY['{}']::jsonb[], delay => '1000 years');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM mq.send_batch('bi', array_fill('{}'::jsonb, ARRAY[100001]));
\echo :LAST_ERROR_SQLSTATE
SELECT mq.nack('bi', :m1, :m1_r, '-1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.nack('bi', :m1, :m1_r, '400 days');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.extend('bi', :m1, '-1 second', :m1_r);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.extend('bi', :m1, '12 hours 1 second', :m1_r);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.ack('bi', ARRAY[[1, 2], [3, 4]]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.create_queue('bi2', max_attempts => -1);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.create_queue('bi2', max_attempts => 1001);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.create_queue('bi2', retry_backoff => 'NaN');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.create_queue('bi2', retry_backoff => 'Infinity');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.create_queue('bi2', retry_delay => '-1 second');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.create_queue('bi2', retry_delay_max => '8 days');
\echo :LAST_ERROR_SQLSTATE

-- ---- unknown queues: 42704 ------------------------------------------------
SELECT mq.send('nope', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.send_batch('nope', ARRAY['{}']::jsonb[]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM mq.read('nope');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.ack('nope', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.ack('nope', ARRAY[1]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.nack('nope', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.extend('nope', 1, '1 minute');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.archive('nope', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.purge('nope');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM mq.metrics('nope');
\echo :LAST_ERROR_SQLSTATE
-- names that could never be queues are simply unknown, whatever they contain
SELECT mq.send('', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.send('BI', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.send('bi ', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.send('bi''; DROP TABLE mq.queue; --', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.send('q_1', '{}');
\echo :LAST_ERROR_SQLSTATE
DO $$
BEGIN
    PERFORM count(*) FROM mq.read(repeat('x', 100000));
EXCEPTION WHEN OTHERS THEN
    RAISE NOTICE 'a 100000-byte name: %', SQLSTATE;
END $$;
SELECT count(*) FROM mq.read(repeat('é', 40));
\echo :LAST_ERROR_SQLSTATE
-- an unknown dead-letter queue makes create_queue fail before creating anything
SELECT mq.create_queue('bi2', dead_letter_queue => 'nope');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) AS queues FROM mq.queues;

-- ---- nothing changed ------------------------------------------------------
SELECT m = b AS metrics_unchanged
  FROM (SELECT depth, in_flight, delayed, dead_lettered, total_sent, total_acked FROM mq.metrics('bi')) m,
       before b;
-- the in-flight message still holds its claim and receipt
SELECT mq.extend('bi', :m1, '1 minute', :m1_r) IS NOT NULL AS claim_intact;
-- the visible messages are intact and still in order
SELECT msg_id = :m2 AS is_m2, payload, attempts FROM mq.read('bi', 1, '0');
SELECT array_agg(payload->>'keep' ORDER BY msg_id) AS visible FROM mq.read('bi', 10);

-- ---- odd but legal input --------------------------------------------------
SELECT mq.purge('bi');
-- a 5 MB payload
SELECT mq.send('bi', jsonb_build_object('blob', repeat('x', 5 * 1024 * 1024))) IS NOT NULL AS sent;
SELECT length(payload->>'blob') AS blob_length FROM mq.read('bi');
-- every JSON type as payload and as headers
SELECT count(*) FROM mq.send_batch('bi', ARRAY['null', 'true', '0', '-1.5e30', '""', '[]', '{}', '[[[[[[[[[[1]]]]]]]]]]']::jsonb[],
                                   NULL, ARRAY['[]', 'null', '1', '"h"', '{}', NULL, '{"a": {"b": null}}', 'false']::jsonb[]);
SELECT payload, headers FROM mq.read('bi', 10);
-- unicode, control characters, a 100 kB key; keys are opaque text
SELECT mq.send('bi', '{"emoji": "🦀", "rtl": "שלום"}', key => E'ключ-🔑\t\n') IS NOT NULL AS sent;
SELECT payload, key = E'ключ-🔑\t\n' AS key_intact FROM mq.read('bi');
SELECT mq.send('bi', '{}', key => repeat('k', 100000)) IS NOT NULL AS sent;
SELECT length(key) FROM mq.read('bi');
SELECT mq.send('bi', '{}', key => '') IS NOT NULL AS sent;
SELECT key = '' AS empty_key FROM mq.read('bi');
-- the largest legal values
SELECT mq.send('bi', '{}', delay => '365 days') IS NOT NULL AS sent;
SELECT mq.send('bi', '{}', delay => '12 mons') IS NOT NULL AS sent;
SELECT delayed FROM mq.metrics('bi');
SELECT mq.ack('bi', 9223372036854775807), mq.ack('bi', -9223372036854775808),
       mq.ack('bi', 1, -1), mq.nack('bi', 9223372036854775807, 9223372036854775807, '365 days', repeat('e', 10000)),
       mq.extend('bi', 9223372036854775807, '12 hours', -1), mq.archive('bi', 0);
SELECT mq.ack('bi', ARRAY(SELECT generate_series(1, 100000)::bigint)) >= 0 AS big_batch_ok;
-- names at the limit work everywhere
SELECT mq.create_queue(repeat('Z', 48));
SELECT mq.send(repeat('Z', 48), '{}') IS NOT NULL AS sent;
SELECT count(*) FROM mq.read(repeat('Z', 48));
SELECT mq.drop_queue(repeat('Z', 48));

-- the backend survived everything
SELECT 'alive' AS backend;

SELECT mq.drop_queue('bi');
DROP EXTENSION mq;
