-- mq: message queues inside PostgreSQL.
--
-- This file is the single source of the current version; the build copies it
-- to sql/mq--<version>.sql.  Objects are created schema-qualified and every
-- function body runs with a pinned search_path or qualifies what it calls,
-- because the script runs with the extension schema on search_path.

\echo Use "CREATE EXTENSION mq" to load this file. \quit

CREATE SCHEMA mq;
COMMENT ON SCHEMA mq IS 'mq: message queues (work queues with visibility timeouts, retries and dead-letter queues)';

-- Roles.  Roles are cluster-wide, so a second database that installs mq
-- reuses them.  mq_producer, mq_consumer and mq_admin carry a right on every
-- queue; per-queue rights are granted with mq.grant (src/rights.c).
-- mq_owner is the role mq's statements run as and owns only the
-- SECURITY DEFINER bodies (the installer owns the schema and the rest): it
-- is not a superuser and cannot create in schema mq, so a mistake in mq can
-- never hand a caller more than the queues.  Grant mq_owner to nobody.  Nobody
-- gets rights on the tables that hold the messages: the functions are the
-- only way in, and they check the caller's rights themselves.  mq_monitor
-- may read every queue's metrics, consumer groups and consumers, and
-- nothing else (no payload, no send, read, ack or purge): the role for
-- dashboards and exporters.  pg_monitor, PostgreSQL's role for monitoring
-- tools, is a member, so that an exporter set up the usual way sees the
-- queues too.
DO $$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['mq_producer', 'mq_consumer', 'mq_admin', 'mq_monitor', 'mq_owner'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) v_role) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', v_role);
        END IF;
    END LOOP;
END
$$;
GRANT mq_producer, mq_consumer TO mq_admin;
GRANT mq_monitor TO pg_monitor;
GRANT USAGE ON SCHEMA mq TO PUBLIC;

-- The queue catalog.  A queue's tables and sequences are named by its
-- numeric id, so that no user text is ever spliced into SQL; their layout
-- is in docs/concepts.md#storage (work queues: segments mq.q_<id>_<n>, a
-- delayed table mq.q_<id>_d, an archive mq.a_<id>, the msg_id sequence
-- mq.q_<id>_seq; partitioned queues: the parent mq.p_<id> of the segments
-- mq.p_<id>_<n>, the head table mq.p_<id>_head and one offset sequence
-- mq.p_<id>_o<partition> per partition).  Each catalog table and sequence
-- is followed by its GRANT to mq_owner, the one role with rights on them
-- (PostgreSQL gives PUBLIC none on a new table).
CREATE TABLE mq.queue (
    queue_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue_name text NOT NULL UNIQUE,
    visibility_timeout interval NOT NULL,
    max_attempts integer NOT NULL,
    dead_letter_queue_id bigint REFERENCES mq.queue (queue_id),
    retry_delay interval NOT NULL,
    retry_backoff double precision NOT NULL,
    retry_delay_max interval NOT NULL,
    ordering text NOT NULL DEFAULT 'none' CHECK (ordering IN ('none', 'key')),
    dead_lettered bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now(),
    -- partitioned queues (partitions IS NOT NULL): the log's settings
    partitions integer,
    retention interval,
    session_timeout interval,
    notify boolean NOT NULL DEFAULT true,
    rate_limit double precision,    -- messages per second handed out, NULL: no limit
    rate_limit_burst integer
);
COMMENT ON TABLE mq.queue IS 'mq internal: one row per queue; use the view mq.queues';
GRANT SELECT, INSERT, UPDATE, DELETE ON mq.queue TO mq_owner;
GRANT USAGE, SELECT, UPDATE ON SEQUENCE mq.queue_queue_id_seq TO mq_owner;

-- The segments of each queue: which table takes new messages (current),
-- which still hold some (sealed) and which are empty (free), and for work
-- queues the first msg_id each was given.  Only maintenance changes these
-- rows, a few times a minute at most (src/segment.c).
CREATE TABLE mq.segment (
    queue_id bigint NOT NULL REFERENCES mq.queue (queue_id) ON DELETE CASCADE,
    segment integer NOT NULL,
    state text NOT NULL CHECK (state IN ('current', 'sealed', 'free')),
    epoch integer NOT NULL DEFAULT 0,  -- times the table was emptied and reused
    lo bigint NOT NULL DEFAULT 1,      -- work queues: first msg_id while current
    since timestamptz NOT NULL DEFAULT pg_catalog.now(),
    PRIMARY KEY (queue_id, segment)
);
COMMENT ON TABLE mq.segment IS 'mq internal: the segment tables of each queue and their state';
GRANT SELECT, INSERT, UPDATE, DELETE ON mq.segment TO mq_owner;
SELECT pg_catalog.pg_extension_config_dump('mq.segment', '');

-- Consumer groups of partitioned queues: per partition, the member holding
-- the lease and until when (rewritten a few times per session timeout),
-- and, in a table of its own, the committed offsets.  Where a member has
-- read to is kept by its session, not here (src/partition.c).
CREATE TABLE mq.group_partition (
    queue_id bigint NOT NULL REFERENCES mq.queue (queue_id) ON DELETE CASCADE,
    consumer_group text NOT NULL,
    partition integer NOT NULL,
    member text,
    lease_until timestamptz,
    lease_epoch bigint NOT NULL DEFAULT 0,  -- bumped whenever the lease is taken afresh
    PRIMARY KEY (queue_id, consumer_group, partition)
) WITH (fillfactor = 50);
COMMENT ON TABLE mq.group_partition IS 'mq internal: leases of consumer groups; use the view mq.consumer_groups';
GRANT SELECT, INSERT, UPDATE, DELETE ON mq.group_partition TO mq_owner;

-- A commit inserts a row; the committed offset of a group's partition is
-- its row with the highest commit_seq, the first one a backward scan of
-- the primary key meets.  Updating one row per partition instead left a
-- version per commit that a snapshot held elsewhere keeps, and every
-- commit and lookup stepped over them (bench shape 6); superseded rows are
-- deleted by maintenance (mq._compact_offsets).  Commits of one partition
-- take its lease row's lock first, so commit_seq follows commit order.
CREATE SEQUENCE mq.group_offset_seq AS bigint;
CREATE TABLE mq.group_offset (
    queue_id bigint NOT NULL REFERENCES mq.queue (queue_id) ON DELETE CASCADE,
    consumer_group text NOT NULL,
    partition integer NOT NULL,
    commit_seq bigint NOT NULL DEFAULT pg_catalog.nextval('mq.group_offset_seq'),
    committed bigint NOT NULL,
    PRIMARY KEY (queue_id, consumer_group, partition, commit_seq)
);
COMMENT ON TABLE mq.group_offset IS 'mq internal: committed offsets of consumer groups, one row per commit (the latest counts); use the view mq.consumer_groups';
GRANT SELECT, INSERT, UPDATE, DELETE ON mq.group_offset TO mq_owner;
GRANT USAGE ON SEQUENCE mq.group_offset_seq TO mq_owner;
SELECT pg_catalog.pg_extension_config_dump('mq.group_offset', '');
SELECT pg_catalog.pg_extension_config_dump('mq.group_offset_seq', '');

CREATE TABLE mq.group_member (
    queue_id bigint NOT NULL REFERENCES mq.queue (queue_id) ON DELETE CASCADE,
    consumer_group text NOT NULL,
    member text NOT NULL,
    last_seen timestamptz NOT NULL,
    session bigint,             -- token of the session polling as member (src/consumer.c)

    PRIMARY KEY (queue_id, consumer_group, member)
) WITH (fillfactor = 50);
COMMENT ON TABLE mq.group_member IS 'mq internal: members of consumer groups and when each last polled or heartbeat';
GRANT SELECT, INSERT, UPDATE, DELETE ON mq.group_member TO mq_owner;

-- Dead letters not yet added to mq.queue.dead_lettered: a row per statement
-- that dead-lettered, folded in by maintenance.  Only inserted into, so
-- dead-lettering transactions neither lock the queue's row nor wait for
-- each other (src/storage.c).
CREATE TABLE mq.dead_letter_tally (
    queue_id bigint NOT NULL,
    dead_lettered bigint NOT NULL
);
CREATE INDEX dead_letter_tally_queue_id ON mq.dead_letter_tally (queue_id);
COMMENT ON TABLE mq.dead_letter_tally IS 'mq internal: dead letters not yet counted in mq.queue.dead_lettered';
GRANT SELECT, INSERT, UPDATE, DELETE ON mq.dead_letter_tally TO mq_owner;
SELECT pg_catalog.pg_extension_config_dump('mq.dead_letter_tally', '');
SELECT pg_catalog.pg_extension_config_dump('mq.queue', '');
-- and its id sequence, or a restored database would hand out used ids
SELECT pg_catalog.pg_extension_config_dump('mq.queue_queue_id_seq', '');

CREATE TYPE mq.message AS (
    msg_id bigint,
    receipt bigint,
    key text,
    payload jsonb,
    headers jsonb,
    attempts integer,
    enqueued_at timestamptz,
    visible_at timestamptz,
    last_error text,
    dead_letter jsonb
);
COMMENT ON TYPE mq.message IS
'A delivered message, as mq.read returns it (docs/reference.md#type-mqmessage).';

-- Functions and views, by feature.  sql/mq--0.1.0--0.2.0.sql holds 0.2.0's
-- copy of this file from this line to its end.
--
-- Privileges.  Each function is followed by its privileges: REVOKE ALL
-- FROM PUBLIC (PostgreSQL lets PUBLIC execute a new function), then GRANT
-- EXECUTE to who may call it: mq_owner always, PUBLIC too for the public
-- functions, which check the caller's rights themselves (src/rights.c),
-- and for the few helpers the views call; then, for a SECURITY DEFINER
-- body, ALTER FUNCTION ... OWNER TO mq_owner, so that it runs as mq_owner,
-- never as the superuser who installed mq.  mq_owner may use mq's tables
-- but owns none, has no CREATE on schema mq, and so can neither replace a
-- function nor plant a trigger, an index or a look-alike that a superuser
-- would run.  The few bodies that must create, drop or grant on tables
-- stay the installer's and take only numbers and oids.  Each view is
-- followed by its GRANT SELECT TO PUBLIC (the views filter by the
-- caller's rights).  The check at the end of the file and
-- test/sql/privileges.sql catch a function left without its privileges.

-- ---------------------------------------------------------------------------
-- Rights: whether the caller may use a queue, and per-queue grants
-- (src/rights.c).

CREATE FUNCTION mq._can(queue_id bigint, privilege text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'mq_can' LANGUAGE C STABLE PARALLEL SAFE;
COMMENT ON FUNCTION mq._can(bigint, text) IS
'mq internal: whether the current user may use the queue for privilege (send, consume, admin, monitor, any); the views filter with it';
REVOKE ALL ON FUNCTION mq._can(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._can(bigint, text) TO PUBLIC, mq_owner;

-- Per-queue rights are table privileges on the queue's empty table
-- mq.q_<id>_rights (p_<id>_rights): SELECT = consume, REFERENCES = send,
-- TRUNCATE = admin (src/rights.c).  PostgreSQL then keeps them: role
-- membership, renames, pg_dump's GRANTs, DROP ROLE refused while they
-- exist, DROP OWNED revoking them.
CREATE FUNCTION mq._set_right(p_rights regclass, p_role regrole, p_privilege text, p_grant boolean)
RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- it runs as the installer: nothing but the three privileges that are
    -- rights, on nothing but a queue's rights table
    IF p_privilege IS NULL OR p_privilege OPERATOR(pg_catalog.<>) ALL (ARRAY['SELECT', 'REFERENCES', 'TRUNCATE'])
       OR p_grant IS NULL OR p_role IS NULL
       OR NOT EXISTS (SELECT FROM pg_catalog.pg_class c
                       WHERE c.oid OPERATOR(pg_catalog.=) p_rights
                         AND c.relnamespace OPERATOR(pg_catalog.=) 'mq'::pg_catalog.regnamespace
                         AND c.relname OPERATOR(pg_catalog.~) '^[qp]_[0-9]+_rights$') THEN
        RAISE EXCEPTION 'invalid right' USING ERRCODE = '22023';
    END IF;
    EXECUTE format(CASE WHEN p_grant THEN 'GRANT %s ON %s TO %s' ELSE 'REVOKE %s ON %s FROM %s' END,
                   p_privilege, p_rights, p_role);
END
$$;
COMMENT ON FUNCTION mq._set_right(regclass, regrole, text, boolean) IS 'mq internal: grants or revokes one privilege on a queue''s rights table';
REVOKE ALL ON FUNCTION mq._set_right(regclass, regrole, text, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._set_right(regclass, regrole, text, boolean) TO mq_owner;

-- The table privilege that stands for a right, and the queue's rights table.
CREATE FUNCTION mq._right_privilege(p_privilege text) RETURNS text
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_privilege IS NULL THEN
        RAISE EXCEPTION 'privilege must not be NULL' USING ERRCODE = '22004';
    ELSIF p_privilege = 'consume' THEN
        RETURN 'SELECT';
    ELSIF p_privilege = 'send' THEN
        RETURN 'REFERENCES';
    ELSIF p_privilege = 'admin' THEN
        RETURN 'TRUNCATE';
    END IF;
    RAISE EXCEPTION 'invalid privilege "%"', p_privilege
        USING ERRCODE = '22023', HINT = 'Use ''send'', ''consume'' or ''admin''.';
END
$$;
COMMENT ON FUNCTION mq._right_privilege(text) IS 'mq internal: the table privilege that stands for send, consume or admin; 22004 NULL, 22023 unknown';
REVOKE ALL ON FUNCTION mq._right_privilege(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._right_privilege(text) TO mq_owner;

CREATE FUNCTION mq._rights_table(p_queue_name text) RETURNS regclass
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT format('mq.%I', CASE WHEN q.partitions IS NULL THEN 'q_' ELSE 'p_' END
                                   || q.queue_id || '_rights')::regclass
              FROM mq.queue q WHERE q.queue_id = mq._queue_id(p_queue_name));
END
$$;
COMMENT ON FUNCTION mq._rights_table(text) IS 'mq internal: the empty table whose privileges are a queue''s per-queue rights; 42704 no such queue';
REVOKE ALL ON FUNCTION mq._rights_table(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._rights_table(text) TO mq_owner;
ALTER FUNCTION mq._rights_table(text) OWNER TO mq_owner;

CREATE FUNCTION mq._grant(queue_name text, role regrole, privilege text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_privilege text := mq._right_privilege(_grant.privilege);
    v_rights regclass := mq._rights_table(_grant.queue_name);
BEGIN
    IF _grant.role IS NULL THEN
        RAISE EXCEPTION 'role must not be NULL' USING ERRCODE = '22004';
    END IF;
    PERFORM mq._set_right(v_rights, _grant.role, v_privilege, true);
END
$$;
COMMENT ON FUNCTION mq._grant(text, regrole, text) IS 'mq internal: body of mq.grant, reached through mq_checked (src/rights.c)';
REVOKE ALL ON FUNCTION mq._grant(text, regrole, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._grant(text, regrole, text) TO mq_owner;
ALTER FUNCTION mq._grant(text, regrole, text) OWNER TO mq_owner;

CREATE FUNCTION mq.grant(queue_name text, role regrole, privilege text) RETURNS void
    AS 'MODULE_PATHNAME', 'mq_checked' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.grant(text, regrole, text) IS
'Grants a role the send, consume or admin right on one queue (docs/reference.md#mqgrant).';
REVOKE ALL ON FUNCTION mq.grant(text, regrole, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.grant(text, regrole, text) TO PUBLIC, mq_owner;

CREATE FUNCTION mq._revoke(queue_name text, role regrole, privilege text) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_privilege text := mq._right_privilege(_revoke.privilege);
    v_rights regclass := mq._rights_table(_revoke.queue_name);
    v_had boolean;
BEGIN
    IF _revoke.role IS NULL THEN
        RAISE EXCEPTION 'role must not be NULL' USING ERRCODE = '22004';
    END IF;
    SELECT EXISTS (SELECT FROM pg_catalog.pg_class c, pg_catalog.aclexplode(c.relacl) e
                    WHERE c.oid = v_rights AND e.grantee = _revoke.role AND e.privilege_type = v_privilege)
      INTO v_had;
    IF v_had THEN
        PERFORM mq._set_right(v_rights, _revoke.role, v_privilege, false);
    END IF;
    RETURN v_had;
END
$$;
COMMENT ON FUNCTION mq._revoke(text, regrole, text) IS 'mq internal: body of mq.revoke, reached through mq_checked (src/rights.c)';
REVOKE ALL ON FUNCTION mq._revoke(text, regrole, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._revoke(text, regrole, text) TO mq_owner;
ALTER FUNCTION mq._revoke(text, regrole, text) OWNER TO mq_owner;

CREATE FUNCTION mq.revoke(queue_name text, role regrole, privilege text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'mq_checked' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.revoke(text, regrole, text) IS
'Revokes a right granted with mq.grant; returns whether the role had it (docs/reference.md#mqrevoke).';
REVOKE ALL ON FUNCTION mq.revoke(text, regrole, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.revoke(text, regrole, text) TO PUBLIC, mq_owner;

CREATE VIEW mq.queue_privileges WITH (security_barrier) AS
SELECT q.queue_name, a.grantee::pg_catalog.regrole::pg_catalog.text AS grantee,
       CASE a.privilege_type WHEN 'REFERENCES' THEN 'send' WHEN 'SELECT' THEN 'consume' ELSE 'admin' END AS privilege
  FROM mq.queue q
  JOIN pg_catalog.pg_class c ON c.relnamespace OPERATOR(pg_catalog.=) 'mq'::pg_catalog.regnamespace
   AND c.relname OPERATOR(pg_catalog.=) (CASE WHEN q.partitions IS NULL THEN 'q_' ELSE 'p_' END
                                         OPERATOR(pg_catalog.||) q.queue_id OPERATOR(pg_catalog.||) '_rights')
 CROSS JOIN LATERAL pg_catalog.aclexplode(c.relacl) a
 WHERE a.grantee OPERATOR(pg_catalog.<>) c.relowner
   AND (mq._can(q.queue_id, 'admin') OR pg_catalog.pg_has_role(a.grantee, 'MEMBER'));
COMMENT ON VIEW mq.queue_privileges IS
'The per-queue grants made with mq.grant that the caller may see (docs/reference.md#view-mqqueue_privileges).';
GRANT SELECT ON mq.queue_privileges TO PUBLIC;

-- ---------------------------------------------------------------------------
-- The queue catalog and its administration: create, alter, drop, purge,
-- and the view mq.queues.  The admin bodies are PL/pgSQL, SECURITY DEFINER
-- with a pinned search_path, reached through mq_checked (src/rights.c).

-- Internal helpers the admin bodies call.
CREATE FUNCTION mq._check_queue_name(queue_name text) RETURNS void
    AS 'MODULE_PATHNAME', 'mq_check_queue_name' LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION mq._check_queue_name(text) IS
'mq internal: raises 22004 for NULL, 22023 for bad characters, 42622 for more than 48 bytes';
REVOKE ALL ON FUNCTION mq._check_queue_name(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._check_queue_name(text) TO mq_owner;

CREATE FUNCTION mq._invalidate() RETURNS void
    AS 'MODULE_PATHNAME', 'mq_invalidate' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq._invalidate() IS
'mq internal: tells every session at commit to drop its cached queue definitions and plans';
REVOKE ALL ON FUNCTION mq._invalidate() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._invalidate() TO mq_owner;

CREATE FUNCTION mq._queue_id(p_queue_name text) RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_queue_id bigint;
BEGIN
    IF p_queue_name IS NULL THEN
        RAISE EXCEPTION 'queue_name must not be NULL' USING ERRCODE = '22004';
    END IF;
    SELECT q.queue_id INTO v_queue_id FROM mq.queue q WHERE q.queue_name = p_queue_name;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'queue "%" does not exist', p_queue_name USING ERRCODE = '42704';
    END IF;
    RETURN v_queue_id;
END
$$;
COMMENT ON FUNCTION mq._queue_id(text) IS 'mq internal: the id of a queue; 22004 for NULL, 42704 when there is no such queue';
REVOKE ALL ON FUNCTION mq._queue_id(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._queue_id(text) TO mq_owner;
ALTER FUNCTION mq._queue_id(text) OWNER TO mq_owner;

CREATE FUNCTION mq._require_preload(what text) RETURNS void
    AS 'MODULE_PATHNAME', 'mq_require_preload' LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION mq._require_preload(text) IS 'mq internal: raises 55000 unless mq is in shared_preload_libraries';
REVOKE ALL ON FUNCTION mq._require_preload(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._require_preload(text) TO mq_owner;

-- '25/min' -> 0.4666: messages per second.  The rate must lie between one
-- message a day and 1000000/s: below that the time of the next token
-- (src/ratelimit.c) is beyond what a timestamp holds.  It is computed in
-- numeric, which does not overflow or underflow, from at most 10 integer
-- digits (more is above the limit in any unit) and 20 decimals (a rate
-- whose first significant digit comes later is below it).
CREATE FUNCTION mq._parse_rate(p_rate text) RETURNS double precision
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_m text[] := regexp_match(p_rate, '^\s*([0-9]+)(\.[0-9]+)?\s*/\s*(s|sec|second|min|minute|h|hour)\s*$');
    v_int text;
    v_rate numeric;
BEGIN
    IF v_m IS NULL THEN
        RAISE EXCEPTION 'invalid rate_limit "%"', pg_catalog.left(p_rate, 64)
            USING ERRCODE = '22023', HINT = 'Write a number of messages per s, min or h, like ''25/min''.';
    END IF;
    v_int := pg_catalog.ltrim(v_m[1], '0');
    IF pg_catalog.length(v_int) <= 10 THEN
        v_rate := ('0' || v_int || pg_catalog.left(coalesce(v_m[2], ''), 21))::numeric
                  / CASE WHEN v_m[3] IN ('min', 'minute') THEN 60
                         WHEN v_m[3] IN ('h', 'hour') THEN 3600 ELSE 1 END;
    END IF;
    IF v_rate IS NULL OR v_rate < 1::numeric / 86400 OR v_rate > 1000000 THEN
        RAISE EXCEPTION 'rate_limit "%" is out of range', pg_catalog.left(pg_catalog.btrim(p_rate), 64)
            USING ERRCODE = '22023',
                  DETAIL = 'A rate limit must be at least one message a day (0.0417/h) and at most 1000000/s.';
    END IF;
    RETURN v_rate::double precision;
END
$$;
COMMENT ON FUNCTION mq._parse_rate(text) IS 'mq internal: a rate limit such as ''25/min'' in messages per second; 22023 when malformed';
REVOKE ALL ON FUNCTION mq._parse_rate(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._parse_rate(text) TO mq_owner;

CREATE FUNCTION mq._interval_check(p_name text, p_value interval, p_min interval, p_max interval)
RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_value IS NULL THEN
        RAISE EXCEPTION '% must not be NULL', p_name USING ERRCODE = '22004';
    END IF;
    IF p_value < p_min OR p_value > p_max THEN
        RAISE EXCEPTION '% must be between % and %', p_name, p_min, p_max
            USING ERRCODE = '22023', DETAIL = format('The value given was %s.', p_value);
    END IF;
END
$$;
COMMENT ON FUNCTION mq._interval_check(text, interval, interval, interval) IS
'mq internal: raises 22004 when the interval is NULL and 22023 when it is outside [p_min, p_max]';
REVOKE ALL ON FUNCTION mq._interval_check(text, interval, interval, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._interval_check(text, interval, interval, interval) TO mq_owner;

CREATE FUNCTION mq._rate_settings(p_rate_limit text, p_burst integer)
RETURNS TABLE (rate double precision, burst integer)
LANGUAGE plpgsql VOLATILE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF p_rate_limit IS NULL OR p_rate_limit = 'none' THEN
        IF p_burst IS NOT NULL THEN
            RAISE EXCEPTION 'rate_limit_burst needs a rate_limit' USING ERRCODE = '22023';
        END IF;
        rate := NULL;
        burst := NULL;
        RETURN NEXT;
        RETURN;
    END IF;
    PERFORM mq._require_preload('rate limits');
    rate := mq._parse_rate(p_rate_limit);
    burst := coalesce(p_burst, greatest(1, ceil(rate)::integer));
    IF burst NOT BETWEEN 1 AND 1000000 THEN
        RAISE EXCEPTION 'rate_limit_burst must be between 1 and 1000000' USING ERRCODE = '22023';
    END IF;
    RETURN NEXT;
END
$$;
COMMENT ON FUNCTION mq._rate_settings(text, integer) IS 'mq internal: checks a rate limit and its burst (22023, 55000)';
REVOKE ALL ON FUNCTION mq._rate_settings(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._rate_settings(text, integer) TO mq_owner;

CREATE FUNCTION mq._check_settings(
    p_visibility_timeout interval, p_max_attempts integer, p_retry_delay interval,
    p_retry_backoff double precision, p_retry_delay_max interval, p_notify boolean,
    p_retention interval, p_session_timeout interval, p_partitioned boolean)
RETURNS void
LANGUAGE plpgsql IMMUTABLE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM mq._interval_check('visibility_timeout', p_visibility_timeout, '0', '12 hours');
    PERFORM mq._interval_check('retry_delay', p_retry_delay, '0', '7 days');
    PERFORM mq._interval_check('retry_delay_max', p_retry_delay_max, p_retry_delay, '7 days');
    IF p_max_attempts IS NULL OR p_retry_backoff IS NULL OR p_notify IS NULL THEN
        RAISE EXCEPTION 'max_attempts, retry_backoff and notify must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF p_max_attempts NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'max_attempts must be between 1 and 1000' USING ERRCODE = '22023';
    END IF;
    IF NOT p_retry_backoff BETWEEN 1.0 AND 10.0 THEN
        RAISE EXCEPTION 'retry_backoff must be between 1 and 10' USING ERRCODE = '22023';
    END IF;
    IF p_partitioned THEN
        PERFORM mq._interval_check('retention', p_retention, '1 minute', '3650 days');
        PERFORM mq._interval_check('session_timeout', p_session_timeout, '1 second', '1 hour');
    END IF;
END
$$;
COMMENT ON FUNCTION mq._check_settings(interval, integer, interval, double precision, interval, boolean, interval, interval, boolean) IS
'mq internal: the range checks shared by create_queue and alter_queue (22004, 22023)';
REVOKE ALL ON FUNCTION mq._check_settings(interval, integer, interval, double precision, interval, boolean, interval, interval, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._check_settings(interval, integer, interval, double precision, interval, boolean, interval, interval, boolean) TO mq_owner;

CREATE FUNCTION mq._purge_messages(queue_name text) RETURNS bigint
    AS 'MODULE_PATHNAME', 'mq_purge_messages' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq._purge_messages(text) IS 'mq internal: deletes every message of a work queue, with every key locked first and reading with the latest snapshot; returns how many';
REVOKE ALL ON FUNCTION mq._purge_messages(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._purge_messages(text) TO mq_owner;

CREATE FUNCTION mq._forget_queue(queue_id bigint) RETURNS void
    AS 'MODULE_PATHNAME', 'mq_forget_queue' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq._forget_queue(bigint) IS 'mq internal: frees the shared memory of a queue being dropped';
REVOKE ALL ON FUNCTION mq._forget_queue(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._forget_queue(bigint) TO mq_owner;

-- The tables of queues are owned by the superuser who installed mq and
-- created by the functions below, which alone run with that superuser's
-- rights (SECURITY DEFINER, only mq_owner may execute them, and they check
-- that what they are given names one queue's objects and nothing else).
-- mq_owner may read and write the tables and empty them, no more: it
-- cannot add triggers, indexes or functions anywhere
-- (docs/concepts.md#privileges).
CREATE FUNCTION mq._grant_to_owner(p_prefix text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_obj record;
BEGIN
    -- one queue's objects only: q_<id>, a_<id> or p_<id>
    IF p_prefix IS NULL OR NOT p_prefix OPERATOR(pg_catalog.~) '^[qap]_[0-9]+$' THEN
        RAISE EXCEPTION 'invalid queue table prefix' USING ERRCODE = '22023';
    END IF;
    FOR v_obj IN SELECT c.relname, c.relkind FROM pg_catalog.pg_class c
                  WHERE c.relnamespace OPERATOR(pg_catalog.=) 'mq'::pg_catalog.regnamespace
                    AND c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'p', 'S']::"char"[])
                    AND (c.relname OPERATOR(pg_catalog.=) p_prefix
                         OR pg_catalog.starts_with(c.relname, p_prefix OPERATOR(pg_catalog.||) '_'))
                    AND c.relname OPERATOR(pg_catalog.<>) (p_prefix OPERATOR(pg_catalog.||) '_rights') LOOP
        IF v_obj.relkind OPERATOR(pg_catalog.=) 'S' THEN
            EXECUTE format('GRANT USAGE, SELECT, UPDATE ON SEQUENCE mq.%I TO mq_owner', v_obj.relname);
        ELSE
            EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON mq.%I TO mq_owner', v_obj.relname);
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION mq._grant_to_owner(text) IS 'mq internal: lets mq_owner use the tables and sequences of one queue';
REVOKE ALL ON FUNCTION mq._grant_to_owner(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._grant_to_owner(text) TO mq_owner;

CREATE FUNCTION mq._drop_queue_tables(p_queue_id bigint, p_partitions integer) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_prefix text := CASE WHEN p_partitions IS NULL THEN 'q_' ELSE 'p_' END || p_queue_id;
    v_obj record;
BEGIN
    FOR v_obj IN SELECT c.relname, c.relkind FROM pg_catalog.pg_class c
                  WHERE c.relnamespace OPERATOR(pg_catalog.=) 'mq'::pg_catalog.regnamespace
                    AND c.relkind OPERATOR(pg_catalog.=) ANY (ARRAY['r', 'p', 'S']::"char"[])
                    AND (pg_catalog.starts_with(c.relname, v_prefix OPERATOR(pg_catalog.||) '_')
                         OR c.relname OPERATOR(pg_catalog.=) v_prefix
                         OR (p_partitions IS NULL
                             AND c.relname OPERATOR(pg_catalog.=) ('a_' OPERATOR(pg_catalog.||) p_queue_id)))
                    -- a segment goes with its parent
                    AND NOT c.relispartition
                  ORDER BY c.relkind DESC, c.relname LOOP
        EXECUTE format(CASE WHEN v_obj.relkind OPERATOR(pg_catalog.=) 'S' THEN 'DROP SEQUENCE mq.%I' ELSE 'DROP TABLE mq.%I' END,
                       v_obj.relname);
    END LOOP;
    -- and a distributed log's sequences on the workers
    IF p_partitions IS NOT NULL AND mq._citus_enabled() THEN
        PERFORM mq._citus_drop_worker_sequences(p_queue_id, p_partitions);
    END IF;
END
$$;
COMMENT ON FUNCTION mq._drop_queue_tables(bigint, integer) IS 'mq internal: drops the tables and sequences of one queue';
REVOKE ALL ON FUNCTION mq._drop_queue_tables(bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._drop_queue_tables(bigint, integer) TO mq_owner;

-- A work queue: four segment tables of the same shape, one taking new
-- messages, that maintenance empties with TRUNCATE once every message in
-- them is gone (so a held snapshot cannot make dead tuples pile up); a
-- delayed table for messages not yet due (a send delay, a retry backoff,
-- dead letters arriving), so that reads never step over them; the archive;
-- the msg_id sequence (CACHE 1: readers compare its last value with the
-- ids they hand out, src/offsets.c).
CREATE FUNCTION mq._create_queue_tables(p_queue_id bigint, p_keyed boolean) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_table text;
BEGIN
    EXECUTE format('CREATE SEQUENCE mq.%I AS bigint CACHE 1', 'q_' || p_queue_id || '_seq');
    FOR v_segment IN 0..4 LOOP
        -- 0..3: segments; 4: the delayed table
        v_table := 'q_' || p_queue_id || CASE WHEN v_segment = 4 THEN '_d' ELSE '_' || v_segment END;
        -- fillfactor leaves room on each page so that a claim (which changes
        -- only unindexed columns) is a HOT update and adds no index entry,
        -- even for a batch read that claims every message of a page.  The
        -- delayed table's claims change vt, which it indexes.
        EXECUTE format($ddl$
            CREATE TABLE mq.%1$I (
                msg_id bigint PRIMARY KEY,
                vt timestamptz NOT NULL,
                enqueued_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
                attempts integer NOT NULL DEFAULT 0,
                claimed boolean NOT NULL DEFAULT false,
                key text,
                payload jsonb NOT NULL,
                headers jsonb,
                last_error text,
                dead_letter jsonb,
                blocked boolean NOT NULL DEFAULT false,
                consumer bigint,    -- token of the registered consumer holding the claim
                lapsed boolean NOT NULL DEFAULT false  -- this claim took over a lapsed one
            ) WITH (fillfactor = %2$s)$ddl$, v_table, CASE WHEN v_segment = 4 THEN 70 ELSE 40 END);
        IF v_segment = 4 THEN
            EXECUTE format('CREATE INDEX %I ON mq.%I (vt)', v_table || '_vt', v_table);
        ELSE
            INSERT INTO mq.segment (queue_id, segment, state)
            VALUES (p_queue_id, v_segment, CASE WHEN v_segment = 0 THEN 'current' ELSE 'free' END);
        END IF;
        -- keyed ordering: a key's messages in msg_id order, wherever they are
        IF p_keyed THEN
            EXECUTE format('CREATE INDEX %I ON mq.%I (key, msg_id) WHERE key IS NOT NULL',
                           v_table || '_key', v_table);
        END IF;
    END LOOP;
    EXECUTE format($ddl$
        CREATE TABLE mq.%1$I (
            LIKE mq.%2$I INCLUDING DEFAULTS,
            archived_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
            PRIMARY KEY (msg_id)
        )$ddl$, 'a_' || p_queue_id, 'q_' || p_queue_id || '_0');
    EXECUTE format('CREATE SEQUENCE mq.%I', 'q_' || p_queue_id || '_acked');
    EXECUTE format('CREATE TABLE mq.%I ()', 'q_' || p_queue_id || '_rights');
    PERFORM mq._grant_to_owner('q_' || p_queue_id);
    PERFORM mq._grant_to_owner('a_' || p_queue_id);
    -- on a Citus coordinator after mq.citus_distribute(): by queue
    IF mq._citus_enabled() THEN
        PERFORM mq._citus_distribute_work_queue(p_queue_id);
    END IF;
END
$$;
COMMENT ON FUNCTION mq._create_queue_tables(bigint, boolean) IS 'mq internal: creates the tables of one work queue';
REVOKE ALL ON FUNCTION mq._create_queue_tables(bigint, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._create_queue_tables(bigint, boolean) TO mq_owner;

CREATE FUNCTION mq._create_queue(
    queue_name text,
    visibility_timeout interval DEFAULT '30 seconds',
    max_attempts integer DEFAULT 5,
    dead_letter_queue text DEFAULT NULL,
    retry_delay interval DEFAULT '1 second',
    retry_backoff double precision DEFAULT 2.0,
    retry_delay_max interval DEFAULT '15 minutes',
    ordering text DEFAULT 'none',
    partitions integer DEFAULT NULL,
    retention interval DEFAULT '7 days',
    session_timeout interval DEFAULT '30 seconds',
    notify boolean DEFAULT true,
    rate_limit text DEFAULT NULL,
    rate_limit_burst integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_queue_id bigint;
    v_dlq_id bigint;
    v_dlq_ordering text;
    v_rate double precision;
    v_burst integer;
BEGIN
    PERFORM mq._check_queue_name(_create_queue.queue_name);
    PERFORM mq._check_settings(_create_queue.visibility_timeout, _create_queue.max_attempts,
                               _create_queue.retry_delay, _create_queue.retry_backoff,
                               _create_queue.retry_delay_max, _create_queue.notify,
                               _create_queue.retention, _create_queue.session_timeout,
                               _create_queue.partitions IS NOT NULL);
    IF _create_queue.ordering IS NULL THEN
        RAISE EXCEPTION 'ordering must not be NULL' USING ERRCODE = '22004';
    END IF;
    SELECT r.rate, r.burst INTO v_rate, v_burst
      FROM mq._rate_settings(_create_queue.rate_limit, _create_queue.rate_limit_burst) r;
    IF _create_queue.ordering NOT IN ('none', 'key') THEN
        RAISE EXCEPTION 'invalid ordering "%"', _create_queue.ordering
            USING ERRCODE = '22023', HINT = 'Use ''none'' or ''key''.';
    END IF;
    IF _create_queue.partitions IS NOT NULL THEN
        IF _create_queue.partitions NOT BETWEEN 1 AND 256 THEN
            RAISE EXCEPTION 'partitions must be between 1 and 256' USING ERRCODE = '22023';
        END IF;
        IF _create_queue.ordering <> 'none' OR _create_queue.dead_letter_queue IS NOT NULL THEN
            RAISE EXCEPTION 'a partitioned queue takes neither ordering nor a dead-letter queue'
                USING ERRCODE = '22023',
                      DETAIL = 'A partitioned queue keeps each partition in offset order and has no per-message attempts.';
        END IF;
        PERFORM mq._require_preload('partitioned queues');
    END IF;
    IF _create_queue.dead_letter_queue IS NOT NULL THEN
        IF _create_queue.dead_letter_queue = _create_queue.queue_name THEN
            RAISE EXCEPTION 'a queue cannot be its own dead-letter queue' USING ERRCODE = '22023';
        END IF;
        SELECT q.queue_id, CASE WHEN q.partitions IS NULL THEN q.ordering ELSE 'partitioned' END
          INTO v_dlq_id, v_dlq_ordering
          FROM mq.queue q WHERE q.queue_name = _create_queue.dead_letter_queue;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'dead-letter queue "%" does not exist', _create_queue.dead_letter_queue
                USING ERRCODE = '42704', HINT = 'Create the dead-letter queue first.';
        END IF;
        -- Dead letters arrive out of their keys' order, so a keyed queue
        -- cannot receive them without breaking its own guarantee.
        IF v_dlq_ordering <> 'none' THEN
            RAISE EXCEPTION 'queue "%" is % and cannot be a dead-letter queue', _create_queue.dead_letter_queue,
                    CASE v_dlq_ordering WHEN 'key' THEN 'keyed' ELSE 'partitioned' END
                USING ERRCODE = '22023', HINT = 'Use an unkeyed work queue.';
        END IF;
    END IF;

    -- before the INSERT, which takes an id even when it conflicts: an
    -- "ensure the queue exists" call must not use ids up (only two creates
    -- of one name racing each other still spend one)
    IF EXISTS (SELECT FROM mq.queue q WHERE q.queue_name = _create_queue.queue_name) THEN
        RAISE EXCEPTION 'queue "%" already exists', _create_queue.queue_name USING ERRCODE = '42710';
    END IF;
    INSERT INTO mq.queue AS q (queue_name, visibility_timeout, max_attempts, dead_letter_queue_id,
                               retry_delay, retry_backoff, retry_delay_max, ordering,
                               partitions, retention, session_timeout, notify,
                               rate_limit, rate_limit_burst)
    VALUES (_create_queue.queue_name, _create_queue.visibility_timeout, _create_queue.max_attempts, v_dlq_id,
            _create_queue.retry_delay, _create_queue.retry_backoff, _create_queue.retry_delay_max,
            _create_queue.ordering, _create_queue.partitions,
            CASE WHEN _create_queue.partitions IS NOT NULL THEN _create_queue.retention END,
            CASE WHEN _create_queue.partitions IS NOT NULL THEN _create_queue.session_timeout END,
            _create_queue.notify, v_rate, v_burst)
    ON CONFLICT ON CONSTRAINT queue_queue_name_key DO NOTHING
    RETURNING q.queue_id INTO v_queue_id;
    IF v_queue_id IS NULL THEN
        RAISE EXCEPTION 'queue "%" already exists', _create_queue.queue_name USING ERRCODE = '42710';
    END IF;

    IF _create_queue.partitions IS NULL THEN
        PERFORM mq._create_queue_tables(v_queue_id, _create_queue.ordering = 'key');
    ELSE
        PERFORM mq._create_log_tables(v_queue_id, _create_queue.partitions);
    END IF;
    PERFORM mq._invalidate();
END
$$;
COMMENT ON FUNCTION mq._create_queue(text, interval, integer, text, interval, double precision, interval, text, integer, interval, interval, boolean, text, integer) IS 'mq internal: body of mq.create_queue, reached through mq_checked (src/rights.c)';
REVOKE ALL ON FUNCTION mq._create_queue(text, interval, integer, text, interval, double precision, interval, text, integer, interval, interval, boolean, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._create_queue(text, interval, integer, text, interval, double precision, interval, text, integer, interval, interval, boolean, text, integer) TO mq_owner;
ALTER FUNCTION mq._create_queue(text, interval, integer, text, interval, double precision, interval, text, integer, interval, interval, boolean, text, integer) OWNER TO mq_owner;

CREATE FUNCTION mq.create_queue(
    queue_name text,
    visibility_timeout interval DEFAULT '30 seconds',
    max_attempts integer DEFAULT 5,
    dead_letter_queue text DEFAULT NULL,
    retry_delay interval DEFAULT '1 second',
    retry_backoff double precision DEFAULT 2.0,
    retry_delay_max interval DEFAULT '15 minutes',
    ordering text DEFAULT 'none',
    partitions integer DEFAULT NULL,
    retention interval DEFAULT '7 days',
    session_timeout interval DEFAULT '30 seconds',
    notify boolean DEFAULT true,
    rate_limit text DEFAULT NULL,
    rate_limit_burst integer DEFAULT NULL)
RETURNS void
    AS 'MODULE_PATHNAME', 'mq_checked' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.create_queue(text, interval, integer, text, interval, double precision, interval, text, integer, interval, interval, boolean, text, integer) IS
'Creates a work queue or, with partitions, a partitioned queue (docs/reference.md#mqcreate_queue).';
REVOKE ALL ON FUNCTION mq.create_queue(text, interval, integer, text, interval, double precision, interval, text, integer, interval, interval, boolean, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.create_queue(text, interval, integer, text, interval, double precision, interval, text, integer, interval, interval, boolean, text, integer) TO PUBLIC, mq_owner;

CREATE FUNCTION mq._alter_queue(
    queue_name text,
    visibility_timeout interval DEFAULT NULL,
    max_attempts integer DEFAULT NULL,
    retry_delay interval DEFAULT NULL,
    retry_backoff double precision DEFAULT NULL,
    retry_delay_max interval DEFAULT NULL,
    notify boolean DEFAULT NULL,
    retention interval DEFAULT NULL,
    session_timeout interval DEFAULT NULL,
    rate_limit text DEFAULT NULL,
    rate_limit_burst integer DEFAULT NULL)
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v mq.queue;
BEGIN
    SELECT * INTO v FROM mq.queue q WHERE q.queue_id = mq._queue_id(_alter_queue.queue_name) FOR UPDATE;
    IF v.partitions IS NULL AND (_alter_queue.retention IS NOT NULL OR _alter_queue.session_timeout IS NOT NULL) THEN
        RAISE EXCEPTION 'retention and session_timeout apply only to partitioned queues' USING ERRCODE = '22023';
    END IF;
    v.visibility_timeout := coalesce(_alter_queue.visibility_timeout, v.visibility_timeout);
    v.max_attempts := coalesce(_alter_queue.max_attempts, v.max_attempts);
    v.retry_delay := coalesce(_alter_queue.retry_delay, v.retry_delay);
    v.retry_backoff := coalesce(_alter_queue.retry_backoff, v.retry_backoff);
    v.retry_delay_max := coalesce(_alter_queue.retry_delay_max, v.retry_delay_max);
    v.notify := coalesce(_alter_queue.notify, v.notify);
    v.retention := coalesce(_alter_queue.retention, v.retention);
    v.session_timeout := coalesce(_alter_queue.session_timeout, v.session_timeout);
    -- 'none' removes a rate limit; a burst alone keeps the rate
    IF _alter_queue.rate_limit IS NOT NULL OR _alter_queue.rate_limit_burst IS NOT NULL THEN
        SELECT r.rate, r.burst INTO v.rate_limit, v.rate_limit_burst
          FROM mq._rate_settings(CASE WHEN _alter_queue.rate_limit IS NULL AND v.rate_limit IS NOT NULL
                                      THEN v.rate_limit || '/s' ELSE _alter_queue.rate_limit END,
                                 _alter_queue.rate_limit_burst) r;
    END IF;
    PERFORM mq._check_settings(v.visibility_timeout, v.max_attempts, v.retry_delay, v.retry_backoff,
                               v.retry_delay_max, v.notify, v.retention, v.session_timeout,
                               v.partitions IS NOT NULL);
    UPDATE mq.queue q
       SET visibility_timeout = v.visibility_timeout, max_attempts = v.max_attempts,
           retry_delay = v.retry_delay, retry_backoff = v.retry_backoff,
           retry_delay_max = v.retry_delay_max, notify = v.notify,
           retention = v.retention, session_timeout = v.session_timeout,
           rate_limit = v.rate_limit, rate_limit_burst = v.rate_limit_burst
     WHERE q.queue_id = v.queue_id;
    PERFORM mq._invalidate();
END
$$;
COMMENT ON FUNCTION mq._alter_queue(text, interval, integer, interval, double precision, interval, boolean, interval, interval, text, integer) IS 'mq internal: body of mq.alter_queue, reached through mq_checked (src/rights.c)';
REVOKE ALL ON FUNCTION mq._alter_queue(text, interval, integer, interval, double precision, interval, boolean, interval, interval, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._alter_queue(text, interval, integer, interval, double precision, interval, boolean, interval, interval, text, integer) TO mq_owner;
ALTER FUNCTION mq._alter_queue(text, interval, integer, interval, double precision, interval, boolean, interval, interval, text, integer) OWNER TO mq_owner;

CREATE FUNCTION mq.alter_queue(
    queue_name text,
    visibility_timeout interval DEFAULT NULL,
    max_attempts integer DEFAULT NULL,
    retry_delay interval DEFAULT NULL,
    retry_backoff double precision DEFAULT NULL,
    retry_delay_max interval DEFAULT NULL,
    notify boolean DEFAULT NULL,
    retention interval DEFAULT NULL,
    session_timeout interval DEFAULT NULL,
    rate_limit text DEFAULT NULL,
    rate_limit_burst integer DEFAULT NULL)
RETURNS void
    AS 'MODULE_PATHNAME', 'mq_checked' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.alter_queue(text, interval, integer, interval, double precision, interval, boolean, interval, interval, text, integer) IS
'Changes settings of a queue; a NULL argument leaves that setting as it is (docs/reference.md#mqalter_queue).';
REVOKE ALL ON FUNCTION mq.alter_queue(text, interval, integer, interval, double precision, interval, boolean, interval, interval, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.alter_queue(text, interval, integer, interval, double precision, interval, boolean, interval, interval, text, integer) TO PUBLIC, mq_owner;

CREATE FUNCTION mq._drop_queue(queue_name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_queue_id bigint;
    v_user text;
    v_partitions integer;
BEGIN
    IF _drop_queue.queue_name IS NULL THEN
        RAISE EXCEPTION 'queue_name must not be NULL' USING ERRCODE = '22004';
    END IF;
    SELECT q.queue_id INTO v_queue_id FROM mq.queue q WHERE q.queue_name = _drop_queue.queue_name FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- Dropping a dead-letter queue in use would silently turn dead-lettering
    -- into discarding; refuse instead.
    SELECT string_agg(format('"%s"', q.queue_name), ', ' ORDER BY q.queue_name) INTO v_user
      FROM mq.queue q WHERE q.dead_letter_queue_id = v_queue_id;
    IF v_user IS NOT NULL THEN
        RAISE EXCEPTION 'cannot drop queue "%" because it is the dead-letter queue of %', _drop_queue.queue_name, v_user
            USING ERRCODE = '2BP01', HINT = 'Drop those queues first.';
    END IF;
    SELECT q.partitions INTO v_partitions FROM mq.queue q WHERE q.queue_id = v_queue_id;
    DELETE FROM mq.queue q WHERE q.queue_id = v_queue_id;
    PERFORM mq._drop_queue_tables(v_queue_id, v_partitions);
    -- now that the tables are locked, nobody else is using the queue
    DELETE FROM mq.dead_letter_tally t WHERE t.queue_id = v_queue_id;
    PERFORM mq._forget_queue(v_queue_id);
    PERFORM mq._invalidate();
    RETURN true;
END
$$;
COMMENT ON FUNCTION mq._drop_queue(text) IS 'mq internal: body of mq.drop_queue, reached through mq_checked (src/rights.c)';
REVOKE ALL ON FUNCTION mq._drop_queue(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._drop_queue(text) TO mq_owner;
ALTER FUNCTION mq._drop_queue(text) OWNER TO mq_owner;

CREATE FUNCTION mq.drop_queue(queue_name text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'mq_checked' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.drop_queue(text) IS
'Drops a queue with everything it holds; false when there is no such queue (docs/reference.md#mqdrop_queue).';
REVOKE ALL ON FUNCTION mq.drop_queue(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.drop_queue(text) TO PUBLIC, mq_owner;

CREATE FUNCTION mq._purge(queue_name text) RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count bigint;
    v_queue_id bigint := mq._queue_id(_purge.queue_name);
BEGIN
    IF (SELECT q.partitions FROM mq.queue q WHERE q.queue_id = v_queue_id) IS NULL THEN
        -- a keyed send running meanwhile must not leave its message blocked
        -- behind a head this purge removed (src/storage.c, MqStoragePurge)
        v_count := mq._purge_messages(_purge.queue_name);
        -- the queue's counts (mq.metrics) are made afresh
        PERFORM mq._forget_queue(v_queue_id);
    ELSE
        -- Offsets keep increasing, so consumer groups stay valid: once no
        -- send runs, each partition's end becomes its high-water mark,
        -- which a node receiving the partition later continues above.
        EXECUTE format('LOCK TABLE mq.%I IN ACCESS EXCLUSIVE MODE', 'p_' || v_queue_id);
        FOR v_partition IN 0..(SELECT q.partitions FROM mq.queue q WHERE q.queue_id = v_queue_id) - 1 LOOP
            EXECUTE format('UPDATE mq.%I SET hwm = $2 WHERE partition = $1 AND hwm < $2', 'p_' || v_queue_id || '_head')
                USING v_partition, mq._partition_end(_purge.queue_name, v_partition) - 1;
        END LOOP;
        EXECUTE format('SELECT count(*) FROM mq.%I', 'p_' || v_queue_id) INTO v_count;
        EXECUTE format('TRUNCATE mq.%I', 'p_' || v_queue_id);
    END IF;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION mq._purge(text) IS 'mq internal: body of mq.purge, reached through mq_checked (src/rights.c)';
REVOKE ALL ON FUNCTION mq._purge(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._purge(text) TO mq_owner;
ALTER FUNCTION mq._purge(text) OWNER TO mq_owner;

CREATE FUNCTION mq.purge(queue_name text) RETURNS bigint
    AS 'MODULE_PATHNAME', 'mq_checked' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.purge(text) IS
'Deletes every message of a queue and returns how many (docs/reference.md#mqpurge).';
REVOKE ALL ON FUNCTION mq.purge(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.purge(text) TO PUBLIC, mq_owner;

CREATE VIEW mq.queues WITH (security_barrier) AS
SELECT q.queue_name, q.visibility_timeout, q.max_attempts,
       CASE WHEN mq._can(d.queue_id, 'any') THEN d.queue_name END AS dead_letter_queue,
       q.retry_delay, q.retry_backoff, q.retry_delay_max, q.ordering,
       q.partitions, q.retention, q.session_timeout, q.notify,
       q.rate_limit AS rate_limit_per_second, q.rate_limit_burst, q.created_at
  FROM mq.queue q LEFT JOIN mq.queue d ON d.queue_id OPERATOR(pg_catalog.=) q.dead_letter_queue_id
 WHERE mq._can(q.queue_id, 'any');
COMMENT ON VIEW mq.queues IS
'One row per queue the caller has a right on, with its settings (docs/reference.md#view-mqqueues).';
GRANT SELECT ON mq.queues TO PUBLIC;

-- ---------------------------------------------------------------------------
-- Work queues, the hot paths: C functions with plans prepared once per
-- queue and kept.  They are not STRICT so that a NULL argument raises
-- 22004 instead of silently returning NULL.  They check the caller's
-- right on the queue, then run their statements as mq_owner (src/queue.c).

CREATE FUNCTION mq.send(queue_name text, payload jsonb, key text DEFAULT NULL,
                        headers jsonb DEFAULT NULL, delay interval DEFAULT '0')
RETURNS bigint AS 'MODULE_PATHNAME', 'mq_send' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.send(text, jsonb, text, jsonb, interval) IS
'Sends one message, visible once the transaction commits; returns its msg_id or offset (docs/reference.md#mqsend).';
REVOKE ALL ON FUNCTION mq.send(text, jsonb, text, jsonb, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.send(text, jsonb, text, jsonb, interval) TO PUBLIC, mq_owner;

CREATE FUNCTION mq.send_batch(queue_name text, payloads jsonb[], keys text[] DEFAULT NULL,
                              headers jsonb[] DEFAULT NULL, delay interval DEFAULT '0')
RETURNS SETOF bigint AS 'MODULE_PATHNAME', 'mq_send_batch' LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 100;
COMMENT ON FUNCTION mq.send_batch(text, jsonb[], text[], jsonb[], interval) IS
'Sends many messages in one statement, all or nothing; returns their msg_ids or offsets in array order (docs/reference.md#mqsend_batch).';
REVOKE ALL ON FUNCTION mq.send_batch(text, jsonb[], text[], jsonb[], interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.send_batch(text, jsonb[], text[], jsonb[], interval) TO PUBLIC, mq_owner;

CREATE FUNCTION mq.read(queue_name text, qty integer DEFAULT 1, visibility_timeout interval DEFAULT NULL,
                        wait interval DEFAULT '0')
RETURNS SETOF mq.message AS 'MODULE_PATHNAME', 'mq_read' LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 10;
COMMENT ON FUNCTION mq.read(text, integer, interval, interval) IS
'Claims up to qty visible messages of a work queue, waiting up to wait for them (docs/reference.md#mqread).';
REVOKE ALL ON FUNCTION mq.read(text, integer, interval, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.read(text, integer, interval, interval) TO PUBLIC, mq_owner;

CREATE FUNCTION mq.ack(queue_name text, msg_id bigint, receipt bigint DEFAULT NULL)
RETURNS boolean AS 'MODULE_PATHNAME', 'mq_ack' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.ack(text, bigint, bigint) IS
'Deletes a processed message; false when there is none or the receipt is stale (docs/reference.md#mqack).';
REVOKE ALL ON FUNCTION mq.ack(text, bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.ack(text, bigint, bigint) TO PUBLIC, mq_owner;

CREATE FUNCTION mq.ack(queue_name text, msg_ids bigint[])
RETURNS bigint AS 'MODULE_PATHNAME', 'mq_ack_batch' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.ack(text, bigint[]) IS
'Deletes many processed messages; returns how many existed (docs/reference.md#mqack-batch).';
REVOKE ALL ON FUNCTION mq.ack(text, bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.ack(text, bigint[]) TO PUBLIC, mq_owner;

CREATE FUNCTION mq.nack(queue_name text, msg_id bigint, receipt bigint DEFAULT NULL,
                        delay interval DEFAULT NULL, error text DEFAULT NULL)
RETURNS boolean AS 'MODULE_PATHNAME', 'mq_nack' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.nack(text, bigint, bigint, interval, text) IS
'Releases a claimed message for another attempt after a delay, or dead-letters it at its last attempt (docs/reference.md#mqnack).';
REVOKE ALL ON FUNCTION mq.nack(text, bigint, bigint, interval, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.nack(text, bigint, bigint, interval, text) TO PUBLIC, mq_owner;

CREATE FUNCTION mq.extend(queue_name text, msg_id bigint, visibility_timeout interval, receipt bigint DEFAULT NULL)
RETURNS timestamptz AS 'MODULE_PATHNAME', 'mq_extend' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.extend(text, bigint, interval, bigint) IS
'Sets a claimed message''s visibility to now + visibility_timeout; returns the new visible_at (docs/reference.md#mqextend).';
REVOKE ALL ON FUNCTION mq.extend(text, bigint, interval, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.extend(text, bigint, interval, bigint) TO PUBLIC, mq_owner;

CREATE FUNCTION mq.archive(queue_name text, msg_id bigint, receipt bigint DEFAULT NULL)
RETURNS boolean AS 'MODULE_PATHNAME', 'mq_archive' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.archive(text, bigint, bigint) IS
'Acks a message by moving it to the queue''s archive (docs/reference.md#mqarchive).';
REVOKE ALL ON FUNCTION mq.archive(text, bigint, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.archive(text, bigint, bigint) TO PUBLIC, mq_owner;

CREATE FUNCTION mq.archive(queue_name text, msg_ids bigint[])
RETURNS bigint AS 'MODULE_PATHNAME', 'mq_archive_batch' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.archive(text, bigint[]) IS
'Moves many processed messages to the queue''s archive; returns how many existed (docs/reference.md#mqarchive-batch).';
REVOKE ALL ON FUNCTION mq.archive(text, bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.archive(text, bigint[]) TO PUBLIC, mq_owner;

-- ---------------------------------------------------------------------------
-- Dead letters: browse and redrive (as SQS's dead-letter queue redrive).

CREATE FUNCTION mq._dead_letters(queue_name text, origin_queue text, max_messages integer)
RETURNS TABLE (msg_id bigint, attempts integer, origin text, key text, payload jsonb,
               headers jsonb, dead_letter jsonb)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_queue_id bigint := mq._queue_id(_dead_letters.queue_name);
    v_tables text[];
    v_sql text := '';
BEGIN
    IF _dead_letters.max_messages IS NULL OR _dead_letters.max_messages NOT BETWEEN 1 AND 100000 THEN
        RAISE EXCEPTION 'max_messages must be between 1 and 100000'
            USING ERRCODE = CASE WHEN _dead_letters.max_messages IS NULL THEN '22004' ELSE '22023' END;
    END IF;
    IF (SELECT q.partitions FROM mq.queue q WHERE q.queue_id = v_queue_id) IS NOT NULL THEN
        RAISE EXCEPTION 'queue "%" is a partitioned queue', _dead_letters.queue_name USING ERRCODE = '42809';
    END IF;
    -- a dead letter may sit in any segment or in the delayed table
    v_tables := ARRAY['_0', '_1', '_2', '_3', '_d'];
    FOR i IN 1..5 LOOP
        v_sql := v_sql || CASE WHEN i > 1 THEN ' UNION ALL ' ELSE '' END || format(
            'SELECT m.msg_id, m.attempts, m.dead_letter OPERATOR(pg_catalog.->>) ''queue'', m.key,'
            ' m.payload, m.headers, m.dead_letter FROM mq.%I m'
            ' WHERE m.dead_letter IS NOT NULL AND m.vt OPERATOR(pg_catalog.<=) $1 AND NOT m.blocked'
            ' AND ($2 IS NULL OR m.dead_letter OPERATOR(pg_catalog.->>) ''queue'' OPERATOR(pg_catalog.=) $2)',
            'q_' || v_queue_id || v_tables[i]);
    END LOOP;
    -- the time is a parameter (Citus routes no volatile function)
    RETURN QUERY EXECUTE 'SELECT * FROM (' || v_sql || ') d ORDER BY 1 LIMIT $3'
        USING pg_catalog.clock_timestamp(), _dead_letters.origin_queue, _dead_letters.max_messages;
END
$$;
COMMENT ON FUNCTION mq._dead_letters(text, text, integer) IS 'mq internal: body of mq.dead_letters, reached through mq_checked (src/rights.c)';
REVOKE ALL ON FUNCTION mq._dead_letters(text, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._dead_letters(text, text, integer) TO mq_owner;
ALTER FUNCTION mq._dead_letters(text, text, integer) OWNER TO mq_owner;

CREATE FUNCTION mq.dead_letters(queue_name text, origin_queue text DEFAULT NULL, max_messages integer DEFAULT 100)
RETURNS TABLE (msg_id bigint, attempts integer, origin text, key text, payload jsonb,
               headers jsonb, dead_letter jsonb)
    AS 'MODULE_PATHNAME', 'mq_checked' LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 100;
COMMENT ON FUNCTION mq.dead_letters(text, text, integer) IS
'Lists visible dead letters of a dead-letter queue without claiming them (docs/reference.md#mqdead_letters).';
REVOKE ALL ON FUNCTION mq.dead_letters(text, text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.dead_letters(text, text, integer) TO PUBLIC, mq_owner;

CREATE FUNCTION mq.redrive(dead_letter_queue text, origin_queue text DEFAULT NULL,
                           msg_ids bigint[] DEFAULT NULL, max_messages integer DEFAULT 1000)
RETURNS TABLE (msg_id bigint, queue_name text, new_msg_id bigint)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    d record;
BEGIN
    IF redrive.dead_letter_queue IS NULL THEN
        RAISE EXCEPTION 'dead_letter_queue must not be NULL' USING ERRCODE = '22004';
    END IF;
    -- Runs as the caller: mq.ack checks the consume right on the
    -- dead-letter queue, mq.send the send right on each origin.
    FOR d IN SELECT * FROM mq.dead_letters(redrive.dead_letter_queue, redrive.origin_queue,
                                           CASE WHEN redrive.msg_ids IS NULL THEN redrive.max_messages
                                                ELSE 100000 END) l
              WHERE redrive.msg_ids IS NULL OR l.msg_id OPERATOR(pg_catalog.=) ANY (redrive.msg_ids)
              LIMIT redrive.max_messages LOOP
        -- The receipt is the attempts seen: a consumer that claimed the
        -- letter since makes the ack fail, and the letter is left to it.
        CONTINUE WHEN NOT mq.ack(redrive.dead_letter_queue, d.msg_id, d.attempts::bigint);
        msg_id := d.msg_id;
        queue_name := d.origin;
        -- headers kept, the redrive recorded under "mq.redrive" (headers
        -- that are not an object are kept as they are)
        new_msg_id := mq.send(queue_name => d.origin, payload => d.payload, key => d.key,
            headers => CASE WHEN d.headers IS NULL OR jsonb_typeof(d.headers) OPERATOR(pg_catalog.=) 'object'
                THEN COALESCE(d.headers, '{}') OPERATOR(pg_catalog.||) jsonb_build_object('mq.redrive',
                    jsonb_build_object(
                        'count', 1 OPERATOR(pg_catalog.+) CASE WHEN jsonb_typeof(d.headers
                                     OPERATOR(pg_catalog.#>) '{mq.redrive,count}') OPERATOR(pg_catalog.=) 'number'
                                 THEN (d.headers OPERATOR(pg_catalog.#>>) '{mq.redrive,count}')::integer ELSE 0 END,
                        'redriven_at', clock_timestamp(),
                        'dead_letter_queue', redrive.dead_letter_queue,
                        'dead_letter_msg_id', d.msg_id,
                        'dead_letter', d.dead_letter))
                ELSE d.headers END);
        RETURN NEXT;
    END LOOP;
END
$$;
COMMENT ON FUNCTION mq.redrive(text, text, bigint[], integer) IS
'Moves dead letters back to the queues they came from (docs/reference.md#mqredrive).';
REVOKE ALL ON FUNCTION mq.redrive(text, text, bigint[], integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.redrive(text, text, bigint[], integer) TO PUBLIC, mq_owner;

-- ---------------------------------------------------------------------------
-- Partitioned queues: their tables, consumer groups, offsets, replay.

-- Offsets of partitioned queues are assigned where a row is stored, by a
-- trigger on the queue's tables (src/offsets.c).
CREATE FUNCTION mq._assign_offset() RETURNS trigger
    AS 'MODULE_PATHNAME', 'mq_assign_offset' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq._assign_offset() IS
'mq internal: BEFORE INSERT FOR EACH ROW trigger of a partitioned queue (argument: the queue id); gives a row without an offset the next offset of its partition on this node, after recording the hold that keeps readers below it (39P01 when not used so, 55000 without preload)';
REVOKE ALL ON FUNCTION mq._assign_offset() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._assign_offset() TO mq_owner;

-- A partitioned queue is a log: the parent mq.p_<id>, partitioned by
-- segment into three segment tables mq.p_<id>_0..2 (one takes new
-- messages; maintenance truncates the oldest and moves on, so retention
-- leaves no dead tuples; readers read the parent), the head table
-- mq.p_<id>_head (a row per partition: its high-water mark), one offset
-- sequence per partition (CACHE 1, src/offsets.c) and the trigger that
-- takes offsets from them.
CREATE FUNCTION mq._create_log_tables(p_queue_id bigint, p_partitions integer) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    EXECUTE format($ddl$
        CREATE TABLE mq.%1$I (
            segment smallint NOT NULL,
            partition integer NOT NULL,
            "offset" bigint NOT NULL,
            key text,
            payload jsonb NOT NULL,
            headers jsonb,
            enqueued_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
            PRIMARY KEY (partition, "offset", segment)
        ) PARTITION BY LIST (segment)$ddl$, 'p_' || p_queue_id);
    FOR v_segment IN 0..2 LOOP
        EXECUTE format('CREATE TABLE mq.%I PARTITION OF mq.%I FOR VALUES IN (%s)',
                       'p_' || p_queue_id || '_' || v_segment, 'p_' || p_queue_id, v_segment);
        INSERT INTO mq.segment (queue_id, segment, state)
        VALUES (p_queue_id, v_segment, CASE WHEN v_segment = 0 THEN 'current' ELSE 'free' END);
    END LOOP;
    EXECUTE format('CREATE TRIGGER assign_offset BEFORE INSERT ON mq.%I FOR EACH ROW'
                   ' EXECUTE FUNCTION mq._assign_offset(%s)', 'p_' || p_queue_id, p_queue_id);
    EXECUTE format('CREATE TABLE mq.%I (partition integer PRIMARY KEY, hwm bigint NOT NULL DEFAULT 0)',
                   'p_' || p_queue_id || '_head');
    EXECUTE format('INSERT INTO mq.%I (partition) SELECT pg_catalog.generate_series(0, $1 - 1)',
                   'p_' || p_queue_id || '_head') USING p_partitions;
    FOR v_partition IN 0..p_partitions - 1 LOOP
        EXECUTE format('CREATE SEQUENCE mq.%I AS bigint CACHE 1', 'p_' || p_queue_id || '_o' || v_partition);
    END LOOP;
    EXECUTE format('CREATE TABLE mq.%I ()', 'p_' || p_queue_id || '_rights');
    PERFORM mq._grant_to_owner('p_' || p_queue_id);
    -- on a Citus coordinator after mq.citus_distribute(): by partition
    IF mq._citus_enabled() THEN
        PERFORM mq._citus_distribute_queue(p_queue_id, p_partitions);
    END IF;
END
$$;
COMMENT ON FUNCTION mq._create_log_tables(bigint, integer) IS 'mq internal: creates the tables, offset sequences and offset trigger of one partitioned queue';
REVOKE ALL ON FUNCTION mq._create_log_tables(bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._create_log_tables(bigint, integer) TO mq_owner;

CREATE FUNCTION mq._partition_end(queue_name text, partition integer) RETURNS bigint
    AS 'MODULE_PATHNAME', 'mq_partition_end' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq._partition_end(text, integer) IS
'mq internal: the visible end of a partition: every offset below it belongs to a transaction that has ended';
REVOKE ALL ON FUNCTION mq._partition_end(text, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._partition_end(text, integer) TO PUBLIC, mq_owner;

CREATE FUNCTION mq.poll(queue_name text, consumer_group text, member text,
                        max_messages integer DEFAULT 100, wait interval DEFAULT '0',
                        busy_partitions integer[] DEFAULT NULL)
RETURNS TABLE (partition integer, "offset" bigint, key text, payload jsonb, headers jsonb, enqueued_at timestamptz)
    AS 'MODULE_PATHNAME', 'mq_poll' LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 100;
COMMENT ON FUNCTION mq.poll(text, text, text, integer, interval, integer[]) IS
'Reads the next messages of a partitioned queue for one member of a consumer group (docs/reference.md#mqpoll).';
REVOKE ALL ON FUNCTION mq.poll(text, text, text, integer, interval, integer[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.poll(text, text, text, integer, interval, integer[]) TO PUBLIC, mq_owner;

CREATE FUNCTION mq._log_id(p_queue_name text, p_group text) RETURNS bigint
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_queue_id bigint := mq._queue_id(p_queue_name);
BEGIN
    IF (SELECT q.partitions FROM mq.queue q WHERE q.queue_id = v_queue_id) IS NULL THEN
        RAISE EXCEPTION 'queue "%" is not a partitioned queue', p_queue_name USING ERRCODE = '42809';
    END IF;
    IF p_group IS NULL THEN
        RAISE EXCEPTION 'consumer_group must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF octet_length(p_group) NOT BETWEEN 1 AND 200 THEN
        RAISE EXCEPTION 'consumer_group must be 1 to 200 bytes long' USING ERRCODE = '22023';
    END IF;
    RETURN v_queue_id;
END
$$;
COMMENT ON FUNCTION mq._log_id(text, text) IS 'mq internal: the id of a partitioned queue, checking the group name';
REVOKE ALL ON FUNCTION mq._log_id(text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._log_id(text, text) TO mq_owner;
ALTER FUNCTION mq._log_id(text, text) OWNER TO mq_owner;

CREATE FUNCTION mq._group_init(p_queue_id bigint, p_group text) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- a new group starts at the earliest retained message
    IF NOT EXISTS (SELECT FROM mq.group_partition g
                    WHERE g.queue_id = p_queue_id AND g.consumer_group = p_group) THEN
        INSERT INTO mq.group_partition (queue_id, consumer_group, partition)
        SELECT p_queue_id, p_group, p
          FROM generate_series(0, (SELECT q.partitions FROM mq.queue q WHERE q.queue_id = p_queue_id) - 1) p
        ON CONFLICT DO NOTHING;
        INSERT INTO mq.group_offset (queue_id, consumer_group, partition, committed)
        SELECT p_queue_id, p_group, p, 0
          FROM generate_series(0, (SELECT q.partitions FROM mq.queue q WHERE q.queue_id = p_queue_id) - 1) p;
    END IF;
END
$$;
COMMENT ON FUNCTION mq._group_init(bigint, text) IS 'mq internal: creates a consumer group''s rows on first use';
REVOKE ALL ON FUNCTION mq._group_init(bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._group_init(bigint, text) TO mq_owner;
ALTER FUNCTION mq._group_init(bigint, text) OWNER TO mq_owner;

-- Membership and leases of one consumer group member: the heartbeat, the
-- renewal of its leases, and giving back partitions beyond a fair share or
-- taking free or lapsed ones up to it; p_busy, the partitions the member
-- is still processing, are given back last and only once no longer busy.
-- The rule and its constants are in C, written once (src/partition.c,
-- with mq.poll's steady check).
CREATE FUNCTION mq._group_sync(p_queue_id bigint, p_group text, p_member text, p_session bigint,
                                p_partitions integer, p_timeout interval, p_busy integer[])
RETURNS TABLE (partition integer, lease_epoch bigint, committed bigint)
    AS 'MODULE_PATHNAME', 'mq_group_sync'
    LANGUAGE C VOLATILE SET search_path = pg_catalog, pg_temp;
COMMENT ON FUNCTION mq._group_sync(bigint, text, text, bigint, integer, interval, integer[]) IS 'mq internal: heartbeat and rebalance of one consumer group member; returns the partitions to poll (held, less those it must give back once no longer busy)';
REVOKE ALL ON FUNCTION mq._group_sync(bigint, text, text, bigint, integer, interval, integer[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._group_sync(bigint, text, text, bigint, integer, interval, integer[]) TO mq_owner;

CREATE FUNCTION mq._heartbeat(queue_name text, consumer_group text, member text, busy_partitions integer[]) RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RETURN (SELECT count(*) FROM mq.queue q,
                   mq._group_sync(q.queue_id, _heartbeat.consumer_group, _heartbeat.member, NULL,
                                  q.partitions, q.session_timeout, _heartbeat.busy_partitions)
             WHERE q.queue_id = mq._log_id(_heartbeat.queue_name, _heartbeat.consumer_group));
END
$$;
COMMENT ON FUNCTION mq._heartbeat(text, text, text, integer[]) IS 'mq internal: body of mq.heartbeat, reached through mq_checked (src/rights.c)';
REVOKE ALL ON FUNCTION mq._heartbeat(text, text, text, integer[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._heartbeat(text, text, text, integer[]) TO mq_owner;
ALTER FUNCTION mq._heartbeat(text, text, text, integer[]) OWNER TO mq_owner;

CREATE FUNCTION mq.heartbeat(queue_name text, consumer_group text, member text,
                             busy_partitions integer[] DEFAULT NULL) RETURNS integer
    AS 'MODULE_PATHNAME', 'mq_checked' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.heartbeat(text, text, text, integer[]) IS
'Keeps a consumer group member alive between polls and rebalances; returns how many partitions it may poll (docs/reference.md#mqheartbeat).';
REVOKE ALL ON FUNCTION mq.heartbeat(text, text, text, integer[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.heartbeat(text, text, text, integer[]) TO PUBLIC, mq_owner;

CREATE FUNCTION mq.commit(queue_name text, consumer_group text, partition integer, "offset" bigint,
                          member text DEFAULT NULL)
RETURNS boolean AS 'MODULE_PATHNAME', 'mq_commit' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.commit(text, text, integer, bigint, text) IS
'Records that a consumer group has processed a partition through offset (docs/reference.md#mqcommit).';
REVOKE ALL ON FUNCTION mq.commit(text, text, integer, bigint, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.commit(text, text, integer, bigint, text) TO PUBLIC, mq_owner;

CREATE FUNCTION mq._seek_to(p_queue_name text, p_group text, p_partition integer, p_how text,
                         p_offset bigint, p_at timestamptz)
RETURNS integer
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_queue_id bigint := mq._log_id(p_queue_name, p_group);
    v_partitions integer := (SELECT q.partitions FROM mq.queue q WHERE q.queue_id = v_queue_id);
    v_count integer := 0;
    v_next bigint;
BEGIN
    IF p_partition IS NOT NULL AND p_partition NOT BETWEEN 0 AND v_partitions - 1 THEN
        RAISE EXCEPTION 'partition % does not exist', p_partition USING ERRCODE = '22023';
    END IF;
    PERFORM mq._group_init(v_queue_id, p_group);
    FOR v_p IN 0..v_partitions - 1 LOOP
        CONTINUE WHEN p_partition IS NOT NULL AND v_p <> p_partition;
        -- v_next: the first offset the group will read
        IF p_how = 'offset' THEN
            -- as mq.commit refuses it: past the end, future messages are skipped
            v_next := mq._partition_end(p_queue_name, v_p);
            IF p_offset > v_next THEN
                RAISE EXCEPTION 'offset % is beyond the end of partition %', p_offset, v_p
                    USING ERRCODE = '22023', DETAIL = format('The last visible offset is %s.', v_next - 1),
                          HINT = format('Seek to at most %s, the next offset to be sent, or to ''latest''.', v_next);
            END IF;
            v_next := p_offset;
        ELSIF p_how = 'latest' THEN
            v_next := mq._partition_end(p_queue_name, v_p);
        ELSE
            EXECUTE format('SELECT min("offset") FROM mq.%I WHERE partition = $1 AND enqueued_at >= $2',
                           'p_' || v_queue_id)
               INTO v_next USING v_p, coalesce(p_at, '-infinity');
            v_next := coalesce(v_next, mq._partition_end(p_queue_name, v_p));
        END IF;
        -- whoever polls the partition next starts from there; the lease
        -- row's lock orders this commit among the others (mq.group_offset)
        UPDATE mq.group_partition g SET lease_epoch = g.lease_epoch + 1
         WHERE g.queue_id = v_queue_id AND g.consumer_group = p_group AND g.partition = v_p;
        INSERT INTO mq.group_offset (queue_id, consumer_group, partition, committed)
        VALUES (v_queue_id, p_group, v_p, v_next - 1);
        -- an offset committed past the last message is a high-water mark
        -- (a node receiving the partition later continues above it)
        EXECUTE format('UPDATE mq.%I SET hwm = $2 WHERE partition = $1 AND hwm < $2', 'p_' || v_queue_id || '_head')
            USING v_p, v_next - 1;
        v_count := v_count + 1;
    END LOOP;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION mq._seek_to(text, text, integer, text, bigint, timestamptz) IS 'mq internal: body of mq.seek';
REVOKE ALL ON FUNCTION mq._seek_to(text, text, integer, text, bigint, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._seek_to(text, text, integer, text, bigint, timestamptz) TO mq_owner;
ALTER FUNCTION mq._seek_to(text, text, integer, text, bigint, timestamptz) OWNER TO mq_owner;

CREATE FUNCTION mq._seek(queue_name text, consumer_group text, partition integer, "offset" bigint) RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF _seek."offset" IS NULL THEN
        RAISE EXCEPTION 'offset must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF _seek."offset" < 1 THEN
        RAISE EXCEPTION 'offset must be 1 or more' USING ERRCODE = '22023';
    END IF;
    RETURN mq._seek_to(_seek.queue_name, _seek.consumer_group, _seek.partition, 'offset', _seek."offset", NULL);
END
$$;
COMMENT ON FUNCTION mq._seek(text, text, integer, bigint) IS 'mq internal: body of mq.seek, reached through mq_checked (src/rights.c)';
REVOKE ALL ON FUNCTION mq._seek(text, text, integer, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._seek(text, text, integer, bigint) TO mq_owner;
ALTER FUNCTION mq._seek(text, text, integer, bigint) OWNER TO mq_owner;

CREATE FUNCTION mq.seek(queue_name text, consumer_group text, partition integer, "offset" bigint) RETURNS integer
    AS 'MODULE_PATHNAME', 'mq_checked' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.seek(text, text, integer, bigint) IS
'Moves a consumer group to an offset of a partition (NULL: of every partition); returns how many partitions moved (docs/reference.md#mqseek).';
REVOKE ALL ON FUNCTION mq.seek(text, text, integer, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.seek(text, text, integer, bigint) TO PUBLIC, mq_owner;

CREATE FUNCTION mq._seek(queue_name text, consumer_group text, partition integer, seek_to text) RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF _seek.seek_to IS NULL OR _seek.seek_to NOT IN ('earliest', 'latest') THEN
        RAISE EXCEPTION 'seek_to must be ''earliest'' or ''latest''' USING ERRCODE = '22023';
    END IF;
    RETURN mq._seek_to(_seek.queue_name, _seek.consumer_group, _seek.partition, _seek.seek_to, NULL, NULL);
END
$$;
COMMENT ON FUNCTION mq._seek(text, text, integer, text) IS 'mq internal: body of mq.seek, reached through mq_checked (src/rights.c)';
REVOKE ALL ON FUNCTION mq._seek(text, text, integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._seek(text, text, integer, text) TO mq_owner;
ALTER FUNCTION mq._seek(text, text, integer, text) OWNER TO mq_owner;

CREATE FUNCTION mq.seek(queue_name text, consumer_group text, partition integer, seek_to text) RETURNS integer
    AS 'MODULE_PATHNAME', 'mq_checked' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.seek(text, text, integer, text) IS
'Moves a consumer group to the earliest retained message or to the latest end; returns how many partitions moved (docs/reference.md#mqseek).';
REVOKE ALL ON FUNCTION mq.seek(text, text, integer, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.seek(text, text, integer, text) TO PUBLIC, mq_owner;

CREATE FUNCTION mq._seek(queue_name text, consumer_group text, partition integer, at timestamptz) RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF _seek.at IS NULL THEN
        RAISE EXCEPTION 'at must not be NULL' USING ERRCODE = '22004';
    END IF;
    RETURN mq._seek_to(_seek.queue_name, _seek.consumer_group, _seek.partition, 'time', NULL, _seek.at);
END
$$;
COMMENT ON FUNCTION mq._seek(text, text, integer, timestamptz) IS 'mq internal: body of mq.seek, reached through mq_checked (src/rights.c)';
REVOKE ALL ON FUNCTION mq._seek(text, text, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._seek(text, text, integer, timestamptz) TO mq_owner;
ALTER FUNCTION mq._seek(text, text, integer, timestamptz) OWNER TO mq_owner;

CREATE FUNCTION mq.seek(queue_name text, consumer_group text, partition integer, at timestamptz) RETURNS integer
    AS 'MODULE_PATHNAME', 'mq_checked' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.seek(text, text, integer, timestamptz) IS
'Moves a consumer group to the first retained message sent at or after at; returns how many partitions moved (docs/reference.md#mqseek).';
REVOKE ALL ON FUNCTION mq.seek(text, text, integer, timestamptz) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.seek(text, text, integer, timestamptz) TO PUBLIC, mq_owner;

CREATE FUNCTION mq._leave(queue_name text, consumer_group text, member text) RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_queue_id bigint := mq._log_id(_leave.queue_name, _leave.consumer_group);
    v_count integer;
BEGIN
    IF _leave.member IS NULL THEN
        RAISE EXCEPTION 'member must not be NULL' USING ERRCODE = '22004';
    END IF;
    UPDATE mq.group_partition g SET member = NULL, lease_until = NULL
     WHERE g.queue_id = v_queue_id AND g.consumer_group = _leave.consumer_group AND g.member = _leave.member;
    GET DIAGNOSTICS v_count = ROW_COUNT;
    DELETE FROM mq.group_member m
     WHERE m.queue_id = v_queue_id AND m.consumer_group = _leave.consumer_group AND m.member = _leave.member;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION mq._leave(text, text, text) IS 'mq internal: body of mq.leave, reached through mq_checked (src/rights.c)';
REVOKE ALL ON FUNCTION mq._leave(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._leave(text, text, text) TO mq_owner;
ALTER FUNCTION mq._leave(text, text, text) OWNER TO mq_owner;

CREATE FUNCTION mq.leave(queue_name text, consumer_group text, member text) RETURNS integer
    AS 'MODULE_PATHNAME', 'mq_checked' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.leave(text, text, text) IS
'A member leaves its consumer group at once; returns how many partitions it released (docs/reference.md#mqleave).';
REVOKE ALL ON FUNCTION mq.leave(text, text, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.leave(text, text, text) TO PUBLIC, mq_owner;

-- Rows of queues the caller may monitor (consume, or mq_monitor); OFFSET 0 keeps the filter
-- below the end-offset lookup, which checks the right again.
CREATE VIEW mq.consumer_groups WITH (security_barrier) AS
SELECT gq.queue_name, gq.consumer_group, gq.partition, gq.member, gq.lease_until,
       gq.committed AS committed_offset, e.end_offset,
       GREATEST(e.end_offset OPERATOR(pg_catalog.-) gq.committed, 0) AS lag
  FROM (SELECT q.queue_name, g.consumer_group, g.partition, g.member, g.lease_until,
               (SELECT o.committed FROM mq.group_offset o
                 WHERE o.queue_id OPERATOR(pg_catalog.=) g.queue_id
                   AND o.consumer_group OPERATOR(pg_catalog.=) g.consumer_group
                   AND o.partition OPERATOR(pg_catalog.=) g.partition
                 ORDER BY o.commit_seq DESC LIMIT 1) AS committed
          FROM mq.group_partition g
          JOIN mq.queue q ON q.queue_id OPERATOR(pg_catalog.=) g.queue_id
         WHERE mq._can(q.queue_id, 'monitor') OFFSET 0) gq
  CROSS JOIN LATERAL (SELECT mq._partition_end(gq.queue_name, gq.partition) OPERATOR(pg_catalog.-) 1 AS end_offset) e;
COMMENT ON VIEW mq.consumer_groups IS
'One row per consumer group and partition of the queues the caller may monitor, with offsets and lag (docs/reference.md#view-mqconsumer_groups).';
GRANT SELECT ON mq.consumer_groups TO PUBLIC;

-- ---------------------------------------------------------------------------
-- LISTEN/NOTIFY (docs/reference.md#notify-channels).

CREATE FUNCTION mq.listen(queue_name text) RETURNS text
    AS 'MODULE_PATHNAME', 'mq_listen' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.listen(text) IS
'LISTENs to the queue''s channel "mq.<queue_name>" and returns its name (docs/reference.md#mqlisten-and-mqunlisten).';
REVOKE ALL ON FUNCTION mq.listen(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.listen(text) TO PUBLIC, mq_owner;

CREATE FUNCTION mq.unlisten(queue_name text) RETURNS boolean
    AS 'MODULE_PATHNAME', 'mq_unlisten' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.unlisten(text) IS
'UNLISTENs from the queue''s channel; returns whether this session was listening (docs/reference.md#mqlisten-and-mqunlisten).';
REVOKE ALL ON FUNCTION mq.unlisten(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.unlisten(text) TO PUBLIC, mq_owner;

-- ---------------------------------------------------------------------------
-- Registered consumers and liveness (needs mq preloaded).

CREATE FUNCTION mq.register_consumer(consumer_id text, heartbeat_timeout interval DEFAULT '30 seconds')
RETURNS void AS 'MODULE_PATHNAME', 'mq_register_consumer' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.register_consumer(text, interval) IS
'Registers this session as a consumer whose claims are released when it ends or stops heartbeating (docs/reference.md#mqregister_consumer).';
REVOKE ALL ON FUNCTION mq.register_consumer(text, interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.register_consumer(text, interval) TO PUBLIC, mq_owner;

CREATE FUNCTION mq.consumer_heartbeat() RETURNS boolean
    AS 'MODULE_PATHNAME', 'mq_consumer_heartbeat' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.consumer_heartbeat() IS
'Tells mq that this registered consumer is alive; false when the session is not registered (docs/reference.md#mqconsumer_heartbeat).';
REVOKE ALL ON FUNCTION mq.consumer_heartbeat() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.consumer_heartbeat() TO PUBLIC, mq_owner;

CREATE FUNCTION mq.unregister_consumer() RETURNS boolean
    AS 'MODULE_PATHNAME', 'mq_unregister_consumer' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.unregister_consumer() IS
'Stops tracking this session by heartbeat; false when it was not registered (docs/reference.md#mqunregister_consumer).';
REVOKE ALL ON FUNCTION mq.unregister_consumer() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.unregister_consumer() TO PUBLIC, mq_owner;

CREATE FUNCTION mq._consumers()
RETURNS TABLE (consumer_id text, pid integer, token bigint, registered_at timestamptz,
               last_heartbeat timestamptz, heartbeat_timeout_ms bigint, state text, queue_ids bigint[])
    AS 'MODULE_PATHNAME', 'mq_consumers' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq._consumers() IS 'mq internal: the registered consumers of this database, from shared memory';
REVOKE ALL ON FUNCTION mq._consumers() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._consumers() TO PUBLIC, mq_owner;

CREATE FUNCTION mq._consumer_in_flight(p_token bigint, p_queue_ids bigint[])
RETURNS TABLE (queue_name text, in_flight bigint)
    AS 'MODULE_PATHNAME', 'mq_consumer_in_flight' LANGUAGE C STABLE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq._consumer_in_flight(bigint, bigint[]) IS 'mq internal: messages one registered consumer holds, per work queue (NULL: all) the caller may consume from';
REVOKE ALL ON FUNCTION mq._consumer_in_flight(bigint, bigint[]) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._consumer_in_flight(bigint, bigint[]) TO PUBLIC, mq_owner;

-- A consumer shows with the queues the caller may monitor; one that holds
-- none of them only to holders of mq_consumer or mq_monitor and to itself.
CREATE VIEW mq.consumers WITH (security_barrier) AS
SELECT c.consumer_id, c.pid, f.queue_name, c.state, c.registered_at, c.last_heartbeat,
       c.heartbeat_timeout_ms OPERATOR(pg_catalog.*) interval '1 millisecond' AS heartbeat_timeout, f.in_flight
  FROM mq._consumers() c
  LEFT JOIN LATERAL mq._consumer_in_flight(c.token, c.queue_ids) f ON true
 WHERE f.queue_name IS NOT NULL OR c.pid OPERATOR(pg_catalog.=) pg_catalog.pg_backend_pid()
    OR pg_catalog.pg_has_role('mq_consumer', 'USAGE') OR pg_catalog.pg_has_role('mq_monitor', 'USAGE');
COMMENT ON VIEW mq.consumers IS
'Registered consumers of this database, one row per queue they read, with state and messages in flight (docs/reference.md#view-mqconsumers).';
GRANT SELECT ON mq.consumers TO PUBLIC;

-- ---------------------------------------------------------------------------
-- Monitoring: metrics and the warnings a person acts on (docs/monitoring.md).

CREATE FUNCTION mq.metrics(queue_name text)
RETURNS TABLE (queue_name text, depth bigint, in_flight bigint, delayed bigint, dead_lettered bigint,
               oldest_age_s double precision, total_sent bigint, total_acked bigint, blocked bigint)
    AS 'MODULE_PATHNAME', 'mq_metrics' LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 1;
COMMENT ON FUNCTION mq.metrics(text) IS
'Approximate counts of one queue: depth, in flight, delayed, dead-lettered, oldest age, totals (docs/reference.md#mqmetrics).';
REVOKE ALL ON FUNCTION mq.metrics(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.metrics(text) TO PUBLIC, mq_owner;

CREATE FUNCTION mq.metrics_all()
RETURNS TABLE (queue_name text, depth bigint, in_flight bigint, delayed bigint, dead_lettered bigint,
               oldest_age_s double precision, total_sent bigint, total_acked bigint, blocked bigint)
    AS 'MODULE_PATHNAME', 'mq_metrics_all' LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 100;
COMMENT ON FUNCTION mq.metrics_all() IS
'mq.metrics of every queue the caller may monitor, one row per queue (docs/reference.md#mqmetrics_all).';
REVOKE ALL ON FUNCTION mq.metrics_all() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.metrics_all() TO PUBLIC, mq_owner;

CREATE FUNCTION mq._xmin_horizon(OUT pid integer, OUT backend_type text, OUT state text, OUT database text,
                                 OUT xact_age_s double precision, OUT xmin_age bigint)
RETURNS record AS 'MODULE_PATHNAME', 'mq_xmin_horizon' LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION mq._xmin_horizon() IS
'mq internal: the backend other than the caller holding the oldest xmin (src/health.c); all NULL when none';
REVOKE ALL ON FUNCTION mq._xmin_horizon() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._xmin_horizon() TO PUBLIC, mq_owner;

CREATE FUNCTION mq._open_claims()
RETURNS TABLE (pid integer, queue_name text, lapsed_s double precision, xact_age_s double precision)
    AS 'MODULE_PATHNAME', 'mq_open_claims' LANGUAGE C VOLATILE PARALLEL RESTRICTED;
COMMENT ON FUNCTION mq._open_claims() IS
'mq internal: transactions still holding claims past their visibility timeout (src/health.c)';
REVOKE ALL ON FUNCTION mq._open_claims() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._open_claims() TO PUBLIC, mq_owner;

CREATE FUNCTION mq.warnings(horizon_age interval DEFAULT '5 minutes')
RETURNS TABLE (warning text, queue_name text, pid integer, age_s double precision, detail text)
LANGUAGE sql STABLE PARALLEL RESTRICTED SET search_path = pg_catalog, pg_temp
AS $$
    -- the horizon: a backend's transaction, a prepared transaction, a slot
    SELECT 'xmin_horizon', NULL::text, h.pid, h.xact_age_s,
           format('%s (%s) in database %s holds the xmin horizon, %s transactions old',
                  h.backend_type, COALESCE(h.state, 'no state'), COALESCE(h.database, 'none'), h.xmin_age)
      FROM mq._xmin_horizon() h
     WHERE h.pid IS NOT NULL
       AND h.xact_age_s OPERATOR(pg_catalog.>=) extract(epoch FROM horizon_age)
    UNION ALL
    SELECT 'xmin_horizon', NULL, NULL,
           extract(epoch FROM clock_timestamp() OPERATOR(pg_catalog.-) p.prepared)::double precision,
           format('prepared transaction %L holds the xmin horizon, %s transactions old',
                  p.gid, age(p.transaction))
      FROM pg_prepared_xacts p
     WHERE p.prepared OPERATOR(pg_catalog.<=) (clock_timestamp() OPERATOR(pg_catalog.-) horizon_age)
    UNION ALL
    SELECT 'xmin_horizon', NULL, s.active_pid, NULL,
           format('replication slot %L holds the xmin horizon, %s transactions old (%s)',
                  s.slot_name, greatest(age(s.xmin), age(s.catalog_xmin)),
                  CASE WHEN s.active THEN 'active' ELSE 'inactive' END)
      FROM pg_replication_slots s
     WHERE (s.xmin IS NOT NULL OR s.catalog_xmin IS NOT NULL) AND NOT s.active
    UNION ALL
    -- claims whose transaction is still open past their visibility
    -- timeout: their rows stay locked, so every other reader skips them
    SELECT 'claim_stuck', c.queue_name, c.pid, c.lapsed_s,
           format('a transaction open for %s s holds claims whose visibility timeout ended %s s ago;'
                  ' other readers skip them until it commits or rolls back',
                  round(c.xact_age_s::numeric, 1), round(c.lapsed_s::numeric, 1))
      FROM mq._open_claims() c
    UNION ALL
    -- registered consumers whose heartbeat is overdue (lapsed: maintenance
    -- has released their claims; alive: it has not run since)
    SELECT 'consumer_lapsed', c.queue_name, c.pid,
           extract(epoch FROM clock_timestamp() OPERATOR(pg_catalog.-) c.last_heartbeat)::double precision,
           format('consumer %L stopped heartbeating (timeout %s)', c.consumer_id, c.heartbeat_timeout)
      FROM mq.consumers c
     WHERE c.state OPERATOR(pg_catalog.=) 'lapsed'
        OR (c.state OPERATOR(pg_catalog.=) 'alive' AND c.last_heartbeat OPERATOR(pg_catalog.<)
            (clock_timestamp() OPERATOR(pg_catalog.-) c.heartbeat_timeout))
$$;
COMMENT ON FUNCTION mq.warnings(interval) IS
'What slows or stalls queues now, one row per finding (docs/reference.md#mqwarnings).';
REVOKE ALL ON FUNCTION mq.warnings(interval) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.warnings(interval) TO PUBLIC, mq_owner;

-- ---------------------------------------------------------------------------
-- Maintenance.

CREATE FUNCTION mq._release_consumers() RETURNS bigint
    AS 'MODULE_PATHNAME', 'mq_release_consumers' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq._release_consumers() IS
'mq internal: makes the claims of sessions that ended and of lapsed registered consumers visible again and frees their partition leases';
REVOKE ALL ON FUNCTION mq._release_consumers() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._release_consumers() TO mq_owner;

CREATE FUNCTION mq._compact_offsets() RETURNS bigint
    AS 'MODULE_PATHNAME', 'mq_compact_offsets' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq._compact_offsets() IS 'mq internal: deletes committed offsets superseded by a later commit (src/partition.c)';
REVOKE ALL ON FUNCTION mq._compact_offsets() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._compact_offsets() TO mq_owner;

CREATE FUNCTION mq._maintain_queue(queue_name text) RETURNS bigint
    AS 'MODULE_PATHNAME', 'mq_maintain_queue' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq._maintain_queue(text) IS 'mq internal: the upkeep of one work queue for mq.maintain';
REVOKE ALL ON FUNCTION mq._maintain_queue(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._maintain_queue(text) TO mq_owner;

-- Each queue in its own subtransaction: a queue dropped meanwhile is
-- skipped, and one whose upkeep fails is logged with its name and
-- skipped, instead of failing the whole pass and so every other queue's
-- upkeep (a cancel is not caught: OTHERS excludes it).
CREATE FUNCTION mq._maintain_queues() RETURNS bigint
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_name text;
    v_total bigint := 0;
BEGIN
    FOR v_name IN SELECT q.queue_name FROM mq.queue q ORDER BY q.queue_id LOOP
        BEGIN
            v_total := v_total + mq._maintain_queue(v_name);
        EXCEPTION
            WHEN undefined_object OR undefined_table THEN
                NULL;
            WHEN OTHERS THEN
                RAISE WARNING 'skipping maintenance of queue "%": %', v_name, SQLERRM
                    USING ERRCODE = SQLSTATE;
        END;
    END LOOP;
    RETURN v_total;
END
$$;
COMMENT ON FUNCTION mq._maintain_queues() IS 'mq internal: the per-queue part of mq.maintain';
REVOKE ALL ON FUNCTION mq._maintain_queues() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._maintain_queues() TO mq_owner;
ALTER FUNCTION mq._maintain_queues() OWNER TO mq_owner;

CREATE FUNCTION mq._maintain() RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM mq._compact_offsets();
    RETURN mq._release_consumers() + mq._maintain_queues();
END
$$;
COMMENT ON FUNCTION mq._maintain() IS 'mq internal: body of mq.maintain, reached through mq_checked (src/rights.c)';
REVOKE ALL ON FUNCTION mq._maintain() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._maintain() TO mq_owner;
ALTER FUNCTION mq._maintain() OWNER TO mq_owner;

CREATE FUNCTION mq.maintain() RETURNS bigint
    AS 'MODULE_PATHNAME', 'mq_checked' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.maintain() IS
'Periodic maintenance of the current database; returns how many messages it released or removed (docs/reference.md#mqmaintain).';
REVOKE ALL ON FUNCTION mq.maintain() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.maintain() TO PUBLIC, mq_owner;

-- ---------------------------------------------------------------------------
-- Citus (docs/scale-out.md).  On a Citus cluster the catalog stays on the
-- coordinator, a partitioned queue is distributed by partition (its
-- offsets are taken on the worker holding each partition, by the offset
-- trigger, from that worker's copy of the partition's sequence), and work
-- queues stay on the coordinator.

CREATE FUNCTION mq._local_end(queue_id bigint, partition integer, visible boolean) RETURNS bigint
    AS 'MODULE_PATHNAME', 'mq_local_end' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION mq._local_end(bigint, integer, boolean) IS
'mq internal: the end of a partition from this node''s offset sequence and, when visible, its running sends'' holds (run on the partition''s worker by a router query); 42704 when this node has no such sequence, 55000 visible without preload';
REVOKE ALL ON FUNCTION mq._local_end(bigint, integer, boolean) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._local_end(bigint, integer, boolean) TO mq_owner;

CREATE FUNCTION mq._scram_secret(password text) RETURNS text
    AS 'MODULE_PATHNAME', 'mq_scram_secret' LANGUAGE C VOLATILE STRICT PARALLEL SAFE;
COMMENT ON FUNCTION mq._scram_secret(text) IS
'mq internal: the SCRAM-SHA-256 verifier of a password (random salt), for ALTER ROLE ... PASSWORD';
REVOKE ALL ON FUNCTION mq._scram_secret(text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._scram_secret(text) TO mq_owner;

-- Whether mq.citus_distribute() has run: Citus is installed, this is its
-- coordinator and mq_owner has its credential in pg_dist_authinfo.
CREATE FUNCTION mq._citus_enabled() RETURNS boolean
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_enabled boolean;
BEGIN
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_authinfo') IS NULL THEN
        RETURN false;
    END IF;
    EXECUTE 'SELECT pg_catalog.citus_is_coordinator() AND EXISTS (SELECT FROM pg_catalog.pg_dist_authinfo a'
            ' WHERE a.rolename OPERATOR(pg_catalog.=) ''mq_owner'')' INTO v_enabled;
    RETURN v_enabled;
END
$$;
COMMENT ON FUNCTION mq._citus_enabled() IS 'mq internal: whether mq.citus_distribute() has run on this Citus coordinator';
REVOKE ALL ON FUNCTION mq._citus_enabled() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._citus_enabled() TO mq_owner;

CREATE FUNCTION mq._raise_offsets(queue_id bigint, partition integer, at_least bigint) RETURNS bigint
    AS 'MODULE_PATHNAME', 'mq_raise_offsets' LANGUAGE C VOLATILE STRICT PARALLEL UNSAFE;
COMMENT ON FUNCTION mq._raise_offsets(bigint, integer, bigint) IS
'mq internal: raises this node''s offset sequence of a partition above at_least (never lowers it) and returns its end; 42704 when this node has no such sequence';
REVOKE ALL ON FUNCTION mq._raise_offsets(bigint, integer, bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._raise_offsets(bigint, integer, bigint) TO mq_owner;

-- The offset sequences of one log on every worker: created when missing,
-- raised (never lowered) above every offset the coordinator's sequence
-- handed out, the partition's rows hold, its high-water mark records or a
-- group committed, so that offsets continue where they were, on whichever
-- worker the partition is or is moved to.
CREATE FUNCTION mq._citus_worker_sequences(p_queue_id bigint, p_partitions integer) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_seq text;
    v_used bigint;
    v_rows bigint;
    v_hwm bigint;
    v_err text;
BEGIN
    FOR v_partition IN 0..p_partitions - 1 LOOP
        v_seq := 'p_' || p_queue_id || '_o' || v_partition;
        EXECUTE format('SELECT CASE WHEN s.is_called THEN s.last_value ELSE 0 END FROM mq.%I s', v_seq) INTO v_used;
        EXECUTE format('SELECT max("offset") FROM mq.%I WHERE partition = $1', 'p_' || p_queue_id)
            INTO v_rows USING v_partition;
        EXECUTE format('SELECT hwm FROM mq.%I WHERE partition = $1', 'p_' || p_queue_id || '_head')
            INTO v_hwm USING v_partition;
        v_used := GREATEST(v_used, v_rows, v_hwm,
                           (SELECT max(o.committed) FROM mq.group_offset o
                             WHERE o.queue_id = p_queue_id AND o.partition = v_partition));
        SELECT r.nodename || ':' || r.nodeport || ': ' || r.result INTO v_err
          FROM pg_catalog.run_command_on_workers(format(
            'CREATE SEQUENCE IF NOT EXISTS mq.%1$I AS bigint CACHE 1;'
            ' GRANT USAGE, SELECT, UPDATE ON SEQUENCE mq.%1$I TO mq_owner;'
            ' SELECT mq._raise_offsets(%2$s, %3$s, %4$s)',
            v_seq, p_queue_id, v_partition, v_used)) r
         WHERE NOT r.success LIMIT 1;
        IF v_err IS NOT NULL THEN
            RAISE EXCEPTION 'could not create offset sequence mq.% on a worker', v_seq
                USING ERRCODE = '55000', DETAIL = v_err;
        END IF;
    END LOOP;
END
$$;
COMMENT ON FUNCTION mq._citus_worker_sequences(bigint, integer) IS
'mq internal: creates the offset sequences of one partitioned queue on every Citus worker, or raises them above every offset handed out, stored, recorded or committed';
REVOKE ALL ON FUNCTION mq._citus_worker_sequences(bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._citus_worker_sequences(bigint, integer) TO mq_owner;

-- Distributes one partitioned queue by partition (its rows move to the
-- workers).  Work queues are left on the coordinator.
CREATE FUNCTION mq._citus_distribute_queue(p_queue_id bigint, p_partitions integer) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
-- not Citus's notices about copying the rows
SET client_min_messages = warning
AS $$
DECLARE
    v_parent text := 'mq.p_' || p_queue_id;
BEGIN
    IF p_partitions IS NULL OR pg_catalog.to_regclass(v_parent) IS NULL
       OR EXISTS (SELECT FROM pg_catalog.pg_dist_partition d
                   WHERE d.logicalrelid OPERATOR(pg_catalog.=) v_parent::regclass) THEN
        RETURN false;
    END IF;
    PERFORM mq._citus_worker_sequences(p_queue_id, p_partitions);
    -- the offset trigger only touches this node's shared memory and sequence
    PERFORM pg_catalog.set_config('citus.enable_unsafe_triggers', 'on', true);
    PERFORM pg_catalog.create_distributed_table(v_parent, 'partition', colocate_with => 'none',
                                                shard_count => p_partitions);
    PERFORM pg_catalog.create_distributed_table(v_parent || '_head', 'partition', colocate_with => v_parent);
    PERFORM pg_catalog.truncate_local_data_after_distributing_table(v_parent);
    PERFORM pg_catalog.truncate_local_data_after_distributing_table(v_parent || '_head');
    RETURN true;
END
$$;
COMMENT ON FUNCTION mq._citus_distribute_queue(bigint, integer) IS
'mq internal: distributes one partitioned queue by partition over the Citus workers; false when there is nothing to do';
REVOKE ALL ON FUNCTION mq._citus_distribute_queue(bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._citus_distribute_queue(bigint, integer) TO mq_owner;

-- Distributes one work queue by queue: its segments, delayed table and
-- archive become colocated Citus single-shard tables, on one worker that
-- Citus picks for the queue (its rows move there).  Its msg_id sequence,
-- acked count and rights table stay on the coordinator, and so do the key
-- locks of a keyed queue (advisory locks of the coordinator's sessions).
CREATE FUNCTION mq._citus_distribute_work_queue(p_queue_id bigint) RETURNS boolean
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning
AS $$
DECLARE
    v_first text := 'mq.q_' || p_queue_id || '_0';
    v_table text;
BEGIN
    IF pg_catalog.to_regclass(v_first) IS NULL
       OR EXISTS (SELECT FROM pg_catalog.pg_dist_partition d
                   WHERE d.logicalrelid OPERATOR(pg_catalog.=) v_first::regclass) THEN
        RETURN false;
    END IF;
    FOREACH v_table IN ARRAY ARRAY['q_' || p_queue_id || '_0', 'q_' || p_queue_id || '_1',
                                   'q_' || p_queue_id || '_2', 'q_' || p_queue_id || '_3',
                                   'q_' || p_queue_id || '_d', 'a_' || p_queue_id] LOOP
        PERFORM pg_catalog.create_distributed_table('mq.' || v_table, NULL,
            colocate_with => CASE WHEN v_table OPERATOR(pg_catalog.=) ('q_' || p_queue_id || '_0')
                                  THEN 'none' ELSE v_first END);
        PERFORM pg_catalog.truncate_local_data_after_distributing_table('mq.' || v_table);
    END LOOP;
    RETURN true;
END
$$;
COMMENT ON FUNCTION mq._citus_distribute_work_queue(bigint) IS
'mq internal: distributes one work queue by queue (colocated single-shard tables on one Citus worker); false when there is nothing to do';
REVOKE ALL ON FUNCTION mq._citus_distribute_work_queue(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._citus_distribute_work_queue(bigint) TO mq_owner;

-- Drops a dropped log's offset sequences on the workers.
CREATE FUNCTION mq._citus_drop_worker_sequences(p_queue_id bigint, p_partitions integer) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    FOR v_partition IN 0..p_partitions - 1 LOOP
        PERFORM pg_catalog.run_command_on_workers(format('DROP SEQUENCE IF EXISTS mq.%I',
                                                          'p_' || p_queue_id || '_o' || v_partition));
    END LOOP;
END
$$;
COMMENT ON FUNCTION mq._citus_drop_worker_sequences(bigint, integer) IS
'mq internal: drops the offset sequences of one partitioned queue on every Citus worker';
REVOKE ALL ON FUNCTION mq._citus_drop_worker_sequences(bigint, integer) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq._citus_drop_worker_sequences(bigint, integer) TO mq_owner;

CREATE FUNCTION mq.citus_distribute() RETURNS integer
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_password text;
    v_err text;
    v_count integer := 0;
    v_queue record;
BEGIN
    IF NOT (SELECT r.rolsuper FROM pg_catalog.pg_roles r WHERE r.rolname OPERATOR(pg_catalog.=) CURRENT_USER) THEN
        RAISE EXCEPTION 'permission denied to distribute mq' USING ERRCODE = '42501',
            DETAIL = 'Only a superuser may run mq.citus_distribute().';
    END IF;
    IF pg_catalog.to_regclass('pg_catalog.pg_dist_authinfo') IS NULL THEN
        RAISE EXCEPTION 'Citus is not installed in this database' USING ERRCODE = '55000',
            HINT = 'mq.citus_distribute() is for a Citus coordinator; on one server there is nothing to distribute.';
    END IF;
    IF NOT pg_catalog.citus_is_coordinator() THEN
        RAISE EXCEPTION 'this node is not the Citus coordinator' USING ERRCODE = '55000';
    END IF;
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_dist_node n
                    WHERE n.groupid OPERATOR(pg_catalog.<>) 0 AND n.noderole OPERATOR(pg_catalog.=) 'primary'
                      AND n.isactive) THEN
        RAISE EXCEPTION 'the Citus cluster has no worker' USING ERRCODE = '55000',
            HINT = 'Add the workers with citus_add_node first.';
    END IF;
    -- mq_owner logs in to the workers with a password only pg_dist_authinfo
    -- holds; the nodes are sent its verifier, never the password
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_dist_authinfo a WHERE a.rolename OPERATOR(pg_catalog.=) 'mq_owner') THEN
        v_password := pg_catalog.encode(pg_catalog.sha256(pg_catalog.convert_to(
                          pg_catalog.gen_random_uuid()::text OPERATOR(pg_catalog.||) pg_catalog.gen_random_uuid()::text,
                          'UTF8')), 'hex');
        EXECUTE format('ALTER ROLE mq_owner LOGIN PASSWORD %L', mq._scram_secret(v_password));
            SELECT r.nodename || ':' || r.nodeport || ': ' || r.result INTO v_err
          FROM pg_catalog.run_command_on_workers(format('ALTER ROLE mq_owner LOGIN PASSWORD %L',
                                                        mq._scram_secret(v_password))) r
         WHERE NOT r.success LIMIT 1;
        IF v_err IS NOT NULL THEN
            RAISE EXCEPTION 'could not let mq_owner log in on a worker' USING ERRCODE = '55000', DETAIL = v_err;
        END IF;
        INSERT INTO pg_catalog.pg_dist_authinfo (nodeid, rolename, authinfo)
        VALUES (0, 'mq_owner', 'password=' OPERATOR(pg_catalog.||) v_password);
    END IF;
    FOR v_queue IN SELECT q.queue_id, q.partitions FROM mq.queue q ORDER BY q.queue_id LOOP
        IF v_queue.partitions IS NULL THEN
            IF mq._citus_distribute_work_queue(v_queue.queue_id) THEN
                v_count := v_count OPERATOR(pg_catalog.+) 1;
            END IF;
        ELSIF mq._citus_distribute_queue(v_queue.queue_id, v_queue.partitions) THEN
            v_count := v_count OPERATOR(pg_catalog.+) 1;
        ELSE
            -- already distributed: a worker added since needs the sequences
            PERFORM mq._citus_worker_sequences(v_queue.queue_id, v_queue.partitions);
        END IF;
    END LOOP;
    PERFORM mq._invalidate();
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION mq.citus_distribute() IS
'Distributes mq over a Citus cluster; returns how many queues this call distributed (docs/reference.md#mqcitus_distribute).';
REVOKE ALL ON FUNCTION mq.citus_distribute() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.citus_distribute() TO mq_owner;

-- ---------------------------------------------------------------------------
-- The check on the privileges above: every function of mq must have had
-- its REVOKE (without it PUBLIC keeps its default EXECUTE, which comes
-- first in the ACL) and its GRANT to mq_owner.  Which functions PUBLIC
-- may execute is checked by test/sql/privileges.sql.
DO $$
DECLARE
    v_missing text;
BEGIN
    SELECT pg_catalog.string_agg(p.oid::pg_catalog.regprocedure::text, ', ' ORDER BY p.oid) INTO v_missing
      FROM pg_catalog.pg_proc p
     WHERE p.pronamespace OPERATOR(pg_catalog.=) 'mq'::pg_catalog.regnamespace
       AND (p.proacl IS NULL
            OR (SELECT a.grantee FROM pg_catalog.aclexplode(p.proacl) WITH ORDINALITY a
                 ORDER BY a.ordinality LIMIT 1) OPERATOR(pg_catalog.=) 0
            OR NOT EXISTS (SELECT FROM pg_catalog.aclexplode(p.proacl) a
                            WHERE a.grantee OPERATOR(pg_catalog.=) 'mq_owner'::pg_catalog.regrole
                              AND a.privilege_type OPERATOR(pg_catalog.=) 'EXECUTE'));
    IF v_missing IS NOT NULL THEN
        RAISE EXCEPTION 'mq functions without their privileges: %', v_missing
            USING HINT = 'Follow each CREATE FUNCTION with its REVOKE ALL ... FROM PUBLIC and GRANT EXECUTE.';
    END IF;
END
$$;
