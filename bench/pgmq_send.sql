-- bench/pgmq.sh: one message per transaction through pgmq's API (either implementation).
SELECT pgmq.send('bench', :payload::jsonb);
