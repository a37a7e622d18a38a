-- ack_nack: ack (single and batch), receipts, nack with an explicit delay and
-- with the queue backoff, extend, archive, attempts and the dead-letter
-- queue.  pgTAP (created here).  Never sleeps: a claim made with visibility_timeout '0'
-- lapses at once, and times are compared with tolerances, never printed.
CREATE EXTENSION mq;
CREATE EXTENSION pgtap;
SET client_min_messages = warning;

-- Test helpers.  Seconds from now until a message becomes visible again, and
-- the number of archived messages.  These are the only places that look at
-- mq's storage (the tables mq.q_<id>_0..3 and mq.q_<id>_d, mq.a_<id>);
-- change them if the storage changes.
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
CREATE FUNCTION pg_temp.make_visible(p_queue text, p_msg_id bigint) RETURNS void
LANGUAGE plpgsql AS $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['_0', '_1', '_2', '_3', '_d'] LOOP
        EXECUTE format('UPDATE mq.%I SET vt = clock_timestamp() WHERE msg_id = $1',
                       'q_' || (SELECT queue_id FROM mq.queue WHERE queue_name = p_queue) || t)
           USING p_msg_id;
    END LOOP;
    -- mq's hints in shared memory (when a delayed message is due) do not
    -- know of this change: drop them, as a restart would
    PERFORM mq._forget_queue((SELECT queue_id FROM mq.queue WHERE queue_name = p_queue));
END $$;
CREATE FUNCTION pg_temp.archived(p_queue text) RETURNS bigint
LANGUAGE plpgsql AS $$
DECLARE
    v bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM mq.%I', 'a_' || (SELECT queue_id FROM mq.queue WHERE queue_name = p_queue))
       INTO v;
    RETURN v;
END $$;

SELECT mq.create_queue('an', max_attempts => 10, retry_delay => '10 seconds',
                       retry_backoff => 2.0, retry_delay_max => '1 minute');

SELECT plan(78);

-- ---- ack -----------------------------------------------------------------
SELECT mq.send('an', '{"m": "a1"}') AS a1 \gset
SELECT receipt AS a1_r FROM mq.read('an') \gset
SELECT is(mq.ack('an', :a1, :a1_r + 1), false, 'ack with a receipt that names no delivery is false');
SELECT is((SELECT in_flight FROM mq.metrics('an')), 1::bigint, '... and leaves the message in flight');
SELECT is(mq.ack('an', :a1, :a1_r), true, 'ack with the current receipt is true');
SELECT is(mq.ack('an', :a1, :a1_r), false, 'a second ack of the same message is false');
SELECT is(mq.ack('an', :a1), false, '... also without a receipt');

SELECT mq.send('an', '{"m": "a2"}') AS a2 \gset
SELECT count(*) FROM mq.read('an');
SELECT is(mq.ack('an', :a2), true, 'ack without a receipt is true');
SELECT is(mq.ack('an', 999999999), false, 'ack of an unknown msg_id is false');
SELECT is(mq.ack('an', -1), false, 'ack of a negative msg_id is false');

-- ack of a message that was never read: allowed (it is deleted)
SELECT mq.send('an', '{"m": "a3"}') AS a3 \gset
SELECT is(mq.ack('an', :a3), true, 'ack of an unread message deletes it');
SELECT is((SELECT depth FROM mq.metrics('an')), 0::bigint, '... and it is gone');

-- ---- stale receipts --------------------------------------------------------
SELECT mq.send('an', '{"m": "s1"}') AS s1 \gset
SELECT receipt AS s1_r1 FROM mq.read('an', 1, '0') \gset
SELECT receipt AS s1_r2, attempts AS s1_att FROM mq.read('an', 1, '1 minute') \gset
SELECT isnt(:s1_r1::bigint, :s1_r2::bigint, 'a redelivery has a new receipt');
SELECT is(:s1_att, 2, '... and attempts 2');
SELECT is(mq.ack('an', :s1, :s1_r1), false, 'ack with the stale receipt is false');
SELECT is(mq.nack('an', :s1, :s1_r1, '0'), false, 'nack with the stale receipt is false');
SELECT is(mq.extend('an', :s1, '1 hour', :s1_r1), NULL, 'extend with the stale receipt is NULL');
SELECT is(mq.archive('an', :s1, :s1_r1), false, 'archive with the stale receipt is false');
SELECT cmp_ok(pg_temp.vt_in('an', :s1), '<=', 60::float8, 'the stale calls left the current claim (1 minute) alone');
SELECT is((SELECT in_flight FROM mq.metrics('an')), 1::bigint, '... and the message in flight');
SELECT is(mq.ack('an', :s1, :s1_r2), true, 'ack with the current receipt is true');

-- ---- batch ack -------------------------------------------------------------
SELECT array_agg(id) AS b FROM mq.send_batch('an', ARRAY['1', '2', '3', '4']::jsonb[]) id \gset
SELECT count(*) FROM mq.read('an', 10);
SELECT total_acked AS acked_before FROM mq.metrics('an') \gset
SELECT is(mq.ack('an', (:'b'::bigint[])[1:3] || ARRAY[999999999::bigint]), 3::bigint,
          'batch ack counts only the messages that existed');
SELECT is(mq.ack('an', ARRAY[(:'b'::bigint[])[4], (:'b'::bigint[])[4]]), 1::bigint,
          'a msg_id given twice is acked once');
SELECT is(mq.ack('an', :'b'::bigint[]), 0::bigint, 'acking them again counts 0');
SELECT is(mq.ack('an', '{}'::bigint[]), 0::bigint, 'an empty batch counts 0');
SELECT is((SELECT total_acked - :acked_before FROM mq.metrics('an')), 4::bigint, 'total_acked grew by 4');
SELECT is((SELECT depth + in_flight + delayed FROM mq.metrics('an')), 0::bigint, 'the queue is empty');

-- ---- nack with an explicit delay -------------------------------------------
SELECT mq.send('an', '{"m": "n1"}') AS n1 \gset
SELECT receipt AS n1_r FROM mq.read('an') \gset
SELECT is(mq.nack('an', :n1, :n1_r, '5 minutes', 'try later'), true, 'nack with a delay is true');
SELECT ok(pg_temp.vt_in('an', :n1) BETWEEN 290 AND 300, 'the message is visible again in 5 minutes');
SELECT results_eq($$SELECT depth, in_flight, delayed FROM mq.metrics('an')$$,
                  $$VALUES (0::bigint, 0::bigint, 1::bigint)$$, 'a nacked message is delayed, not in flight');
SELECT is((SELECT count(*) FROM mq.read('an')), 0::bigint, 'and cannot be read before the delay');
SELECT is(mq.extend('an', :n1, '1 minute'), NULL, 'extend of a released (not claimed) message is NULL');
SELECT is(mq.nack('an', :n1, :n1_r, '0', 'now'), false, 'nack of a released (not claimed) message is false');
SELECT pg_temp.make_visible('an', :n1);
SELECT results_eq($$SELECT attempts, last_error FROM mq.read('an')$$,
                  $$VALUES (2, 'try later'::text)$$, 'once visible it is read again: attempts 2, with the last error');
SELECT is(mq.nack('an', :n1, NULL, '0'), true, 'nack without receipt or error');
SELECT is((SELECT last_error FROM mq.read('an')), 'try later', 'a nack without error keeps the previous last_error');
SELECT is(mq.nack('an', 999999999), false, 'nack of an unknown msg_id is false');
SELECT is(mq.ack('an', :n1), true, 'clean up');

-- ---- nack with the queue backoff: 10 s * 2^(attempts-1), capped at 1 minute -
SELECT mq.send('an', '{"m": "b1"}') AS b1 \gset
SELECT count(*) FROM mq.read('an');
SELECT is(mq.nack('an', :b1), true, 'nack at attempt 1 with the queue backoff');
SELECT ok(pg_temp.vt_in('an', :b1) BETWEEN 5 AND 10, 'attempt 1: visible again in 10 s');
SELECT pg_temp.make_visible('an', :b1);
SELECT count(*) FROM mq.read('an');
SELECT mq.nack('an', :b1);
SELECT ok(pg_temp.vt_in('an', :b1) BETWEEN 15 AND 20, 'attempt 2: visible again in 20 s');
SELECT pg_temp.make_visible('an', :b1);
SELECT count(*) FROM mq.read('an');
SELECT mq.nack('an', :b1);
SELECT ok(pg_temp.vt_in('an', :b1) BETWEEN 35 AND 40, 'attempt 3: visible again in 40 s');
SELECT pg_temp.make_visible('an', :b1);
SELECT count(*) FROM mq.read('an');
SELECT mq.nack('an', :b1);
SELECT ok(pg_temp.vt_in('an', :b1) BETWEEN 55 AND 60, 'attempt 4: 80 s capped at retry_delay_max, 1 minute');
SELECT is(mq.ack('an', :b1), true, 'clean up');

-- ---- extend ----------------------------------------------------------------
SELECT mq.send('an', '{"m": "e1"}') AS e1 \gset
SELECT receipt AS e1_r FROM mq.read('an', 1, '10 seconds') \gset
SELECT ok(mq.extend('an', :e1, '1 hour', :e1_r) BETWEEN clock_timestamp() + '59 minutes' AND clock_timestamp() + '1 hour',
          'extend returns the new visible_at, now + 1 hour');
SELECT ok(pg_temp.vt_in('an', :e1) BETWEEN 3590 AND 3600, '... and the claim lasts an hour');
SELECT ok(mq.extend('an', :e1, '2 minutes') IS NOT NULL, 'extend without a receipt');
SELECT ok(pg_temp.vt_in('an', :e1) BETWEEN 110 AND 120, 'extend can shorten the claim too');
SELECT is(mq.extend('an', 999999999, '1 minute'), NULL, 'extend of an unknown msg_id is NULL');

-- ---- archive ---------------------------------------------------------------
SELECT total_acked AS acked_before FROM mq.metrics('an') \gset
SELECT is(mq.archive('an', :e1, :e1_r), true, 'archive with the current receipt');
SELECT is(pg_temp.archived('an'), 1::bigint, 'the message is in the archive');
SELECT is(mq.ack('an', :e1), false, '... and no longer in the queue');
SELECT is(mq.archive('an', :e1), false, 'archiving it again is false');
SELECT is((SELECT total_acked - :acked_before FROM mq.metrics('an')), 1::bigint, 'archive counts as acked');
-- the batch form: ids in any order, duplicates and unknown ids; a claimed
-- message and one nacked into the delayed table are archived too
SELECT mq.send('an', '{"b": 1}') AS b1 \gset
SELECT mq.send('an', '{"b": 2}') AS b2 \gset
SELECT mq.send('an', '{"b": 3}') AS b3 \gset
SELECT ok((SELECT count(*) FROM mq.read('an', 10)) >= 2, 'the batch is claimed');
SELECT ok(mq.nack('an', :b2, delay => '1 hour'), 'one of it is nacked away');
SELECT is(mq.archive('an', ARRAY[:b3, 999999999, :b1, :b2, :b3]::bigint[]), 3::bigint,
          'a batch archive counts each message archived once');
SELECT is(pg_temp.archived('an'), 4::bigint, 'the batch is in the archive');
SELECT is(mq.archive('an', ARRAY[:b1, :b2]::bigint[]), 0::bigint, 'archiving them again archives nothing');
SELECT is(mq.archive('an', '{}'::bigint[]), 0::bigint, 'an empty batch archives nothing');
SELECT is((SELECT total_acked - :acked_before FROM mq.metrics('an')), 4::bigint, 'a batch archive counts as acked');

-- ---- one read claims a message once ---------------------------------------
-- A claim with visibility_timeout '0' is visible again at once; the rest of
-- the same read must not claim it again (it did from the delayed table,
-- using up every attempt in one call).  The nacked message is in the delayed
-- table, due now.
SELECT mq.create_queue('an.zero');
SELECT mq.send('an.zero', '{"z": 1}') AS z1 \gset
SELECT mq.nack('an.zero', msg_id, receipt, '0') FROM mq.read('an.zero');
SELECT results_eq($$SELECT msg_id, attempts FROM mq.read('an.zero', 10, '0')$$,
                  format($$VALUES (%s::bigint, 2)$$, :z1),
                  'a read with visibility_timeout 0 returns a due message once');
SELECT results_eq($$SELECT msg_id, attempts FROM mq.read('an.zero', 10, '0')$$,
                  format($$VALUES (%s::bigint, 3)$$, :z1),
                  'the next read claims it again, one attempt more');
SELECT mq.send('an.zero', '{"z": 2}') AS z2 \gset
SELECT results_eq($$SELECT msg_id, attempts FROM mq.read('an.zero', 10, '0')$$,
                  format($$VALUES (%s::bigint, 4), (%s::bigint, 1)$$, :z1, :z2),
                  'the same for a message in a segment');

-- ---- attempts and the dead-letter queue ------------------------------------
SELECT mq.create_queue('an.dead');
SELECT mq.create_queue('an.retry', max_attempts => 3, dead_letter_queue => 'an.dead', retry_delay => '0');

-- nacked at the last attempt
SELECT mq.send('an.retry', '{"order": 1}', key => 'cust-1', headers => '{"trace": "t1"}') AS d1 \gset
SELECT mq.nack('an.retry', msg_id, receipt, NULL, 'error ' || attempts) FROM mq.read('an.retry');
SELECT mq.nack('an.retry', msg_id, receipt, NULL, 'error ' || attempts) FROM mq.read('an.retry');
SELECT is((SELECT mq.nack('an.retry', msg_id, receipt, NULL, 'error ' || attempts) FROM mq.read('an.retry')),
          true, 'nack at the last attempt is true');
SELECT results_eq($$SELECT depth, in_flight, delayed, dead_lettered FROM mq.metrics('an.retry')$$,
                  $$VALUES (0::bigint, 0::bigint, 0::bigint, 1::bigint)$$,
                  'the message left the queue and counts as dead-lettered');
SELECT results_eq(
    $$SELECT payload, headers, key, attempts, (dead_letter->>'msg_id')::bigint, (dead_letter->>'attempts')::int,
             dead_letter->>'error', dead_letter->>'queue'
        FROM mq.read('an.dead')$$,
    format($$VALUES ('{"order": 1}'::jsonb, '{"trace": "t1"}'::jsonb, 'cust-1'::text, 1, %s::bigint, 3,
                     'error 3'::text, 'an.retry'::text)$$, :d1),
    'the DLQ message keeps payload, headers, key, original msg_id, attempts and the last error');

-- a consumer that dies uses up an attempt: lapsed claims (vt 0) count
SELECT mq.send('an.retry', '{"order": 2}', key => 'cust-2') AS d2 \gset
SELECT mq.nack('an.retry', msg_id, receipt, '0', 'first failure') FROM mq.read('an.retry');
SELECT count(*) FROM mq.read('an.retry', 1, '0');
SELECT count(*) FROM mq.read('an.retry', 1, '0');
SELECT mq.send('an.retry', '{"order": 3}') AS d3 \gset
SELECT results_eq($$SELECT payload FROM mq.read('an.retry', 10, '1 hour')$$,
                  $$VALUES ('{"order": 3}'::jsonb)$$,
                  'read skips and dead-letters a lapsed last attempt, and still returns the live message behind it');
SELECT results_eq(
    $$SELECT payload, key, (dead_letter->>'msg_id')::bigint, (dead_letter->>'attempts')::int, dead_letter->>'error'
        FROM mq.read('an.dead')$$,
    format($$VALUES ('{"order": 2}'::jsonb, 'cust-2'::text, %s::bigint, 3, 'first failure'::text)$$, :d2),
    'the lapsed message reached the DLQ with its last error');
SELECT is(mq.ack('an.retry', :d3), true, 'clean up');

-- mq.maintain dead-letters lapsed last attempts without a read
SELECT mq.send('an.retry', '{"order": 4}') AS d4 \gset
SELECT count(*) FROM mq.read('an.retry', 1, '0');
SELECT count(*) FROM mq.read('an.retry', 1, '0');
SELECT count(*) FROM mq.read('an.retry', 1, '1 hour');
SELECT is(mq.maintain(), 0::bigint, 'maintain leaves a last attempt that is still in flight');
SELECT ok(mq.extend('an.retry', :d4, '0') IS NOT NULL, 'extend to 0 lets the last claim lapse now');
SELECT is(mq.maintain(), 1::bigint, 'maintain moves the lapsed last attempt');
SELECT is((SELECT dead_lettered FROM mq.metrics('an.retry')), 3::bigint, 'three messages dead-lettered from an.retry');
SELECT is((SELECT (dead_letter->>'msg_id')::bigint FROM mq.read('an.dead')), :d4::bigint, 'it is in the DLQ');
SELECT is(mq.maintain(), 0::bigint, 'maintain finds nothing more');

-- without a dead-letter queue the message is discarded
SELECT mq.create_queue('an.once', max_attempts => 1);
SELECT mq.send('an.once', '{"x": 1}') AS o1 \gset
SELECT is((SELECT mq.nack('an.once', msg_id, receipt, NULL, 'fatal') FROM mq.read('an.once')), true,
          'nack at the only attempt without a DLQ is true');
SELECT mq.send('an.once', '{"x": 2}') AS o2 \gset
SELECT count(*) FROM mq.read('an.once', 1, '0');
SELECT is((SELECT count(*) FROM mq.read('an.once')), 0::bigint, 'a lapsed only attempt is not handed out again');
SELECT results_eq($$SELECT depth, in_flight, delayed, dead_lettered FROM mq.metrics('an.once')$$,
                  $$VALUES (0::bigint, 0::bigint, 0::bigint, 2::bigint)$$,
                  'both were discarded and counted');
SELECT is(mq.ack('an.once', :o1), false, 'a discarded message cannot be acked');

SELECT * FROM finish();

SELECT mq.drop_queue(q) FROM unnest(ARRAY['an', 'an.zero', 'an.retry', 'an.once', 'an.dead']) q;
DROP EXTENSION mq;
DROP EXTENSION pgtap;
