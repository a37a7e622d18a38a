-- Partitioned queues: creation rules, keyed placement, poll, commit, seek,
-- leave, metrics, retention by segment rotation, and bad input.
\set VERBOSITY terse
CREATE EXTENSION mq;

-- creation rules
SELECT mq.create_queue('p', partitions => 0);
SELECT mq.create_queue('p', partitions => 257);
SELECT mq.create_queue('p', partitions => 2, ordering => 'key');
SELECT mq.create_queue('dlq');
SELECT mq.create_queue('p', partitions => 2, dead_letter_queue => 'dlq');
SELECT mq.create_queue('p', partitions => 2, retention => '1 second');
SELECT mq.create_queue('p', partitions => 2, session_timeout => '0');
SELECT mq.create_queue('p', partitions => 4, retention => '1 day', session_timeout => '1 minute');
SELECT mq.create_queue('x', dead_letter_queue => 'p');
SELECT queue_name, partitions, retention, session_timeout FROM mq.queues WHERE queue_name = 'p';

-- a key always lands in the same partition; keyless messages spread out
SELECT count(*) FILTER (WHERE mq.send('p', jsonb_build_object('i', i), 'k' || (i % 5)) > 0) AS sent
  FROM generate_series(1, 40) i;
SELECT count(*) FROM mq.send_batch('p', array_fill('{}'::jsonb, ARRAY[8]));
SELECT key, count(DISTINCT partition) AS partitions FROM mq.poll('p', 'g', 'm1', 1000)
 GROUP BY key ORDER BY key;
-- per partition, offsets are 1..n without holes (nothing rolled back)
SELECT bool_and(o = n) AS dense FROM (
  SELECT "offset" AS o, row_number() OVER (PARTITION BY partition ORDER BY "offset") AS n
    FROM mq.poll('p', 'g2', 'm1', 1000)) s;
SELECT (SELECT count(*) FROM mq.poll('p', 'g2', 'm1', 1000)) AS nothing_more;

-- commit and resume; lag
SELECT mq.commit('p', 'g2', 0, 3);
SELECT partition, committed_offset FROM mq.consumer_groups
 WHERE consumer_group = 'g2' ORDER BY partition;
SELECT sum(lag) = 48 - 3 AS lag_ok FROM mq.consumer_groups WHERE consumer_group = 'g2';
SELECT mq.leave('p', 'g2', 'm1');
SELECT count(*) AS redelivered_after_commit FROM mq.poll('p', 'g2', 'm9', 1000);
-- a member that lost its lease cannot commit (fenced)
SELECT mq.commit('p', 'g2', 0, 4, 'm1') AS fenced_commit;
SELECT mq.commit('p', 'g2', 0, 4, 'm9') AS owner_commit;

-- seek: to an offset, earliest, latest, a time
SELECT mq.seek('p', 'g2', NULL, 'latest');
SELECT count(*) FROM mq.poll('p', 'g2', 'm9', 1000);
SELECT mq.seek('p', 'g2', 0, 2::bigint);
SELECT min("offset") FROM mq.poll('p', 'g2', 'm9', 1000);
SELECT mq.seek('p', 'g2', NULL, 'earliest');
SELECT count(*) FROM mq.poll('p', 'g2', 'm9', 1000);
SELECT mq.seek('p', 'g2', NULL, now() + interval '1 hour');
SELECT count(*) FROM mq.poll('p', 'g2', 'm9', 1000);
SELECT mq.seek('p', 'g2', NULL, now() - interval '1 hour');
SELECT count(*) FROM mq.poll('p', 'g2', 'm9', 1000);
SELECT mq.heartbeat('p', 'g2', 'm9');

-- committed offsets: a row per commit (and per seek), the latest counts,
-- whatever its offset; maintenance deletes the superseded rows only
SELECT mq.commit('p', 'g2', 0, 5) AND mq.commit('p', 'g2', 0, 4) AS committed;
SELECT consumer_group, count(*) > 4 AS superseded_rows FROM mq.group_offset
 GROUP BY 1 ORDER BY 1;
SELECT consumer_group, partition, committed_offset FROM mq.consumer_groups ORDER BY 1, 2;
SELECT mq.maintain() >= 0 AS maintained;
SELECT consumer_group, count(*) AS rows_left FROM mq.group_offset GROUP BY 1 ORDER BY 1;
SELECT consumer_group, partition, committed_offset FROM mq.consumer_groups ORDER BY 1, 2;

-- metrics of a log
SELECT depth, in_flight, delayed, total_sent FROM mq.metrics('p');

-- retention: maintenance truncates the oldest segment once it is old enough
-- (the log's three segment tables, and the segment taking new messages)
SELECT queue_id AS pid FROM mq.queue WHERE queue_name = 'p' \gset
SELECT format('(SELECT * FROM mq.p_%1$s_0 UNION ALL SELECT * FROM mq.p_%1$s_1 UNION ALL SELECT * FROM mq.p_%1$s_2) l',
              :pid) AS log \gset
CREATE FUNCTION pg_temp.age_segment() RETURNS void LANGUAGE sql AS
$$ UPDATE mq.segment SET since = now() - interval '13 hours'
    WHERE queue_id = (SELECT queue_id FROM mq.queue WHERE queue_name = 'p') AND state = 'current';
   SELECT mq._invalidate() $$;     -- sessions reload what they cached
SELECT mq.maintain();
SELECT count(*) FROM :log;
SELECT pg_temp.age_segment();
SELECT mq.maintain();                      -- next segment is empty: rotate
SELECT segment FROM mq.segment WHERE queue_id = :pid AND state = 'current';
SELECT mq.send('p', '{"after": "rotation"}', 'k1') > 0 AS sent;
SELECT pg_temp.age_segment();
SELECT mq.maintain();                      -- segment 2 is empty too
SELECT pg_temp.age_segment();
SELECT mq.maintain();                      -- segment 0 holds young messages: kept
SELECT segment FROM mq.segment WHERE queue_id = :pid AND state = 'current';
DO $$
BEGIN
    FOR i IN 0..2 LOOP
        EXECUTE format('UPDATE mq.%I SET enqueued_at = enqueued_at - interval ''2 days''',
                       'p_' || (SELECT queue_id FROM mq.queue WHERE queue_name = 'p') || '_' || i);
    END LOOP;
END $$;
SELECT mq.maintain();                      -- now old: segment 0 truncated
SELECT count(*), min(payload->>'after') FROM :log;
SELECT mq.seek('p', 'g3', NULL, 'earliest');
SELECT payload FROM mq.poll('p', 'g3', 'm', 100);

-- a member whose lease lapsed (its commits were fenced) starts over from
-- the committed offset, even when no other member took the partition
SELECT count(*) FROM mq.poll('p', 'g4', 'm', 1000);
SELECT count(*) FROM mq.poll('p', 'g4', 'm', 1000);
UPDATE mq.group_partition SET lease_until = now() - interval '1 second' WHERE consumer_group = 'g4';
SELECT mq.commit('p', 'g4', 0, 1, 'm') AS fenced;
SELECT count(*) AS again FROM mq.poll('p', 'g4', 'm', 1000);

-- bad input
SELECT mq.send('p', '{}', delay => '1 second');
SELECT * FROM mq.read('p');
SELECT mq.ack('p', 1);
SELECT * FROM mq.poll('dlq', 'g', 'm');
SELECT * FROM mq.poll('p', NULL, 'm');
SELECT * FROM mq.poll('p', 'g', NULL);
SELECT * FROM mq.poll('p', '', 'm');
SELECT * FROM mq.poll('p', 'g', repeat('m', 201));
SELECT * FROM mq.poll('p', 'g', 'm', 0);
SELECT * FROM mq.poll('p', 'g', 'm', 10001);
SELECT * FROM mq.poll('p', 'g', 'm', 1, '-1 second');
SELECT * FROM mq.poll('p', 'g', 'm', 1, '1 hour');
SELECT * FROM mq.poll('p', 'g', 'm', NULL);
SELECT mq.commit('p', 'g', 4, 1);
SELECT mq.commit('p', 'g', 0, -1);
SELECT mq.commit('p', 'g', NULL, 1);
SELECT mq.commit('p', 'g', 0, 1000000);
SELECT mq.commit('p', 'g', 0, 0, '');
SELECT mq.leave('p', 'g', NULL);
SELECT mq.seek('p', 'g', 0, NULL::bigint);
SELECT mq.seek('p', 'g', 0, 'middle');
SELECT mq.seek('p', 'g', 0, 0::bigint);
-- past the end is refused as mq.commit refuses it (it skipped every
-- message to come); the next offset to be sent is fine
SELECT mq._partition_end('p', 0) AS p0_end \gset
\set VERBOSITY sqlstate
SELECT mq.seek('p', 'g', 0, :p0_end + 1);
SELECT :'LAST_ERROR_MESSAGE' = format('offset %s is beyond the end of partition 0', :p0_end + 1) AS as_commit_says;
SELECT mq.seek('p', 'g', NULL, 1000000::bigint);
\echo :LAST_ERROR_MESSAGE
\set VERBOSITY terse
SELECT mq.seek('p', 'g', 0, :p0_end::bigint);
SELECT committed_offset = :p0_end - 1 AS at_end FROM mq.consumer_groups
 WHERE queue_name = 'p' AND consumer_group = 'g' AND partition = 0;
SELECT mq.seek('p', 'g', 9, 'earliest');
SELECT mq.seek('nope', 'g', 0, 'earliest');
-- offsets at the top of bigint: a partition hands out offsets up to
-- 2^63 - 2, so that its end (one past the last) is a bigint; every offset
-- it handed out can be polled and committed, an exhausted partition says
-- so on send (54000, not the sequence's error), and neither
-- mq.consumer_groups nor mq.metrics overflows, for this queue or others
SELECT mq.create_queue('top', partitions => 2);
SELECT queue_id AS top_id FROM mq.queue WHERE queue_name = 'top' \gset
SELECT setval(format('mq.p_%s_o%s', :top_id, p), 9223372036854775804) FROM generate_series(0, 1) p;
SELECT k AS k0 FROM unnest(ARRAY['a', 'b', 'c', 'd', 'e', 'f']) k
 WHERE (hashtext(k)::bigint & 4294967295) % 2 = 0 LIMIT 1 \gset
SELECT k AS k1 FROM unnest(ARRAY['a', 'b', 'c', 'd', 'e', 'f']) k
 WHERE (hashtext(k)::bigint & 4294967295) % 2 = 1 LIMIT 1 \gset
SELECT mq.send('top', '1', key => :'k0'), mq.send('top', '2', key => :'k0');
SELECT mq.send('top', '3', key => :'k0');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.send('top', '3', key => :'k0');
SELECT count(*) FROM mq.send_batch('top', ARRAY['4', '5']::jsonb[], ARRAY[:'k1', :'k1']);
SELECT count(*) FROM mq.send_batch('top', ARRAY['6']::jsonb[], ARRAY[:'k1']);
SELECT partition, "offset", payload FROM mq.poll('top', 'tg', 'm', 10) ORDER BY partition, "offset";
SELECT partition, end_offset, lag FROM mq.consumer_groups WHERE queue_name = 'top' ORDER BY partition;
SELECT mq.commit('top', 'tg', 0, 9223372036854775806), mq.commit('top', 'tg', 1, 9223372036854775806);
SELECT mq.commit('top', 'tg', 0, 9223372036854775807);
SELECT partition, committed_offset, lag FROM mq.consumer_groups WHERE queue_name = 'top' ORDER BY partition;
SELECT count(*) AS nothing_left FROM mq.poll('top', 'tg', 'm', 10);
SELECT mq.seek('top', 'tg', NULL, 'latest'), mq.seek('top', 'tg', 0, 9223372036854775807);
SELECT mq.seek('top', 'tg', 0, 9223372036854775806);
SELECT depth, total_sent FROM mq.metrics('top');
SELECT count(*) > 0 AS other_groups_listed FROM mq.consumer_groups WHERE queue_name <> 'top';
SELECT mq.drop_queue('top');

-- mq.autocommit_positions off: a poll outside a transaction block moves no
-- position (its answer may be lost behind a pooler: docs/poolers.md)
SELECT mq.create_queue('ap', partitions => 1);
SELECT count(*) FROM mq.send_batch('ap', array_fill('{}'::jsonb, ARRAY[5]));
SET mq.autocommit_positions = off;
SELECT string_agg("offset"::text, ',') AS first_poll FROM mq.poll('ap', 'g', 'm', 3);
SELECT string_agg("offset"::text, ',') AS read_again FROM mq.poll('ap', 'g', 'm', 3);
BEGIN;
SELECT string_agg("offset"::text, ',') AS in_a_transaction FROM mq.poll('ap', 'g', 'm', 3);
COMMIT;
SELECT string_agg("offset"::text, ',') AS after_its_commit FROM mq.poll('ap', 'g', 'm', 3);
RESET mq.autocommit_positions;
SELECT string_agg("offset"::text, ',') AS setting_on FROM mq.poll('ap', 'g', 'm', 3);
SELECT string_agg("offset"::text, ',') AS moved_on FROM mq.poll('ap', 'g', 'm', 3);
SELECT mq.drop_queue('ap');

BEGIN;
SELECT mq.send('p', '{}') > 0 AS sent;
PREPARE TRANSACTION 'mq_test';

-- a drop prints no NOTICE naming the queue's internal tables (0.1.0 did)
SET client_min_messages = notice;
SELECT mq.drop_queue('p');
SELECT count(*) AS group_rows_left FROM mq.group_partition;
DROP EXTENSION mq CASCADE;
