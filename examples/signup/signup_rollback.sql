-- pgbench script: a signup that fails after enqueueing and rolls back
-- (say, a later step of the request threw).  Neither the user nor the
-- welcome email may survive: its message must never be delivered.
--
-- The rolled-back rows leave no trace, so the attempt is counted in a
-- sequence (sequences are not transactional): demo.sh compares it with
-- the user ids the rollbacks burned, and checks that no email went out
-- for any of them.
\set n random(1, 1000000000)
BEGIN;
SELECT nextval('signup_rollbacks');
INSERT INTO users (email) VALUES ('rollback-' || :client_id || '-' || :n || '@example.com') RETURNING id AS user_id \gset
SELECT mq.send('emails', jsonb_build_object('template', 'welcome', 'user_id', :user_id));
ROLLBACK;
