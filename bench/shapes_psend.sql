-- shapes.sh shape 6, producer: one keyed message per transaction into the partitioned queue
-- 'p' (4 partitions; 1,000 keys, so every partition is used).
\set k random(1, 1000)
SELECT mq.send('p', :payload::jsonb, :k::text);
