-- workload 1, mq: one ~100-byte jsonb message per transaction.
SELECT mq.send('bench', :payload::jsonb);
