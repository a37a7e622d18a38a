-- workload 2b (informational), mq: read then ack as two statements in one explicit transaction,
-- the way a worker that processes the payload in between would do it.
BEGIN;
SELECT msg_id AS mid, receipt AS rcpt FROM mq.read('bench', 1) \gset
SELECT mq.ack('bench', :mid, :rcpt);
COMMIT;
