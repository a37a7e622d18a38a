-- Partitioned queues: busy_partitions of mq.poll and mq.heartbeat, the
-- cooperative hand-over (a rebalance does not take a partition the member
-- still processes; it moves once no call lists it).
\set VERBOSITY terse
CREATE EXTENSION mq;
SELECT mq.create_queue('h', partitions => 2, session_timeout => '1 hour');
-- 20 keyed messages over both partitions
SELECT count(*) AS sent FROM (SELECT mq.send('h', jsonb_build_object('i', i), 'k' || i)
  FROM generate_series(1, 20) i) s;
CREATE FUNCTION owners() RETURNS TABLE (partition integer, member text)
  LANGUAGE sql AS $$ SELECT partition, member FROM mq.consumer_groups
                      WHERE queue_name = 'h' AND consumer_group = 'g' ORDER BY partition $$;

-- a alone holds both partitions and polls all of them
SELECT count(DISTINCT partition) AS partitions_polled FROM mq.poll('h', 'g', 'a', 20);
SELECT * FROM owners();
-- b joins: nothing is free yet
SELECT mq.heartbeat('h', 'g', 'b') AS b_holds;
-- a still processes both: it keeps both, and may poll only one
SELECT mq.heartbeat('h', 'g', 'a', busy_partitions => '{0,1}') AS a_may_poll;
SELECT * FROM owners();
SELECT mq.heartbeat('h', 'g', 'b') AS b_holds;
-- a poll of a returns nothing new of partition 1, the one it must give back
SELECT count(*) AS sent FROM (SELECT mq.send('h', '{"late": true}', 'k' || i)
  FROM generate_series(1, 20) i) s;
SELECT DISTINCT partition FROM mq.poll('h', 'g', 'a', 100, busy_partitions => '{0,1}');
-- done with 1 (0 still busy): it goes at a's next call, and b takes it
SELECT mq.heartbeat('h', 'g', 'a', busy_partitions => '{0}') AS a_holds;
SELECT * FROM owners();
SELECT mq.heartbeat('h', 'g', 'b') AS b_holds;
SELECT * FROM owners();

-- an idle partition goes first, not the highest: b leaves, a takes both,
-- b comes back, and a busy on 1 gives back 0 (NULL elements and partitions
-- a does not hold are ignored)
SELECT mq.leave('h', 'g', 'b') AS b_released;
SELECT mq.heartbeat('h', 'g', 'a') AS a_holds;
SELECT mq.heartbeat('h', 'g', 'b') AS b_holds;
SELECT mq.heartbeat('h', 'g', 'a', busy_partitions => '{1, NULL, 7}') AS a_holds;
SELECT mq.heartbeat('h', 'g', 'b') AS b_holds;
SELECT * FROM owners();
SELECT mq.drop_queue('h');
DROP FUNCTION owners();
DROP EXTENSION mq;
