-- ordering.sh workload 2, work queue side: read (claim) 100 messages and ack them with one array ack.
SELECT mq.ack('bench', array_agg(m.msg_id)) FROM mq.read('bench', 100) m;
