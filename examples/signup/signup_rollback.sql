-- pgbench script: a signup that fails after enqueueing and rolls back
-- (say, a later step of the request threw).  Neither the user nor the
-- welcome email nor any of the three onboarding SMS may survive: none of
-- these messages must ever be delivered.
--
-- The rolled-back rows leave no trace, so the attempt is counted in a
-- sequence (sequences are not transactional): demo.sh compares it with
-- the user ids the rollbacks burned, and checks that no email and no SMS
-- went out for any of them.
\set n random(1, 1000000000)
BEGIN;
SELECT nextval('signup_rollbacks');
INSERT INTO users (email) VALUES ('rollback-' || :client_id || '-' || :n || '@example.com') RETURNING id AS user_id \gset
SELECT mq.send('emails', jsonb_build_object('template', 'welcome', 'user_id', :user_id));
SELECT mq.send_batch('sms',
    ARRAY[jsonb_build_object('template', 'welcome', 'user_id', :user_id, 'step', 1),
          jsonb_build_object('template', 'product_tour', 'user_id', :user_id, 'step', 2)],
    keys => ARRAY[:user_id::text, :user_id::text]);
SELECT mq.send('sms', jsonb_build_object('template', 'check_in', 'user_id', :user_id, 'step', 3),
    key => :user_id::text, delay => make_interval(secs => :checkin_delay));
ROLLBACK;
