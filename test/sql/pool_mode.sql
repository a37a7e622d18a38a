-- pool_mode: with mq.pool_mode = 'transaction' (the session is shared by
-- the clients of a transaction pooler) the functions that bind state to
-- the session refuse with 0A000, and an autocommit mq.poll moves no
-- position, so the next poll reads the same messages again; polls in an
-- explicit transaction still move it.  Through a real PgBouncer:
-- t/080_pgbouncer.pl.
CREATE EXTENSION mq;
SET client_min_messages = warning;
SELECT mq.create_queue('pm_log', partitions => 1);
SELECT mq.create_queue('pm_work');
SELECT mq.send('pm_log', jsonb_build_object('n', n)) FROM generate_series(1, 3) n;
SHOW mq.pool_mode;
SET mq.pool_mode = 'transaction';
\set VERBOSITY default
SELECT mq.register_consumer('c1');
SELECT mq.listen('pm_work');
\set VERBOSITY terse
-- autocommit polls: the same three messages each time
SELECT "offset" FROM mq.poll('pm_log', 'g', 'm1');
SELECT "offset" FROM mq.poll('pm_log', 'g', 'm1');
-- in a transaction the position moves
BEGIN;
SELECT "offset" FROM mq.poll('pm_log', 'g', 'm1', 2);
SELECT "offset" FROM mq.poll('pm_log', 'g', 'm1');
COMMIT;
SET mq.pool_mode = 'nonsense';
RESET mq.pool_mode;
-- back to session mode: registration and LISTEN work
SELECT mq.register_consumer('c1') IS NOT NULL AS registered;
SELECT mq.listen('pm_work');
SELECT mq.unlisten('pm_work');
SELECT mq.unregister_consumer();
SELECT mq.drop_queue('pm_log');
SELECT mq.drop_queue('pm_work');
DROP EXTENSION mq;
