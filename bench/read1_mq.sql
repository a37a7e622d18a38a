-- workload 2/4, mq: read (claim) one message and ack it, one statement, one transaction.
SELECT mq.ack('bench', m.msg_id) FROM mq.read('bench', 1) m;
