-- pgbench script: one committed signup.
-- The user row and the welcome email are one transaction: the message
-- exists iff the user does (DESIGN.md, "the signup scenario").
\set n random(1, 1000000000)
BEGIN;
INSERT INTO users (email) VALUES ('user-' || :client_id || '-' || :n || '@example.com') RETURNING id AS user_id \gset
SELECT mq.send('emails', jsonb_build_object('template', 'welcome', 'user_id', :user_id));
COMMIT;
