-- workload 3, mq: read (claim) 100 messages and ack them with one array ack, one statement.
SELECT mq.ack('bench', array_agg(m.msg_id)) FROM mq.read('bench', 100) m;
