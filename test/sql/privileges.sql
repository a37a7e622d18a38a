-- privileges: who may send, read/ack, and administer.  mq_producer sends,
-- mq_consumer reads/acks/nacks/extends/archives and sees metrics, mq_admin
-- (member of both) also creates, drops, purges and runs maintain; per-queue
-- grants are tested in hostile_roles.  The public functions may be called
-- by anyone and check the caller's rights themselves (42501).  Nobody
-- needs, or gets, rights on mq's tables and sequences.  Roles are created
-- and dropped here.
CREATE EXTENSION mq;
\set VERBOSITY terse
SET client_min_messages = warning;
CREATE ROLE regress_mq_nobody;
CREATE ROLE regress_mq_producer IN ROLE mq_producer;
CREATE ROLE regress_mq_consumer IN ROLE mq_consumer;
CREATE ROLE regress_mq_admin IN ROLE mq_admin;
CREATE ROLE regress_mq_monitor IN ROLE mq_monitor;
-- monitoring tools usually run as a member of pg_monitor, which has mq_monitor
CREATE ROLE regress_mq_pg_monitor IN ROLE pg_monitor;
-- a role with USAGE on the schema granted by hand: no different from any other
CREATE ROLE regress_mq_usage_only;
GRANT USAGE ON SCHEMA mq TO regress_mq_usage_only;
RESET client_min_messages;

SELECT mq.create_queue('priv');
SELECT mq.send('priv', '{"n": 1}') AS m1 \gset
SELECT 'mq.q_' || queue_id || '_0' AS qtable, 'mq.a_' || queue_id AS atable, 'mq.q_' || queue_id || '_acked' AS aseq
  FROM mq.queue WHERE queue_name = 'priv' \gset
CREATE TEMP TABLE before AS SELECT depth, in_flight, delayed, total_sent, total_acked FROM mq.metrics('priv');
GRANT SELECT ON before TO PUBLIC;

-- ---- a role without rights: 42501 everywhere ------------------------------
SET ROLE regress_mq_nobody;
SELECT mq.send('priv', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.send_batch('priv', ARRAY['{}']::jsonb[]);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM mq.read('priv');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.ack('priv', :m1);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.purge('priv');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.drop_queue('priv');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.create_queue('priv2');
\echo :LAST_ERROR_SQLSTATE
-- the view shows only queues the caller has a right on: none
SELECT count(*) AS visible_queues FROM mq.queues;
RESET ROLE;

SET ROLE regress_mq_usage_only;
SELECT mq.send('priv', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM mq.read('priv');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.ack('priv', :m1);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.ack('priv', ARRAY[:m1]::bigint[]);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.nack('priv', :m1);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.extend('priv', :m1, '1 minute');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.archive('priv', :m1);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.purge('priv');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.drop_queue('priv');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.create_queue('priv2');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.maintain();
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM mq.metrics('priv');
\echo :LAST_ERROR_SQLSTATE
-- the view shows only queues the caller has a right on: none
SELECT count(*) AS visible_queues FROM mq.queues;
SELECT * FROM mq.queue;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SELECT m = b AS unchanged FROM (SELECT depth, in_flight, delayed, total_sent, total_acked FROM mq.metrics('priv')) m, before b;
SELECT count(*) AS queues FROM mq.queues;

-- ---- mq_producer: may send, not read, ack or administer -------------------
SET ROLE regress_mq_producer;
SELECT mq.send('priv', '{"n": 2}') - :m1 AS rel_id;
SELECT count(*) FROM mq.send_batch('priv', ARRAY['{"n": 3}', '{"n": 4}']::jsonb[]);
SELECT queue_name FROM mq.queues;
SELECT * FROM mq.read('priv');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.ack('priv', :m1);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.nack('priv', :m1);
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM mq.metrics('priv');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.purge('priv');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.drop_queue('priv');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.create_queue('priv2');
\echo :LAST_ERROR_SQLSTATE
-- no rights on the tables that hold the messages
SELECT count(*) FROM mq.queue;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM :qtable;
\echo :LAST_ERROR_SQLSTATE
INSERT INTO :qtable (vt, payload) VALUES (now(), '{"forged": true}');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- ---- mq_consumer: may read, ack, nack, extend, archive, see metrics -------
SET ROLE regress_mq_consumer;
SELECT msg_id - :m1 AS rel_id, payload, attempts FROM mq.read('priv', 1);
SELECT mq.ack('priv', :m1);
SELECT msg_id - :m1 AS rel_id, payload FROM mq.read('priv', 1) \gset c_
SELECT mq.nack('priv', :m1 + :c_rel_id, delay => '0', error => 'retry me');
SELECT msg_id - :m1 AS rel_id, attempts, last_error, receipt AS c_receipt FROM mq.read('priv', 1) \gset
SELECT :rel_id AS rel_id, :attempts AS attempts, :'last_error' AS last_error;
SELECT mq.extend('priv', :m1 + :rel_id, '1 minute', :c_receipt) IS NOT NULL AS extended;
SELECT mq.archive('priv', :m1 + :rel_id, :c_receipt);
SELECT mq.ack('priv', ARRAY(SELECT msg_id FROM mq.read('priv', 10)));
SELECT depth, in_flight, delayed, total_sent, total_acked FROM mq.metrics('priv');
SELECT queue_name FROM mq.queues;
-- may not send, purge or administer
SELECT mq.send('priv', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.send_batch('priv', ARRAY['{}']::jsonb[]);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.purge('priv');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.drop_queue('priv');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.create_queue('priv2');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.maintain();
\echo :LAST_ERROR_SQLSTATE
-- no rights on mq's tables, sequences or internal functions
SELECT count(*) FROM mq.queue;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM :qtable;
\echo :LAST_ERROR_SQLSTATE
DELETE FROM :qtable;
\echo :LAST_ERROR_SQLSTATE
UPDATE :qtable SET vt = now();
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM :atable;
\echo :LAST_ERROR_SQLSTATE
SELECT nextval(:'aseq');
\echo :LAST_ERROR_SQLSTATE
SELECT mq._queue_id('priv');
\echo :LAST_ERROR_SQLSTATE
SELECT mq._invalidate();
\echo :LAST_ERROR_SQLSTATE
SELECT mq._check_queue_name('x');
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- ---- mq_admin: everything through the functions, still no table rights ---
SET ROLE regress_mq_admin;
SELECT mq.create_queue('priv2', dead_letter_queue => 'priv');
SELECT mq.send('priv2', '{"n": 5}') IS NOT NULL AS sent;
SELECT payload FROM mq.read('priv2');
SELECT mq.maintain();
SELECT mq.purge('priv2');
SELECT mq.drop_queue('priv2');
SELECT count(*) FROM mq.queue;
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM :qtable;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;

-- ---- mq_monitor: every queue's metrics, and nothing else -----------------
SELECT mq.send('priv', '{"n": 9}') AS m9 \gset
SELECT mq.create_queue('priv_log', partitions => 1);
SELECT mq.send('priv_log', '{}', key => 'k') IS NOT NULL AS sent;
SELECT count(*) FROM mq.poll('priv_log', 'g', 'm');
SELECT mq.commit('priv_log', 'g', 0, 1);
SET ROLE regress_mq_monitor;
SELECT depth, in_flight, delayed, dead_lettered, total_sent - :m9 AS sent_after FROM mq.metrics('priv');
SELECT queue_name, depth, in_flight, total_sent > 0 AS sent FROM mq.metrics_all();
SELECT queue_name FROM mq.queues ORDER BY 1;
SELECT queue_name, consumer_group, partition, committed_offset, lag FROM mq.consumer_groups;
-- no payload, no claim, no change
SELECT * FROM mq.read('priv');
\echo :LAST_ERROR_SQLSTATE
SELECT * FROM mq.poll('priv_log', 'g2', 'm');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.commit('priv_log', 'g', 0, 1);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.seek('priv_log', 'g', 0, 0);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.send('priv', '{}');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.ack('priv', :m9);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.nack('priv', :m9);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.archive('priv', :m9);
\echo :LAST_ERROR_SQLSTATE
SELECT mq.purge('priv');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.drop_queue('priv');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.grant('priv', 'regress_mq_monitor', 'consume');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.listen('priv');
\echo :LAST_ERROR_SQLSTATE
SELECT mq.maintain();
\echo :LAST_ERROR_SQLSTATE
SELECT mq.register_consumer('spy');
\echo :LAST_ERROR_SQLSTATE
SELECT count(*) FROM :qtable;
\echo :LAST_ERROR_SQLSTATE
RESET ROLE;
SET ROLE regress_mq_pg_monitor;
SELECT queue_name, depth FROM mq.metrics_all();
RESET ROLE;
-- nobody and a producer get no rows, not an error
SET ROLE regress_mq_nobody;
SELECT count(*) AS monitored FROM mq.metrics_all();
RESET ROLE;
SET ROLE regress_mq_producer;
SELECT count(*) AS monitored FROM mq.metrics_all();
-- and mq.metrics says which right and roles would do
\set VERBOSITY default
SELECT * FROM mq.metrics('priv');
\set VERBOSITY terse
RESET ROLE;
SELECT mq.drop_queue('priv_log');

-- which mq functions a role without any mq right may execute: the public
-- ones, which check rights inside, and the four helpers the views call
SELECT p.oid::regprocedure AS may_execute
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'mq' AND has_function_privilege('regress_mq_nobody', p.oid, 'EXECUTE')
 ORDER BY p.oid::regprocedure::text COLLATE "C";
-- and nobody but mq_owner owns or may execute anything else
SELECT p.oid::regprocedure AS internal_executable_by_the_roles
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 CROSS JOIN (VALUES ('regress_mq_producer'), ('regress_mq_consumer'), ('regress_mq_admin'), ('regress_mq_monitor')) r(rolname)
 WHERE n.nspname = 'mq' AND has_function_privilege(r.rolname, p.oid, 'EXECUTE')
   AND NOT has_function_privilege('regress_mq_nobody', p.oid, 'EXECUTE');
-- mq_owner owns the SECURITY DEFINER bodies only; the installer owns the
-- rest, and the few bodies that create, drop or grant on tables
SELECT p.prosecdef, pg_get_userbyid(p.proowner) = current_user AS installer_owns,
       pg_get_userbyid(p.proowner) = 'mq_owner' AS mq_owner_owns, count(*) > 0 AS some
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = 'mq'
 GROUP BY 1, 2, 3 ORDER BY 1, 2;
SELECT p.proname AS installer_security_definer
  FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 WHERE n.nspname = 'mq' AND p.prosecdef AND pg_get_userbyid(p.proowner) <> 'mq_owner' ORDER BY 1;
SELECT nspowner = 'mq_owner'::regrole AS mq_owner_owns_schema, has_schema_privilege('mq_owner', 'mq', 'CREATE')
  FROM pg_namespace WHERE nspname = 'mq';
SELECT r.rolname, r.rolsuper, r.rolcanlogin FROM pg_roles r WHERE r.rolname = 'mq_owner';
-- and nobody has any right on a table or sequence of mq except the views
SELECT r.rolname, c.relname
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 CROSS JOIN (VALUES ('regress_mq_producer'), ('regress_mq_consumer'), ('regress_mq_admin'), ('regress_mq_monitor')) r(rolname)
 WHERE n.nspname = 'mq' AND c.relkind IN ('r', 'S', 'v', 'p')
   AND (has_table_privilege(r.rolname, c.oid, 'SELECT, INSERT, UPDATE, DELETE, TRUNCATE')
        OR (c.relkind = 'S' AND has_sequence_privilege(r.rolname, c.oid, 'USAGE, SELECT, UPDATE')))
 ORDER BY 1, 2;

-- the installer-owned helpers refuse anything but one queue's objects, even
-- to mq_owner (whose compromise they must not turn into a superuser's): no
-- other table, no privilege but the three rights, no SQL in a privilege
SELECT mq._rights_table('priv') AS rights \gset
SET ROLE mq_owner;
SELECT mq._set_right('pg_catalog.pg_authid', 'regress_mq_nobody', 'SELECT', true);
SELECT mq._set_right('mq.queue', 'regress_mq_nobody', 'SELECT', true);
SELECT mq._set_right(:'rights', 'regress_mq_nobody', 'INSERT', true);
SELECT mq._set_right(:'rights', 'regress_mq_nobody',
                     'SELECT ON mq.queue TO regress_mq_nobody; ALTER ROLE regress_mq_nobody SUPERUSER; GRANT SELECT', true);
SELECT mq._grant_to_owner('queue');
SELECT mq._grant_to_owner('q_1; DROP TABLE mq.queue');
SELECT mq._set_right(:'rights', 'regress_mq_nobody', 'SELECT', true);
SELECT mq._set_right(:'rights', 'regress_mq_nobody', 'SELECT', false);
RESET ROLE;
SELECT rolsuper FROM pg_roles WHERE rolname = 'regress_mq_nobody';
SELECT has_table_privilege('regress_mq_nobody', 'pg_catalog.pg_authid', 'SELECT') AS authid,
       has_table_privilege('regress_mq_nobody', 'mq.queue', 'SELECT') AS catalog;

-- mq.citus_distribute() is for a Citus coordinator: on one server it is
-- refused and mq_owner keeps NOLOGIN
SELECT mq.citus_distribute();
SELECT rolcanlogin FROM pg_roles WHERE rolname = 'mq_owner';

-- the admin's queue was owned by nobody but mq: no object depends on the roles
SELECT mq.drop_queue('priv');
SET client_min_messages = warning;
REVOKE USAGE ON SCHEMA mq FROM regress_mq_usage_only;
DROP ROLE regress_mq_nobody, regress_mq_producer, regress_mq_consumer, regress_mq_admin, regress_mq_usage_only,
    regress_mq_monitor, regress_mq_pg_monitor;
RESET client_min_messages;
SELECT count(*) AS leftover_roles FROM pg_roles WHERE rolname LIKE 'regress_mq_%';
DROP EXTENSION mq;
