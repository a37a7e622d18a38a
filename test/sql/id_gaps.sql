-- id_gaps: a read steps over a gap of any size in a segment's msg_ids at
-- the cost of a few range scans.  Before the fix the ticket ranges grew to
-- at most 2^20 ids, so a gap of 2^45 (a sequence moved by setval) took 2^25
-- range scans and, with the memory each left behind, took the server down;
-- the statement_timeout turns that into a visible failure here.
CREATE EXTENSION mq;
SET client_min_messages = warning;
SELECT mq.create_queue('gaps');
SELECT mq.send('gaps', '{"n": 1}');
SELECT setval(format('mq.q_%s_seq', (SELECT queue_id FROM mq.queue WHERE queue_name = 'gaps'))::regclass,
              35184372088832) > 0 AS moved;
SELECT mq.send('gaps', '{"n": 2}');
SET statement_timeout = '60s';
SELECT msg_id, payload FROM mq.read('gaps', 10);
-- and next to the end of bigint
SELECT setval(format('mq.q_%s_seq', (SELECT queue_id FROM mq.queue WHERE queue_name = 'gaps'))::regclass,
              9223372036854000000) > 0 AS moved;
SELECT mq.send('gaps', '{"n": 3}');
SELECT msg_id, payload FROM mq.read('gaps', 10);
RESET statement_timeout;
SELECT mq.drop_queue('gaps');
DROP EXTENSION mq;
