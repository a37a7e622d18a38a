-- Segments of a work queue: rotation, and relocation of the oldest sealed
-- segment when none is free.  Relocation moves stragglers only (at most
-- 4096 messages): a backlog stays in its segment, read by tickets in
-- order, and the current segment goes on taking ids.
CREATE EXTENSION mq;
SELECT mq.create_queue('seg');
-- a rotation is due after 65536 ids: move the sequence on as sends would,
-- send one message (a sealed segment that is empty is simply reused), and
-- run maintenance
CREATE FUNCTION rotate() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    v_seq regclass := format('mq.q_%s_seq', (SELECT queue_id FROM mq.queue WHERE queue_name = 'seg'));
BEGIN
    PERFORM setval(v_seq, nextval(v_seq) + 100000);
    PERFORM mq.maintain();
    PERFORM mq.send('seg', '{"straggler": true}');
END $$;
CREATE VIEW seg_state AS
SELECT string_agg(format('%s:%s', s.segment, s.state), ' ' ORDER BY s.segment) AS segments
  FROM mq.segment s JOIN mq.queue q USING (queue_id) WHERE q.queue_name = 'seg';
CREATE FUNCTION delayed_rows() RETURNS bigint LANGUAGE plpgsql AS $$
DECLARE
    v_n bigint;
BEGIN
    EXECUTE format('SELECT count(*) FROM mq.q_%s_d', (SELECT queue_id FROM mq.queue WHERE queue_name = 'seg')) INTO v_n;
    RETURN v_n;
END $$;

-- a backlog of 4097 messages in segment 0, then three rotations: every
-- segment is in use, segment 0 the oldest
SELECT count(*) FROM mq.send_batch('seg', array_fill('{"backlog": true}'::jsonb, ARRAY[4097]));
SELECT rotate();
SELECT rotate();
SELECT rotate();
SELECT segments FROM seg_state;
-- a fourth rotation would relocate segment 0: 4097 messages are a backlog,
-- so nothing moves and the current segment stays current
SELECT rotate();
SELECT segments FROM seg_state;
SELECT delayed_rows() AS delayed_rows;
-- two acked: 4095 stragglers left, which the next rotation relocates
SELECT count(mq.ack('seg', m.msg_id, m.receipt)) AS acked FROM mq.read('seg', 2) m;
SELECT rotate();
SELECT segments FROM seg_state;
SELECT delayed_rows() AS delayed_rows;
-- nothing was lost: 4095 of the backlog and 5 stragglers
SELECT count(*) AS messages, count(*) FILTER (WHERE payload ? 'backlog') AS backlog
  FROM mq.read('seg', 10000);

DROP VIEW seg_state;
DROP FUNCTION rotate();
DROP FUNCTION delayed_rows();
SELECT mq.drop_queue('seg');
DROP EXTENSION mq;
