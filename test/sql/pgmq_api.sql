-- pgmq_api: the mq_pgmq extension, pgmq's SQL API in schema pgmq on top of
-- mq (docs/pgmq.md).  Every function, queues made with pgmq.create and with
-- mq.create_queue used both ways, and the error cases.  Plain output; times
-- are compared, never printed.  The one wait (read_with_poll) is for a
-- message delayed 2 seconds, with a 10-second bound.
\set VERBOSITY terse

-- mq_pgmq needs mq
CREATE EXTENSION mq_pgmq;
CREATE EXTENSION mq;
CREATE EXTENSION mq_pgmq;

-- pgmq's types, with pgmq's column names and types
SELECT t.typname, a.attnum, a.attname, format_type(a.atttypid, a.atttypmod)
  FROM pg_type t JOIN pg_attribute a ON a.attrelid = t.typrelid
 WHERE t.typnamespace = 'pgmq'::regnamespace AND t.typtype = 'c' AND a.attnum > 0
   AND t.typname IN ('message_record', 'metrics_result', 'queue_record')
 ORDER BY 1, 2;

-- Helper: when a message becomes readable again, in seconds from now, from
-- mq's storage (the segments mq.q_<id>_0..3 and the delayed table
-- mq.q_<id>_d, as in ack_nack.sql); NULL when the message is gone.
-- These helpers are the only places that look at mq's storage.
CREATE FUNCTION pg_temp.vt_in(p_queue text, p_msg_id bigint) RETURNS double precision
LANGUAGE plpgsql AS $$
DECLARE
    v double precision;
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['_0', '_1', '_2', '_3', '_d'] LOOP
        EXECUTE format('SELECT extract(epoch FROM vt - clock_timestamp())::float8 FROM mq.%I WHERE msg_id = $1',
                       'q_' || (SELECT queue_id FROM mq.queue WHERE queue_name = p_queue) || t)
           INTO v USING p_msg_id;
        EXIT WHEN v IS NOT NULL;
    END LOOP;
    RETURN v;
END $$;
-- the archived messages of a queue (mq's archive table mq.a_<id>)
CREATE FUNCTION pg_temp.archived(p_queue text) RETURNS TABLE (msg_id bigint, payload jsonb)
LANGUAGE plpgsql AS $$
BEGIN
    RETURN QUERY EXECUTE format('SELECT msg_id, payload FROM mq.%I ORDER BY msg_id',
                                'a_' || (SELECT queue_id FROM mq.queue WHERE queue_name = p_queue));
END $$;

-- ---------------------------------------------------------------------------
-- create, create_unlogged, create_partitioned, list_queues

SELECT pgmq.create('pg');
-- idempotent, as pgmq's: a second call does nothing
SELECT pgmq.create('pg');
-- an mq work queue, with mq's most attempts (pgmq never dead-letters)
SELECT queue_name, max_attempts, partitions, ordering FROM mq.queues WHERE queue_name = 'pg';
-- unlogged and partitioned pgmq queues are ordinary mq work queues
SELECT pgmq.create_unlogged('pg_unlogged');
SELECT pgmq.create_partitioned('pg_part', '10000', '100000');
SELECT pgmq.create_partitioned('pg_part');
-- a queue made with mq, and an mq partitioned queue (a log)
SELECT mq.create_queue('native', visibility_timeout => '1 minute');
SELECT mq.create_queue('native_log', partitions => 2);
SELECT pgmq.create('native');
SELECT queue_name, is_partitioned, is_unlogged, created_at <= now() AS created_in_past
  FROM pgmq.list_queues();
SELECT queue_name, is_partitioned, is_unlogged FROM pgmq.meta ORDER BY 1;

-- ---------------------------------------------------------------------------
-- send: every overload; headers; delay as seconds and as a timestamp

SELECT pgmq.send('pg', '{"n": 1}') AS first_id \gset
SELECT send - :first_id AS rel_id FROM pgmq.send('pg', '{"n": 2}', '{"h": 2}'::jsonb);
SELECT send - :first_id AS rel_id FROM pgmq.send('pg', '{"n": 3}', 3600);
SELECT send - :first_id AS rel_id FROM pgmq.send('pg', '{"n": 4}', clock_timestamp() + interval '2 hours');
SELECT send - :first_id AS rel_id FROM pgmq.send('pg', '{"n": 5}', '{"h": 5}'::jsonb, 3600);
SELECT send - :first_id AS rel_id FROM pgmq.send('pg', '{"n": 6}', '{"h": 6}'::jsonb, clock_timestamp() + interval '2 hours');
-- a negative delay or a past time: readable at once, as in pgmq
SELECT send - :first_id AS rel_id FROM pgmq.send('pg', '{"n": 7}', -10);
SELECT send - :first_id AS rel_id FROM pgmq.send('pg', '{"n": 8}', '{"h": 8}'::jsonb, now() - interval '1 day');
-- a NULL message is sent as JSON null
SELECT send - :first_id AS rel_id FROM pgmq.send('pg', NULL);
-- the delays as stored: an hour, two hours
SELECT i AS rel_id, round(pg_temp.vt_in('pg', :first_id + i) / 60) AS minutes FROM generate_series(2, 5) i;
SELECT depth, delayed FROM mq.metrics('pg');

-- read: the readable ones, oldest first, in pgmq's columns
SELECT msg_id - :first_id AS rel_id, read_ct, message, headers,
       enqueued_at <= clock_timestamp() AS enqueued_in_past,
       vt > clock_timestamp() + interval '29 seconds' AND vt <= clock_timestamp() + interval '30 seconds' AS vt_30s
  FROM pgmq.read('pg', 30, 10);
SELECT count(*) AS readable FROM pgmq.read('pg', 30, 10);
SELECT mq.purge('pg');

-- ---------------------------------------------------------------------------
-- send_batch: every overload

SELECT ARRAY(SELECT s - :first_id FROM pgmq.send_batch('pg', ARRAY['{"b": 1}', NULL]::jsonb[]) s) AS rel_ids;
SELECT ARRAY(SELECT s - :first_id FROM pgmq.send_batch('pg', ARRAY['{"b": 3}', '{"b": 4}']::jsonb[],
                                                       ARRAY['{"h": 3}', NULL]::jsonb[]) s) AS rel_ids;
SELECT count(*) FROM pgmq.send_batch('pg', ARRAY['{"b": 5}']::jsonb[], 3600);
SELECT count(*) FROM pgmq.send_batch('pg', ARRAY['{"b": 6}']::jsonb[], clock_timestamp() + interval '1 hour');
SELECT count(*) FROM pgmq.send_batch('pg', ARRAY['{"b": 7}']::jsonb[], ARRAY['{"h": 7}']::jsonb[], 3600);
SELECT count(*) FROM pgmq.send_batch('pg', ARRAY['{"b": 8}']::jsonb[], ARRAY['{"h": 8}']::jsonb[],
                                     clock_timestamp() + interval '1 hour');
SELECT count(*) FROM pgmq.send_batch('pg', ARRAY[]::jsonb[]);
SELECT depth, delayed FROM mq.metrics('pg');
SELECT message, headers, read_ct FROM pgmq.read('pg', 30, 10);

-- ---------------------------------------------------------------------------
-- read: qty, vt, read_ct counting deliveries, conditional

SELECT mq.purge('pg');
SELECT count(*) FROM pgmq.send_batch('pg', ARRAY['{"r": 1}', '{"r": 2}', '{"r": 3}']::jsonb[]);
SELECT message FROM pgmq.read('pg', 0, 1);
-- qty 0 reads nothing, as pgmq's LIMIT 0
SELECT count(*) FROM pgmq.read('pg', 0, 0);
-- vt 0 left {"r": 1} readable: read again, read_ct 2; a negative vt is 0
SELECT message, read_ct FROM pgmq.read('pg', -5, 1);
SELECT message, read_ct FROM pgmq.read('pg', 3600, 2);
SELECT message, read_ct FROM pgmq.read('pg', 3600, 10);
-- the empty condition is no condition
SELECT message, read_ct FROM pgmq.read('pg', 3600, 10, '{}');

-- ---------------------------------------------------------------------------
-- set_vt

SELECT pgmq.send('pg', '{"s": 1}') AS claimed \gset
SELECT msg_id = :claimed AS same, read_ct FROM pgmq.read('pg', 3600, 1);
-- set_vt 0 makes a claimed message readable at once
SELECT msg_id = :claimed AS same, read_ct, enqueued_at, message, headers, vt <= clock_timestamp() AS vt_now
  FROM pgmq.set_vt('pg', :claimed, 0);
SELECT msg_id = :claimed AS same, message, read_ct FROM pgmq.read('pg', 3600, 1);
-- set_vt N: readable again in N seconds
SELECT vt > clock_timestamp() + interval '99 seconds' AND vt <= clock_timestamp() + interval '100 seconds' AS vt_100s
  FROM pgmq.set_vt('pg', :claimed, 100);
SELECT pg_temp.vt_in('pg', :claimed) BETWEEN 90 AND 100 AS in_100s;
-- no row for a message that does not exist, or that was never read
SELECT count(*) FROM pgmq.set_vt('pg', 999999, 0);
SELECT pgmq.send('pg', '{"unread": true}') AS unread \gset
SELECT count(*) FROM pgmq.set_vt('pg', :unread, 100);

-- ---------------------------------------------------------------------------
-- pop

SELECT mq.purge('pg');
SELECT count(*) FROM pgmq.pop('pg');
SELECT count(*) FROM pgmq.send_batch('pg', ARRAY['{"p": 1}', '{"p": 2}', '{"p": 3}', '{"p": 4}']::jsonb[], ARRAY['{"h": 1}', NULL, NULL, NULL]::jsonb[]);
-- pop does not count as a read: read_ct is that of before
SELECT message, headers, read_ct, vt <= clock_timestamp() AS vt_now FROM pgmq.pop('pg');
SELECT message, read_ct FROM pgmq.read('pg', 0, 1);
SELECT message, read_ct FROM pgmq.pop('pg');
SELECT message, read_ct FROM pgmq.pop('pg', 5);
SELECT count(*) FROM pgmq.pop('pg', 0);
SELECT depth, in_flight, delayed FROM mq.metrics('pg');
-- a pop that rolls back leaves the message in the queue
SELECT pgmq.send('pg', '{"p": 5}') IS NOT NULL AS sent;
BEGIN;
SELECT message FROM pgmq.pop('pg');
ROLLBACK;
SELECT message, read_ct FROM pgmq.pop('pg');

-- ---------------------------------------------------------------------------
-- delete, archive: single and batch

SELECT ids[1] AS m1, ids[2] AS m2, ids[3] AS m3, ids[4] AS m4, ids[5] AS m5, ids[6] AS m6
  FROM (SELECT ARRAY(SELECT pgmq.send_batch('pg', ARRAY['1', '2', '3', '4', '5', '6']::jsonb[])) AS ids) s \gset
SELECT pgmq.delete('pg', :m1::bigint);
SELECT pgmq.delete('pg', :m1::bigint);
-- batch: the ids that existed, in array order; unknown ids and NULLs skipped
SELECT ARRAY(SELECT d - :m1 FROM pgmq.delete('pg', ARRAY[:m3, 999999, :m2, NULL]::bigint[]) d) AS deleted;
SELECT pgmq.archive('pg', :m4::bigint);
SELECT pgmq.archive('pg', :m4::bigint);
SELECT ARRAY(SELECT a - :m1 FROM pgmq.archive('pg', ARRAY[:m6, :m5, -3]::bigint[]) a) AS archived;
SELECT count(*) FROM pgmq.delete('pg', ARRAY[]::bigint[]);
SELECT count(*) FROM pgmq.archive('pg', NULL::bigint[]);
-- the archive holds the archived messages (mq's archive table mq.a_<id>)
SELECT msg_id - :m1 AS rel_id, payload FROM pg_temp.archived('pg');
SELECT count(*) FROM pgmq.read('pg', 0, 10);

-- ---------------------------------------------------------------------------
-- metrics, metrics_all, purge_queue

SELECT mq.purge('pg');
SELECT count(*) FROM pgmq.send_batch('pg', ARRAY['1', '2', '3']::jsonb[]);
SELECT count(*) FROM pgmq.send_batch('pg', ARRAY['4', '5']::jsonb[], 3600);
SELECT count(*) FROM pgmq.read('pg', 3600, 1);
SELECT queue_name, queue_length, newest_msg_age_sec, oldest_msg_age_sec BETWEEN 0 AND 60 AS oldest_recent,
       total_messages - :first_id AS rel_total,
       scrape_time = now() AS scraped_now, queue_visible_length
  FROM pgmq.metrics('pg');
SELECT queue_name, queue_length, oldest_msg_age_sec, queue_visible_length FROM pgmq.metrics('pg_unlogged');
SELECT queue_name, queue_length, queue_visible_length FROM pgmq.metrics_all() ORDER BY 1;
SELECT pgmq.purge_queue('pg');
SELECT queue_length FROM pgmq.metrics('pg');

-- ---------------------------------------------------------------------------
-- read_with_poll: waits for a message that becomes readable meanwhile

SELECT pgmq.send('pg', '{"poll": 1}', 2) IS NOT NULL AS sent;
SELECT count(*) FROM pgmq.read_with_poll('pg', 30, 5, 0);
SELECT message, read_ct FROM pgmq.read_with_poll('pg', 30, 5, 10);
SELECT pgmq.send('pg', '{"poll": 2}') IS NOT NULL AS sent;
SELECT message, read_ct FROM pgmq.read_with_poll('pg', 30, 5, 10, 100, '{}');
SELECT count(*) FROM pgmq.read_with_poll('pg', 30, 5, 0, 100);

-- ---------------------------------------------------------------------------
-- both ways: a queue made with mq, used through pgmq, and the reverse

SELECT pgmq.send('native', '{"from": "pgmq"}', '{"h": 1}'::jsonb) AS n1 \gset
SELECT mq.send('native', '{"from": "mq"}', headers => '{"h": 2}') AS n2 \gset
SELECT message, headers, read_ct FROM pgmq.read('native', 30, 1);
SELECT payload, headers, attempts FROM mq.read('native', 1);
SELECT pgmq.archive('native', :n1::bigint), mq.ack('native', :n2::bigint);
SELECT pgmq.send('pg', '{"to": "mq"}') AS p1 \gset
SELECT msg_id = :p1 AS same, payload, attempts FROM mq.read('pg', 1, '0');
SELECT message, read_ct FROM pgmq.pop('pg');

-- ---------------------------------------------------------------------------
-- detach_archive (nothing to detach), drop_queue

SELECT pgmq.detach_archive('pg_part');
SELECT pgmq.detach_archive('nope');
\echo :LAST_ERROR_SQLSTATE
SELECT pgmq.detach_archive(NULL);
\echo :LAST_ERROR_SQLSTATE

SELECT pgmq.drop_queue('pg_part');
SELECT pgmq.drop_queue('pg_part');
SELECT pgmq.drop_queue('pg_unlogged', false);
SELECT queue_name FROM pgmq.list_queues();

-- ---------------------------------------------------------------------------
-- errors

-- unknown queue: 42704 (pgmq: 42P01, its table does not exist)
SELECT pgmq.send('nope', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT pgmq.send_batch('nope', ARRAY['{}']::jsonb[]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pgmq.read('nope', 1, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pgmq.read_with_poll('nope', 1, 1, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pgmq.pop('nope');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pgmq.set_vt('nope', 1, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT pgmq.delete('nope', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT pgmq.delete('nope', ARRAY[1]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
SELECT pgmq.archive('nope', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT pgmq.archive('nope', ARRAY[1]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pgmq.metrics('nope');
\echo :LAST_ERROR_SQLSTATE
SELECT pgmq.purge_queue('nope');
\echo :LAST_ERROR_SQLSTATE
-- names mq does not take (pgmq takes some of them), and SQL in a name
SELECT pgmq.create('with space');
\echo :LAST_ERROR_SQLSTATE
SELECT pgmq.create_partitioned('dollar$');
\echo :LAST_ERROR_SQLSTATE
SELECT pgmq.create(repeat('a', 49));
\echo :LAST_ERROR_SQLSTATE
SELECT pgmq.create(repeat('a', 48));
SELECT pgmq.drop_queue(repeat('a', 48));
SELECT pgmq.delete('native where false; create table public.attack(id int); --', 1);
\echo :LAST_ERROR_SQLSTATE
SELECT to_regclass('public.attack') IS NULL AS no_attack;
-- NULL arguments: 22004
SELECT pgmq.create(NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pgmq.send(NULL, '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT pgmq.send('native', '{}', NULL::integer);
\echo :LAST_ERROR_SQLSTATE
SELECT pgmq.send('native', '{}', NULL::timestamptz);
\echo :LAST_ERROR_SQLSTATE
SELECT pgmq.send_batch('native', NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pgmq.read('native', NULL, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pgmq.read('native', 1, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pgmq.read_with_poll('native', 1, 1, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pgmq.set_vt('native', 1, NULL);
\echo :LAST_ERROR_SQLSTATE
SELECT pgmq.delete('native', NULL::bigint);
\echo :LAST_ERROR_SQLSTATE
-- out of mq's ranges: 22023
SELECT * FROM pgmq.read('native', 43201, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pgmq.read('native', 1, 10001);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pgmq.read('native', 1, -1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pgmq.read_with_poll('native', 1, 1, 901);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pgmq.set_vt('native', 1, 43201);
\echo :LAST_ERROR_SQLSTATE
SELECT pgmq.send('native', '{}', 31536001);
\echo :LAST_ERROR_SQLSTATE
SELECT pgmq.send_batch('native', ARRAY['1', '2']::jsonb[], ARRAY['{}']::jsonb[]);
\echo :LAST_ERROR_SQLSTATE
-- conditional reads: 0A000, nothing claimed
SELECT pgmq.send('native', '{"kind": "a"}') IS NOT NULL AS sent;
SELECT * FROM pgmq.read('native', 30, 1, '{"kind": "a"}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pgmq.read_with_poll('native', 30, 1, 1, 100, '{"kind": "a"}');
\echo :LAST_ERROR_SQLSTATE
SELECT message FROM pgmq.pop('native');
-- an mq partitioned queue takes sends, but not pgmq's reads: 42809
SELECT pgmq.send('native_log', '{}') IS NOT NULL AS sent;
SELECT * FROM pgmq.read('native_log', 30, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pgmq.pop('native_log');
\echo :LAST_ERROR_SQLSTATE
SELECT queue_name, queue_length FROM pgmq.metrics('native_log');

-- ---------------------------------------------------------------------------
-- rights are mq's: checked for the caller

CREATE ROLE pgmq_nobody;
CREATE ROLE pgmq_producer IN ROLE mq_producer;
SET ROLE pgmq_nobody;
SELECT count(*) FROM pgmq.list_queues();
SELECT pgmq.send('native', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT pgmq.create('native');
\echo :LAST_ERROR_SQLSTATE
SET ROLE pgmq_producer;
SELECT pgmq.send('native', '{}') IS NOT NULL AS sent;
-- create of a queue it can see does nothing, as pgmq's idempotent create
SELECT pgmq.create('native');
SELECT pgmq.create('other');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM pgmq.read('native', 30, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT pgmq.purge_queue('native');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM pgmq.metrics_all();
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
DROP ROLE pgmq_nobody, pgmq_producer;

-- ---------------------------------------------------------------------------
-- mq's queues outlive mq_pgmq; pgmq cannot be installed beside it

CREATE EXTENSION mq_pgmq;
DROP EXTENSION mq_pgmq;
SELECT count(*) AS queues_kept FROM mq.queues;
CREATE SCHEMA pgmq;
CREATE EXTENSION mq_pgmq;
DROP SCHEMA pgmq;
CREATE EXTENSION mq_pgmq;
SELECT count(*) AS queues_listed FROM pgmq.list_queues();
-- mq cannot be dropped from under it
DROP EXTENSION mq;
DROP EXTENSION mq_pgmq;

SELECT mq.drop_queue(q) FROM unnest(ARRAY['pg', 'native', 'native_log']) q;
DROP EXTENSION mq;
