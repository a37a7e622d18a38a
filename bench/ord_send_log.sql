-- ordering.sh workload 3, mq side: one keyed message per transaction into the partitioned
-- queue 'logsend' (8 partitions; 1,000 keys, so every partition is used).
\set k random(1, 1000)
SELECT mq.send('logsend', :payload::jsonb, :k);
