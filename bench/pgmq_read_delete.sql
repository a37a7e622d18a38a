-- bench/pgmq.sh: read one message (visibility timeout 30 s) and delete it, one transaction,
-- the consumer loop of pgmq's README.
SELECT pgmq.delete('bench', m.msg_id) FROM pgmq.read('bench', 30, 1) m;
