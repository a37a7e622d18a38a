-- shapes.sh shape 3, mq consumer: read (claim) up to 10 messages and ack them with one array
-- ack, one statement, one transaction. HAVING: on an empty queue array_agg gives NULL, which
-- mq.ack rejects (22004) and pgbench would abort the client; with it an empty read acks nothing.
SELECT mq.ack('bench', array_agg(m.msg_id)) FROM mq.read('bench', 10) m HAVING count(*) > 0;
