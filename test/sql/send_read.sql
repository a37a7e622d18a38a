-- send_read: mq.send, mq.send_batch, mq.read.  Plain output; msg_ids are
-- shown relative to the first one so the file does not depend on sequences.
CREATE EXTENSION mq;
\set VERBOSITY terse
SELECT mq.create_queue('sr');

-- send returns increasing msg_ids
SELECT mq.send('sr', '{"n": 1}') AS first_id \gset
SELECT mq.send('sr', '{"n": 2}', key => 'user-7', headers => '{"trace": "abc"}') - :first_id AS rel_id;
SELECT mq.send('sr', '"a string payload"', headers => '{"h": [1, 2]}') - :first_id AS rel_id;

-- read: oldest first, every column of mq.message, attempts 1 and receipt set
SELECT msg_id - :first_id AS rel_id, receipt IS NOT NULL AS has_receipt, key, payload, headers,
       attempts, last_error, dead_letter,
       enqueued_at <= clock_timestamp() AS enqueued_in_past,
       visible_at > clock_timestamp() + interval '29 seconds'
         AND visible_at <= clock_timestamp() + interval '30 seconds' AS vt_is_queue_default
  FROM mq.read('sr', 10) ORDER BY msg_id;

-- all three are now claimed: nothing is visible
SELECT count(*) AS visible_again FROM mq.read('sr', 10);

-- qty limits how many are claimed; rows come oldest first
SELECT count(*) FROM (SELECT mq.send('sr', jsonb_build_object('n', i)) FROM generate_series(10, 19) i) s;
SELECT payload->>'n' AS n, attempts FROM mq.read('sr', 3);
SELECT payload->>'n' AS n FROM mq.read('sr', 1);
SELECT payload->>'n' AS n FROM mq.read('sr', 10000);
SELECT count(*) FROM mq.read('sr', 10000);

-- an explicit visibility_timeout overrides the queue default
SELECT mq.send('sr', '{"n": 20}') IS NOT NULL AS sent;
SELECT visible_at > clock_timestamp() + interval '59 minutes'
       AND visible_at <= clock_timestamp() + interval '1 hour' AS vt_one_hour
  FROM mq.read('sr', 1, interval '1 hour');

-- visibility_timeout bounds: 0 and 12 hours are allowed, beyond is 22023
SELECT mq.send('sr', '{"n": 21}') IS NOT NULL AS sent;
SELECT payload, attempts FROM mq.read('sr', 1, '0');
-- a zero timeout lapses at once: the message is readable again, attempts 2
SELECT payload, attempts FROM mq.read('sr', 1, '12 hours');
SELECT count(*) FROM mq.read('sr', 1, '12 hours 0.000001 seconds');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM mq.read('sr', 1, '-0.000001 seconds');
\echo :LAST_ERROR_SQLSTATE

-- qty bounds: 1..10000
SELECT count(*) FROM mq.read('sr', 0);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM mq.read('sr', -1);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM mq.read('sr', 10001);
\echo :LAST_ERROR_SQLSTATE

-- delay: a delayed message is not visible, and is counted as delayed
SELECT mq.purge('sr');
SELECT mq.send('sr', '{"delayed": true}', delay => '1 hour') IS NOT NULL AS sent;
SELECT count(*) AS readable FROM mq.read('sr', 10);
SELECT depth, in_flight, delayed FROM mq.metrics('sr');
-- delay 0 (explicit) is visible at once
SELECT mq.send('sr', '{"delayed": false}', delay => '0') IS NOT NULL AS sent;
SELECT payload FROM mq.read('sr', 10);

-- send_batch: ids in array order, keys and headers matched by position
SELECT mq.purge('sr');
SELECT array_agg(id ORDER BY ord) = array_agg(id ORDER BY id) AS ids_in_array_order,
       count(*) AS sent
  FROM mq.send_batch('sr', ARRAY['{"b": 1}', '{"b": 2}', '{"b": 3}']::jsonb[],
                     ARRAY['k1', NULL, 'k3'],
                     ARRAY['{"x": 1}', NULL, '{"x": 3}']::jsonb[]) WITH ORDINALITY AS t(id, ord);
SELECT payload, key, headers, attempts FROM mq.read('sr', 10);
-- without keys and headers
SELECT count(*) FROM mq.send_batch('sr', ARRAY['1', '2']::jsonb[]);
SELECT payload, key, headers FROM mq.read('sr', 10);
-- with a delay
SELECT count(*) FROM mq.send_batch('sr', ARRAY['1', '2']::jsonb[], delay => '1 day');
SELECT count(*) AS readable FROM mq.read('sr', 10);
SELECT depth, delayed FROM mq.metrics('sr');
-- an empty batch sends nothing
SELECT count(*) FROM mq.send_batch('sr', '{}'::jsonb[]);
-- different array lengths: 22023, nothing sent
SELECT total_sent AS sent_before FROM mq.metrics('sr') \gset
SELECT count(*) FROM mq.send_batch('sr', ARRAY['1', '2']::jsonb[], ARRAY['only-one']);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM mq.send_batch('sr', ARRAY['1', '2']::jsonb[], NULL, ARRAY['{}', '{}', '{}']::jsonb[]);
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM mq.send_batch('sr', '{}'::jsonb[], ARRAY['k']);
\echo :LAST_ERROR_SQLSTATE
-- a NULL payload element: 22004, nothing sent (all or nothing)
SELECT count(*) FROM mq.send_batch('sr', ARRAY['1', NULL, '3']::jsonb[]);
\echo :LAST_ERROR_SQLSTATE
-- a multidimensional array: 22023
SELECT count(*) FROM mq.send_batch('sr', ARRAY[['1'], ['2']]::jsonb[]);
\echo :LAST_ERROR_SQLSTATE
SELECT total_sent = :sent_before AS nothing_sent, depth, delayed FROM mq.metrics('sr');

-- headers and keys survive as given, including JSON null and unicode
SELECT mq.purge('sr');
SELECT mq.send('sr', 'null', key => 'ключ-🔑', headers => '{"content-type": "application/json", "ñ": "✓"}') IS NOT NULL AS sent;
SELECT payload, key, headers FROM mq.read('sr');

-- a send in a rolled-back transaction never appears
SELECT mq.purge('sr');
BEGIN;
SELECT mq.send('sr', '{"rolled": "back"}') IS NOT NULL AS sent;
ROLLBACK;
SELECT count(*) AS after_rollback FROM mq.read('sr', 10);

-- a send inside the transaction is visible to that transaction's own read
BEGIN;
SELECT mq.send('sr', '{"own": "tx"}') IS NOT NULL AS sent;
SELECT payload FROM mq.read('sr');
ROLLBACK;
SELECT count(*) AS after_rollback FROM mq.read('sr', 10);

-- reading from an empty or unknown queue
SELECT count(*) FROM mq.read('sr', 5);
SELECT count(*) FROM mq.read('no.such.queue');
\echo :LAST_ERROR_SQLSTATE

SELECT mq.drop_queue('sr');
DROP EXTENSION mq;
