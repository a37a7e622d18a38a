-- pgbench script: one committed signup.
-- The user row, the welcome email and the onboarding SMS sequence are one
-- transaction: the messages exist iff the user does (DESIGN.md, "the signup
-- scenario").  The SMS go to the keyed queue 'sms' with key = user id, so
-- whatever the number of workers, a user gets welcome (1), product tour (2)
-- and check-in (3) in that order.  The check-in is delayed by
-- :checkin_delay seconds (pgbench -D; a real product would wait 3 days).
\set n random(1, 1000000000)
BEGIN;
INSERT INTO users (email) VALUES ('user-' || :client_id || '-' || :n || '@example.com') RETURNING id AS user_id \gset
SELECT mq.send('emails', jsonb_build_object('template', 'welcome', 'user_id', :user_id));
SELECT mq.send_batch('sms',
    ARRAY[jsonb_build_object('template', 'welcome', 'user_id', :user_id, 'step', 1),
          jsonb_build_object('template', 'product_tour', 'user_id', :user_id, 'step', 2)],
    keys => ARRAY[:user_id::text, :user_id::text]);
SELECT mq.send('sms', jsonb_build_object('template', 'check_in', 'user_id', :user_id, 'step', 3),
    key => :user_id::text, delay => make_interval(secs => :checkin_delay));
COMMIT;
