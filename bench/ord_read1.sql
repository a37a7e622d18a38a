-- ordering.sh workload 1 (keyed and unkeyed alike): read (claim) one message and ack it,
-- one statement, one transaction.
SELECT mq.ack('bench', m.msg_id) FROM mq.read('bench', 1) m;
