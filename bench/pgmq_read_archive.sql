-- bench/pgmq.sh: read one message and archive it, one transaction.
SELECT pgmq.archive('bench', m.msg_id) FROM pgmq.read('bench', 30, 1) m;
