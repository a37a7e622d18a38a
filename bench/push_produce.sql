-- push.sh workload 1, producer (pgbench -R 500): one message per transaction; the same
-- transaction inserts its msg_id into lat_sent, whose xmin gives the commit time
-- (track_commit_timestamp = on: pg_xact_commit_timestamp(xmin)).
WITH s AS (SELECT mq.send('lat', jsonb_build_object('sent_at', clock_timestamp())) AS msg_id)
INSERT INTO lat_sent(msg_id) SELECT msg_id FROM s;
