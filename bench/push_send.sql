-- push.sh workload 2: 8 producers, one ~100-byte message per transaction into queue 'bench'.
SELECT mq.send('bench', :payload::jsonb);
