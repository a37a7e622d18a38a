-- queue_admin: create_queue, drop_queue, purge, the mq.queues view and the
-- queue name rules.  pgTAP (created here, dropped at the end).
CREATE EXTENSION mq;
CREATE EXTENSION pgtap;
SET client_min_messages = warning;

SELECT plan(45);

-- creation and the view
SELECT lives_ok($$SELECT mq.create_queue('jobs')$$, 'create_queue with defaults');
SELECT results_eq(
    $$SELECT queue_name, visibility_timeout, max_attempts, dead_letter_queue,
             retry_delay, retry_backoff, retry_delay_max FROM mq.queues WHERE queue_name = 'jobs'$$,
    $$VALUES ('jobs'::text, '30 seconds'::interval, 5, NULL::text,
              '1 second'::interval, 2.0::float8, '15 minutes'::interval)$$,
    'mq.queues shows the defaults');
SELECT lives_ok($$SELECT mq.create_queue('jobs.dlq', visibility_timeout => '5 minutes')$$,
                'a name with a dot');
SELECT lives_ok($$SELECT mq.create_queue('Jobs_2-x', '1 minute', 3, 'jobs.dlq', '2 seconds', 3.0, '1 hour')$$,
                'create_queue with every argument and a dead-letter queue');
SELECT results_eq(
    $$SELECT visibility_timeout, max_attempts, dead_letter_queue, retry_delay, retry_backoff, retry_delay_max
        FROM mq.queues WHERE queue_name = 'Jobs_2-x'$$,
    $$VALUES ('1 minute'::interval, 3, 'jobs.dlq'::text, '2 seconds'::interval, 3.0::float8, '1 hour'::interval)$$,
    'mq.queues shows the settings and the dead-letter queue by name');
SELECT results_eq($$SELECT queue_name FROM mq.queues ORDER BY queue_name COLLATE "C"$$,
                  ARRAY['Jobs_2-x', 'jobs', 'jobs.dlq'], 'mq.queues lists every queue');
SELECT throws_ok($$SELECT mq.create_queue('jobs')$$, '42710', NULL, 'an existing queue is 42710');
-- creates that fail on an existing name take no queue id: each took one,
-- so that "ensure the queue exists" calls used the ids up
SELECT last_value AS id_before FROM mq.queue_queue_id_seq \gset
DO $$
BEGIN
    FOR i IN 1..20 LOOP
        BEGIN
            PERFORM mq.create_queue('jobs');
        EXCEPTION WHEN duplicate_object THEN
            NULL;
        END;
    END LOOP;
END
$$;
SELECT is((SELECT last_value FROM mq.queue_queue_id_seq), :id_before::bigint,
          'twenty creates of an existing queue took no queue id');
SELECT lives_ok($$SELECT mq.create_queue('9lives')$$, 'a name may start with a digit');
SELECT lives_ok($$SELECT mq.create_queue('JOBS')$$, 'names are case sensitive');

-- name rules: 1 to 48 bytes of A-Z a-z 0-9 _ . -, starting with a letter or digit
SELECT lives_ok(format('SELECT mq.create_queue(%L)', repeat('n', 48)), '48 bytes is allowed');
SELECT throws_ok(format('SELECT mq.create_queue(%L)', repeat('n', 49)), '42622', NULL, '49 bytes is 42622');
SELECT throws_ok(format('SELECT mq.create_queue(%L)', repeat('n', 200)), '42622', NULL, '200 bytes is 42622');
SELECT throws_ok($$SELECT mq.create_queue('')$$, '22023', NULL, 'the empty name is 22023');
SELECT throws_ok($$SELECT mq.create_queue(NULL)$$, '22004', NULL, 'a NULL name is 22004');
SELECT throws_ok($$SELECT mq.create_queue('_jobs')$$, '22023', NULL, 'a leading underscore is 22023');
SELECT throws_ok($$SELECT mq.create_queue('-jobs')$$, '22023', NULL, 'a leading dash is 22023');
SELECT throws_ok($$SELECT mq.create_queue('.jobs')$$, '22023', NULL, 'a leading dot is 22023');
SELECT throws_ok($$SELECT mq.create_queue('my jobs')$$, '22023', NULL, 'a space is 22023');
SELECT throws_ok($$SELECT mq.create_queue('jobs"; DROP TABLE mq.queue; --')$$, '22023', NULL,
                 'quotes and semicolons are 22023');
SELECT throws_ok($$SELECT mq.create_queue('jobs/1')$$, '22023', NULL, 'a slash is 22023');
SELECT throws_ok($$SELECT mq.create_queue('jöbs')$$, '22023', NULL, 'a non-ASCII letter is 22023');
SELECT throws_ok(format('SELECT mq.create_queue(%L)', repeat('é', 30)), '42622', NULL,
                 '30 two-byte characters are 60 bytes: 42622 (the limit is in bytes)');
SELECT throws_ok(format('SELECT mq.create_queue(%L)', repeat('é', 20)), '22023', NULL,
                 '20 two-byte characters fit in 48 bytes but are not allowed characters');

-- dead-letter queue rules
SELECT throws_ok($$SELECT mq.create_queue('orphan', dead_letter_queue => 'no.such.queue')$$, '42704', NULL,
                 'a missing dead-letter queue is 42704');
SELECT throws_ok($$SELECT mq.create_queue('self', dead_letter_queue => 'self')$$, '22023', NULL,
                 'a queue cannot be its own dead-letter queue');
SELECT throws_ok($$SELECT mq.drop_queue('jobs.dlq')$$, '2BP01', NULL,
                 'dropping a dead-letter queue in use is 2BP01');

-- settings out of range
SELECT throws_ok($$SELECT mq.create_queue('bad', visibility_timeout => '-1 second')$$, '22023', NULL, 'negative visibility_timeout');
SELECT throws_ok($$SELECT mq.create_queue('bad', visibility_timeout => '13 hours')$$, '22023', NULL, 'visibility_timeout over 12 hours');
SELECT throws_ok($$SELECT mq.create_queue('bad', max_attempts => 0)$$, '22023', NULL, 'max_attempts 0');
SELECT throws_ok($$SELECT mq.create_queue('bad', max_attempts => NULL)$$, '22004', NULL, 'max_attempts NULL');
SELECT throws_ok($$SELECT mq.create_queue('bad', retry_backoff => 0.5)$$, '22023', NULL, 'retry_backoff below 1');
SELECT throws_ok($$SELECT mq.create_queue('bad', retry_delay => '10 minutes', retry_delay_max => '1 minute')$$,
                 '22023', NULL, 'retry_delay_max below retry_delay');

-- nothing was created by the failures above
SELECT results_eq($$SELECT count(*)::int FROM mq.queues$$, ARRAY[6],
                  'failed create_queue calls created nothing');

-- purge: visible, in-flight and delayed messages all go
SELECT is(array_length(array(SELECT mq.send_batch('jobs', ARRAY['1', '2', '3', '4']::jsonb[])), 1), 4, 'four messages sent');
SELECT is(mq.send('jobs', '{"later": true}', delay => '1 hour') > 0, true, 'one delayed message sent');
SELECT is((SELECT count(*)::int FROM mq.read('jobs', 1)), 1, 'one message in flight');
SELECT ok(mq.archive('jobs', (SELECT msg_id FROM mq.read('jobs', 1))), 'one message archived');
SELECT is(mq.purge('jobs'), 4::bigint, 'purge counts 2 visible + 1 in flight + 1 delayed (not the archived one)');
SELECT is(mq.purge('jobs'), 0::bigint, 'a second purge finds nothing');
SELECT is((SELECT depth + in_flight + delayed FROM mq.metrics('jobs')), 0::bigint, 'the queue is empty after purge');
SELECT throws_ok($$SELECT mq.purge('no.such.queue')$$, '42704', NULL, 'purge of an unknown queue is 42704');

-- drop
SELECT is(mq.drop_queue('Jobs_2-x'), true, 'drop_queue returns true');
SELECT is(mq.drop_queue('Jobs_2-x'), false, 'drop_queue of a missing queue returns false');
SELECT is(mq.drop_queue('jobs.dlq'), true, 'a dead-letter queue no longer in use can be dropped');
SELECT * FROM finish();

-- a dropped queue can be created again under the same name, in one transaction
BEGIN;
SELECT mq.drop_queue('jobs');
SELECT mq.create_queue('jobs');
SELECT mq.send('jobs', '{"again": true}') IS NOT NULL AS sent;
SELECT payload FROM mq.read('jobs');
COMMIT;

-- all queues dropped, the extension drops without CASCADE
SELECT count(*) FILTER (WHERE mq.drop_queue(queue_name)) AS dropped FROM mq.queues;
DROP EXTENSION mq;
DROP EXTENSION pgtap;
