-- queue_ids: queue ids are bigint (mq 0.1.0 had integer ids), and a queue
-- whose id is above 2^32 works end to end: a work queue with a dead-letter
-- queue, a keyed queue and a partitioned queue, whose tables, sequences,
-- lock tags and shared-memory entries are all named or keyed by the id.
-- pgTAP (created here, dropped at the end).
CREATE EXTENSION mq;
CREATE EXTENSION pgtap;
SET client_min_messages = warning;

SELECT plan(24);

-- every column that holds a queue id, and the id sequence
SELECT is((SELECT string_agg(DISTINCT format_type(a.atttypid, a.atttypmod), ',')
             FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            WHERE c.relnamespace = 'mq'::regnamespace AND c.relkind = 'r'
              AND a.attname IN ('queue_id', 'dead_letter_queue_id') AND NOT a.attisdropped),
          'bigint', 'every queue_id and dead_letter_queue_id column is bigint');
SELECT is((SELECT count(*) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            WHERE c.relnamespace = 'mq'::regnamespace AND c.relkind = 'r'
              AND a.attname IN ('queue_id', 'dead_letter_queue_id') AND NOT a.attisdropped),
          7::bigint, 'the seven such columns were checked');
SELECT is((SELECT s.seqtypid::regtype::text || ' ' || s.seqmax FROM pg_sequence s
            WHERE s.seqrelid = 'mq.queue_queue_id_seq'::regclass),
          'bigint 9223372036854775807', 'the queue id sequence is bigint');
-- no function of mq takes or returns a queue id as integer
SELECT is((SELECT string_agg(p.oid::regprocedure::text, ', ')
             FROM pg_proc p
            WHERE p.pronamespace = 'mq'::regnamespace
              AND (EXISTS (SELECT FROM unnest(p.proargnames, p.proallargtypes::oid[]) a(n, t)
                            WHERE a.n ~ '(^|_)queue_ids?$' AND a.t IN ('int4'::regtype, '_int4'::regtype))
                   OR EXISTS (SELECT FROM unnest(p.proargnames[1:p.pronargs], p.proargtypes::oid[]) a(n, t)
                               WHERE a.n ~ '(^|_)queue_ids?$' AND a.t IN ('int4'::regtype, '_int4'::regtype))
                   OR (p.proname IN ('_queue_id', '_log_id') AND p.prorettype <> 'int8'::regtype))),
          NULL, 'no mq function carries a queue id as integer');

-- ids above 2^32: lock tags and shared-memory keys must not truncate them
SELECT setval('mq.queue_queue_id_seq', 5000000000);
SELECT lives_ok($$SELECT mq.create_queue('big_dlq')$$, 'create a dead-letter queue');
SELECT lives_ok($$SELECT mq.create_queue('big', dead_letter_queue => 'big_dlq', max_attempts => 1,
                                         visibility_timeout => '1 second')$$, 'create a work queue');
SELECT lives_ok($$SELECT mq.create_queue('big_keyed', ordering => 'key')$$, 'create a keyed queue');
SELECT lives_ok($$SELECT mq.create_queue('big_log', partitions => 2)$$, 'create a partitioned queue');
SELECT results_eq($$SELECT queue_name, queue_id, dead_letter_queue_id FROM mq.queue ORDER BY queue_id$$,
                  $$VALUES ('big_dlq', 5000000001::bigint, NULL::bigint), ('big', 5000000002, 5000000001),
                           ('big_keyed', 5000000003, NULL), ('big_log', 5000000004, NULL)$$,
                  'the queues have ids above 2^32');
SELECT ok(to_regclass('mq.q_5000000002_0') IS NOT NULL AND to_regclass('mq.p_5000000004') IS NOT NULL,
          'their tables are named by the whole id');

-- work queue: send, read, ack, metrics; an exhausted message reaches the DLQ
SELECT is(mq.send('big', '{"n":1}'), 1::bigint, 'send');
SELECT is((SELECT payload FROM mq.read('big', 1, '30 seconds')), '{"n":1}'::jsonb, 'read');
SELECT is(mq.ack('big', 1), true, 'ack');
SELECT is(mq.send('big', '{"n":2}'), 2::bigint, 'send another');
SELECT is((SELECT count(*) FROM mq.read('big', 1, '0 seconds')), 1::bigint, 'read it with no visibility timeout');
SELECT is((SELECT count(*) FROM mq.read('big', 1)), 0::bigint, 'its last attempt is over: it is not read again');
SELECT is((SELECT payload FROM mq.read('big_dlq', 1)), '{"n":2}'::jsonb, 'it went to the dead-letter queue');
SELECT results_eq($$SELECT depth, in_flight, total_sent, total_acked FROM mq.metrics('big')$$,
                  $$VALUES (0::bigint, 0::bigint, 2::bigint, 1::bigint)$$, 'metrics');

-- keyed queue: the key's second message waits for the first (key locks)
SELECT is(mq.send('big_keyed', '{"n":1}', key => 'k'), 1::bigint, 'keyed send');
SELECT is(mq.send('big_keyed', '{"n":2}', key => 'k'), 2::bigint, 'keyed send, same key');
SELECT is((SELECT array_agg(msg_id) FROM mq.read('big_keyed', 10)), '{1}'::bigint[],
          'one message of the key in flight at a time');

-- partitioned queue: send, poll, commit
SELECT is((SELECT mq.send('big_log', '{"n":1}', key => 'u')), 1::bigint, 'send to the partitioned queue');
SELECT is((SELECT payload FROM mq.poll('big_log', 'g', 'm', 10)), '{"n":1}'::jsonb, 'poll');

-- all dropped, the extension drops without CASCADE
SELECT is((SELECT count(*) FILTER (WHERE mq.drop_queue(queue_name)) FROM mq.queues
            WHERE queue_name <> 'big_dlq'), 3::bigint, 'drop the queues');
SELECT mq.drop_queue('big_dlq');
SELECT * FROM finish();
DROP EXTENSION mq;
DROP EXTENSION pgtap;
