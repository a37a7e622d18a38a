-- mq: message queues inside PostgreSQL.
--
-- This file is the single source of the current version; the build copies it
-- to sql/mq--<version>.sql.  Objects are created schema-qualified and every
-- function body runs with a pinned search_path or qualifies what it calls,
-- because the script runs with the extension schema on search_path.

\echo Use "CREATE EXTENSION mq" to load this file. \quit

CREATE SCHEMA mq;
COMMENT ON SCHEMA mq IS 'mq: message queues (work queues with visibility timeouts, retries and dead-letter queues)';

-- Privilege roles.  Roles are cluster-wide, so a second database that installs
-- mq reuses them.  Nobody gets rights on the tables that hold the messages:
-- the functions below are the only way in, and EXECUTE on them is what the
-- roles grant.
DO $$
DECLARE
    v_role text;
BEGIN
    FOREACH v_role IN ARRAY ARRAY['mq_producer', 'mq_consumer', 'mq_admin'] LOOP
        IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname OPERATOR(pg_catalog.=) v_role) THEN
            EXECUTE pg_catalog.format('CREATE ROLE %I NOLOGIN', v_role);
        END IF;
    END LOOP;
END
$$;
GRANT mq_producer, mq_consumer TO mq_admin;
GRANT USAGE ON SCHEMA mq TO mq_producer, mq_consumer, mq_admin;

-- The queue catalog.  Each queue owns a message table mq.q_<queue_id>, an
-- archive table mq.a_<queue_id> and a sequence mq.q_<queue_id>_acked; table
-- names use the numeric id so that no user text is ever spliced into SQL.
CREATE TABLE mq.queue (
    queue_id integer GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    queue_name text NOT NULL UNIQUE,
    visibility_timeout interval NOT NULL,
    max_attempts integer NOT NULL,
    dead_letter_queue_id integer REFERENCES mq.queue (queue_id),
    retry_delay interval NOT NULL,
    retry_backoff double precision NOT NULL,
    retry_delay_max interval NOT NULL,
    ordering text NOT NULL DEFAULT 'none' CHECK (ordering IN ('none', 'key')),
    dead_lettered bigint NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT pg_catalog.now()
);
COMMENT ON TABLE mq.queue IS 'mq internal: one row per queue; use the view mq.queues';
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
'A delivered message: msg_id, receipt (identifies this delivery, as an SQS receipt handle), key, payload, headers, attempts (deliveries so far, this one included), enqueued_at, visible_at (when the visibility timeout lapses), last_error (from the last nack), dead_letter (NULL unless the message was dead-lettered: origin queue, msg_id, attempts, error, reason)';

-- Internal C helpers.  EXECUTE is revoked from PUBLIC below; the admin
-- functions run as the extension owner and call them.
CREATE FUNCTION mq._check_queue_name(queue_name text) RETURNS void
    AS 'MODULE_PATHNAME', 'mq_check_queue_name' LANGUAGE C VOLATILE PARALLEL SAFE;
COMMENT ON FUNCTION mq._check_queue_name(text) IS
'mq internal: raises 22004 for NULL, 22023 for bad characters, 42622 for more than 48 bytes';

CREATE FUNCTION mq._invalidate() RETURNS void
    AS 'MODULE_PATHNAME', 'mq_invalidate' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq._invalidate() IS
'mq internal: tells every session at commit to drop its cached queue definitions and plans';

-- Admin functions: PL/pgSQL, SECURITY DEFINER with a pinned search_path.
-- Who may call them is decided by EXECUTE grants (mq_admin).

CREATE FUNCTION mq._create_queue_tables(p_queue_id integer, p_keyed boolean) RETURNS void
LANGUAGE plpgsql VOLATILE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- fillfactor leaves room on each page so that a claim (which changes
    -- only unindexed columns) is a HOT update and adds no index entry.
    EXECUTE format($ddl$
        CREATE TABLE mq.%1$I (
            msg_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
            vt timestamptz NOT NULL,
            enqueued_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
            attempts integer NOT NULL DEFAULT 0,
            claimed boolean NOT NULL DEFAULT false,
            key text,
            payload jsonb NOT NULL,
            headers jsonb,
            last_error text,
            dead_letter jsonb,
            blocked boolean NOT NULL DEFAULT false
        ) WITH (fillfactor = 70)$ddl$, 'q_' || p_queue_id);
    IF p_keyed THEN
        -- Keyed ordering: only the oldest message of each key is unblocked.
        -- The first index finds a key's oldest message, the second lets a
        -- read walk only unblocked messages.  A claim changes neither key nor
        -- blocked, so it stays a HOT update.
        EXECUTE format('CREATE INDEX %I ON mq.%I (key, msg_id) WHERE key IS NOT NULL',
                       'q_' || p_queue_id || '_key', 'q_' || p_queue_id);
        EXECUTE format('CREATE INDEX %I ON mq.%I (msg_id) WHERE NOT blocked',
                       'q_' || p_queue_id || '_ready', 'q_' || p_queue_id);
    END IF;
    EXECUTE format($ddl$
        CREATE TABLE mq.%1$I (
            LIKE mq.%2$I,
            archived_at timestamptz NOT NULL DEFAULT pg_catalog.clock_timestamp(),
            PRIMARY KEY (msg_id)
        )$ddl$, 'a_' || p_queue_id, 'q_' || p_queue_id);
    EXECUTE format('CREATE SEQUENCE mq.%I', 'q_' || p_queue_id || '_acked');
END
$$;
COMMENT ON FUNCTION mq._create_queue_tables(integer, boolean) IS 'mq internal: creates the tables of one queue';

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

CREATE FUNCTION mq.create_queue(
    queue_name text,
    visibility_timeout interval DEFAULT '30 seconds',
    max_attempts integer DEFAULT 5,
    dead_letter_queue text DEFAULT NULL,
    retry_delay interval DEFAULT '1 second',
    retry_backoff double precision DEFAULT 2.0,
    retry_delay_max interval DEFAULT '15 minutes',
    ordering text DEFAULT 'none')
RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_queue_id integer;
    v_dlq_id integer;
    v_dlq_ordering text;
BEGIN
    PERFORM mq._check_queue_name(create_queue.queue_name);
    PERFORM mq._interval_check('visibility_timeout', create_queue.visibility_timeout, '0', '12 hours');
    PERFORM mq._interval_check('retry_delay', create_queue.retry_delay, '0', '7 days');
    PERFORM mq._interval_check('retry_delay_max', create_queue.retry_delay_max, create_queue.retry_delay, '7 days');
    IF create_queue.max_attempts IS NULL OR create_queue.retry_backoff IS NULL OR create_queue.ordering IS NULL THEN
        RAISE EXCEPTION 'max_attempts, retry_backoff and ordering must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF create_queue.ordering NOT IN ('none', 'key') THEN
        RAISE EXCEPTION 'invalid ordering "%"', create_queue.ordering
            USING ERRCODE = '22023', HINT = 'Use ''none'' or ''key''.';
    END IF;
    IF create_queue.max_attempts NOT BETWEEN 1 AND 1000 THEN
        RAISE EXCEPTION 'max_attempts must be between 1 and 1000' USING ERRCODE = '22023';
    END IF;
    IF NOT create_queue.retry_backoff BETWEEN 1.0 AND 10.0 THEN
        RAISE EXCEPTION 'retry_backoff must be between 1 and 10' USING ERRCODE = '22023';
    END IF;
    IF create_queue.dead_letter_queue IS NOT NULL THEN
        IF create_queue.dead_letter_queue = create_queue.queue_name THEN
            RAISE EXCEPTION 'a queue cannot be its own dead-letter queue' USING ERRCODE = '22023';
        END IF;
        SELECT q.queue_id, q.ordering INTO v_dlq_id, v_dlq_ordering
          FROM mq.queue q WHERE q.queue_name = create_queue.dead_letter_queue;
        IF NOT FOUND THEN
            RAISE EXCEPTION 'dead-letter queue "%" does not exist', create_queue.dead_letter_queue
                USING ERRCODE = '42704', HINT = 'Create the dead-letter queue first.';
        END IF;
        -- Dead letters arrive out of their keys' order, so a keyed queue
        -- cannot receive them without breaking its own guarantee.
        IF v_dlq_ordering = 'key' THEN
            RAISE EXCEPTION 'queue "%" has keyed ordering and cannot be a dead-letter queue', create_queue.dead_letter_queue
                USING ERRCODE = '22023', HINT = 'Use a queue created with ordering => ''none''.';
        END IF;
    END IF;

    INSERT INTO mq.queue AS q (queue_name, visibility_timeout, max_attempts, dead_letter_queue_id,
                               retry_delay, retry_backoff, retry_delay_max, ordering)
    VALUES (create_queue.queue_name, create_queue.visibility_timeout, create_queue.max_attempts, v_dlq_id,
            create_queue.retry_delay, create_queue.retry_backoff, create_queue.retry_delay_max,
            create_queue.ordering)
    ON CONFLICT ON CONSTRAINT queue_queue_name_key DO NOTHING
    RETURNING q.queue_id INTO v_queue_id;
    IF v_queue_id IS NULL THEN
        RAISE EXCEPTION 'queue "%" already exists', create_queue.queue_name USING ERRCODE = '42710';
    END IF;

    PERFORM mq._create_queue_tables(v_queue_id, create_queue.ordering = 'key');
    PERFORM mq._invalidate();
END
$$;
COMMENT ON FUNCTION mq.create_queue(text, interval, integer, text, interval, double precision, interval, text) IS
'Creates a work queue (as SQS CreateQueue with a redrive policy). queue_name: 1-48 bytes of A-Z a-z 0-9 _ . - starting with a letter or digit; visibility_timeout: default claim duration, 0 to 12 hours; max_attempts: deliveries before dead-lettering, 1 to 1000; dead_letter_queue: existing queue that receives exhausted messages (NULL: they are discarded); retry_delay, retry_backoff, retry_delay_max: nack backoff retry_delay * retry_backoff^(attempts-1) capped at retry_delay_max; ordering: ''none'' or ''key'' (per-key FIFO like SQS FIFO message groups: a key''s next message is not handed out while an earlier one of the same key is queued, in flight or waiting to retry; a dead-lettered message lets its key proceed). Errors: 22004 NULL, 22023 bad value, 42622 name too long, 42704 unknown dead-letter queue, 42710 queue exists, 42501 not mq_admin.';

CREATE FUNCTION mq._queue_id(p_queue_name text) RETURNS integer
LANGUAGE plpgsql STABLE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_queue_id integer;
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

CREATE FUNCTION mq.drop_queue(queue_name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_queue_id integer;
    v_user text;
BEGIN
    IF drop_queue.queue_name IS NULL THEN
        RAISE EXCEPTION 'queue_name must not be NULL' USING ERRCODE = '22004';
    END IF;
    SELECT q.queue_id INTO v_queue_id FROM mq.queue q WHERE q.queue_name = drop_queue.queue_name FOR UPDATE;
    IF NOT FOUND THEN
        RETURN false;
    END IF;
    -- Dropping a dead-letter queue in use would silently turn dead-lettering
    -- into discarding; refuse instead.
    SELECT string_agg(format('"%s"', q.queue_name), ', ' ORDER BY q.queue_name) INTO v_user
      FROM mq.queue q WHERE q.dead_letter_queue_id = v_queue_id;
    IF v_user IS NOT NULL THEN
        RAISE EXCEPTION 'cannot drop queue "%" because it is the dead-letter queue of %', drop_queue.queue_name, v_user
            USING ERRCODE = '2BP01', HINT = 'Drop those queues first.';
    END IF;
    DELETE FROM mq.queue q WHERE q.queue_id = v_queue_id;
    EXECUTE format('DROP TABLE mq.%I, mq.%I', 'q_' || v_queue_id, 'a_' || v_queue_id);
    EXECUTE format('DROP SEQUENCE mq.%I', 'q_' || v_queue_id || '_acked');
    PERFORM mq._invalidate();
    RETURN true;
END
$$;
COMMENT ON FUNCTION mq.drop_queue(text) IS
'Drops a queue with its messages, archive and counters (as SQS DeleteQueue). Returns false when there is no such queue. Errors: 22004 NULL, 2BP01 the queue is another queue''s dead-letter queue, 42501 not mq_admin.';

CREATE FUNCTION mq.purge(queue_name text) RETURNS bigint
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_count bigint;
BEGIN
    EXECUTE format('DELETE FROM mq.%I', 'q_' || mq._queue_id(purge.queue_name));
    GET DIAGNOSTICS v_count = ROW_COUNT;
    RETURN v_count;
END
$$;
COMMENT ON FUNCTION mq.purge(text) IS
'Deletes every message of a queue, visible, in flight or delayed (as SQS PurgeQueue); the archive is kept. Returns the number deleted. Errors: 22004 NULL, 42704 no such queue, 42501 not mq_admin.';

CREATE FUNCTION mq._metrics(p_queue_name text)
RETURNS TABLE (queue_name text, depth bigint, in_flight bigint, delayed bigint, dead_lettered bigint,
               oldest_age_s double precision, total_sent bigint, total_acked bigint, blocked bigint)
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SECURITY DEFINER SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_queue_id integer := mq._queue_id(p_queue_name);
BEGIN
    RETURN QUERY EXECUTE format($q$
        SELECT $1,
               count(*) FILTER (WHERE m.vt <= v.now AND NOT m.blocked),
               count(*) FILTER (WHERE m.vt > v.now AND m.claimed),
               count(*) FILTER (WHERE m.vt > v.now AND NOT m.claimed AND NOT m.blocked),
               (SELECT q.dead_lettered FROM mq.queue q WHERE q.queue_id = $2),
               coalesce(extract(epoch FROM v.now - min(m.enqueued_at) FILTER (WHERE m.vt <= v.now AND NOT m.blocked))::double precision, 0),
               (SELECT CASE WHEN s.is_called THEN s.last_value ELSE 0 END FROM %2$s s),
               (SELECT CASE WHEN s.is_called THEN s.last_value ELSE 0 END FROM mq.%3$I s),
               count(*) FILTER (WHERE m.blocked)
          FROM (SELECT clock_timestamp() AS now) v LEFT JOIN mq.%1$I m ON true
         GROUP BY v.now$q$,
        'q_' || v_queue_id, pg_get_serial_sequence(format('mq.%I', 'q_' || v_queue_id), 'msg_id'),
        'q_' || v_queue_id || '_acked')
    USING p_queue_name, v_queue_id;
END
$$;
COMMENT ON FUNCTION mq._metrics(text) IS 'mq internal: body of mq.metrics';

-- A SQL wrapper, because PL/pgSQL cannot have an input and an output
-- parameter both named queue_name.
CREATE FUNCTION mq.metrics(queue_name text)
RETURNS TABLE (queue_name text, depth bigint, in_flight bigint, delayed bigint, dead_lettered bigint,
               oldest_age_s double precision, total_sent bigint, total_acked bigint, blocked bigint)
LANGUAGE sql VOLATILE PARALLEL UNSAFE
AS $$ SELECT * FROM mq._metrics($1) $$;
COMMENT ON FUNCTION mq.metrics(text) IS
'Queue metrics (as SQS GetQueueAttributes ApproximateNumberOfMessages*): depth = visible messages, in_flight = claimed and within their visibility timeout, delayed = waiting out a send delay or a retry backoff, dead_lettered = messages moved to the dead-letter queue or discarded after their last attempt, oldest_age_s = age in seconds of the oldest visible message (0 when none), total_sent = msg_ids issued, total_acked = messages acked or archived (both counters are sequences, so they also count operations whose transaction rolled back), blocked = messages of a keyed queue waiting behind an earlier message of their key. Errors: 22004 NULL, 42704 no such queue, 42501 not mq_consumer.';

CREATE VIEW mq.queues AS
SELECT q.queue_name, q.visibility_timeout, q.max_attempts, d.queue_name AS dead_letter_queue,
       q.retry_delay, q.retry_backoff, q.retry_delay_max, q.ordering, q.created_at
  FROM mq.queue q LEFT JOIN mq.queue d ON d.queue_id OPERATOR(pg_catalog.=) q.dead_letter_queue_id;
COMMENT ON VIEW mq.queues IS 'One row per queue with its settings (as SQS ListQueues + GetQueueAttributes)';

-- Hot paths: C functions with plans prepared once per queue and kept.  They
-- are not STRICT so that a NULL argument raises 22004 instead of silently
-- returning NULL.  They run their statements as the owner of schema mq after
-- PostgreSQL has checked EXECUTE for the caller.

CREATE FUNCTION mq.send(queue_name text, payload jsonb, key text DEFAULT NULL,
                        headers jsonb DEFAULT NULL, delay interval DEFAULT '0')
RETURNS bigint AS 'MODULE_PATHNAME', 'mq_send' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.send(text, jsonb, text, jsonb, interval) IS
'Sends one message (as SQS SendMessage with DelaySeconds); returns its msg_id. It becomes visible when the sending transaction commits and not before delay (0 to 365 days, server clock) has passed. Errors: 22004 NULL queue_name, payload or delay; 22023 delay out of range; 42704 no such queue; 42501 not mq_producer.';

CREATE FUNCTION mq.send_batch(queue_name text, payloads jsonb[], keys text[] DEFAULT NULL,
                              headers jsonb[] DEFAULT NULL, delay interval DEFAULT '0')
RETURNS SETOF bigint AS 'MODULE_PATHNAME', 'mq_send_batch' LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 100;
COMMENT ON FUNCTION mq.send_batch(text, jsonb[], text[], jsonb[], interval) IS
'Sends many messages in one statement, all or nothing (as SQS SendMessageBatch, without its 10-message cap: at most 100000); returns the msg_ids in array order. keys and headers, when given, must have as many elements as payloads. Errors: 22004 NULL queue_name, payloads, delay or a NULL payload element; 22023 arrays of different lengths, multidimensional arrays, too many messages or delay out of range; 42704 no such queue; 42501 not mq_producer.';

CREATE FUNCTION mq.read(queue_name text, qty integer DEFAULT 1, visibility_timeout interval DEFAULT NULL,
                        wait interval DEFAULT '0')
RETURNS SETOF mq.message AS 'MODULE_PATHNAME', 'mq_read' LANGUAGE C VOLATILE PARALLEL UNSAFE ROWS 10;
COMMENT ON FUNCTION mq.read(text, integer, interval, interval) IS
'Claims up to qty (1 to 10000) visible messages, oldest first, with FOR UPDATE SKIP LOCKED so concurrent readers never get the same message (as SQS ReceiveMessage). Each becomes invisible for visibility_timeout (0 to 12 hours; NULL: the queue default) and its attempts grows by one. A visible message that already used its last attempt is moved to the dead-letter queue instead of being returned. wait (0 to 15 minutes) is long polling, as SQS WaitTimeSeconds: when nothing is visible the read sleeps until a send commits or wait passes, and returns as soon as it has at least one message; it is woken at once when mq is in shared_preload_libraries, and otherwise re-checks every 10 ms backing off to 200 ms. Query cancel and statement_timeout end a wait, and a cancelled read claims nothing. Errors: 22004 NULL queue_name, qty or wait; 22023 qty, visibility_timeout or wait out of range; 42704 no such queue; 42501 not mq_consumer.';

CREATE FUNCTION mq.ack(queue_name text, msg_id bigint, receipt bigint DEFAULT NULL)
RETURNS boolean AS 'MODULE_PATHNAME', 'mq_ack' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.ack(text, bigint, bigint) IS
'Deletes a processed message (as SQS DeleteMessage). With a receipt, only the delivery it names may ack: if the message was delivered again since, nothing changes and the result is false. Returns false when there is no such message. Errors: 22004 NULL queue_name or msg_id; 42704 no such queue; 42501 not mq_consumer.';

CREATE FUNCTION mq.ack(queue_name text, msg_ids bigint[])
RETURNS bigint AS 'MODULE_PATHNAME', 'mq_ack_batch' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.ack(text, bigint[]) IS
'Deletes many processed messages (as SQS DeleteMessageBatch); returns how many existed and were deleted. Errors: 22004 NULL queue_name, msg_ids or element; 22023 multidimensional array; 42704 no such queue; 42501 not mq_consumer.';

CREATE FUNCTION mq.nack(queue_name text, msg_id bigint, receipt bigint DEFAULT NULL,
                        delay interval DEFAULT NULL, error text DEFAULT NULL)
RETURNS boolean AS 'MODULE_PATHNAME', 'mq_nack' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.nack(text, bigint, bigint, interval, text) IS
'Releases a claimed message (one that was read and not since released) for another attempt after delay (0 to 365 days; NULL: the queue backoff retry_delay * retry_backoff^(attempts-1) capped at retry_delay_max), keeping error as last_error (as SQS ChangeMessageVisibility with a retry policy). At its last attempt the message goes to the dead-letter queue (or is discarded when the queue has none). Returns false when there is no such claimed message or the receipt is stale. Errors: 22004 NULL queue_name or msg_id; 22023 delay out of range; 42704 no such queue; 42501 not mq_consumer.';

CREATE FUNCTION mq.extend(queue_name text, msg_id bigint, visibility_timeout interval, receipt bigint DEFAULT NULL)
RETURNS timestamptz AS 'MODULE_PATHNAME', 'mq_extend' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.extend(text, bigint, interval, bigint) IS
'Heartbeat for long work: sets a claimed message''s visibility to now + visibility_timeout (0 to 12 hours), as SQS ChangeMessageVisibility. Returns the new visible_at, or NULL when the message does not exist, is not claimed, or the receipt is stale. Errors: 22004 NULL queue_name, msg_id or visibility_timeout; 22023 visibility_timeout out of range; 42704 no such queue; 42501 not mq_consumer.';

CREATE FUNCTION mq.archive(queue_name text, msg_id bigint, receipt bigint DEFAULT NULL)
RETURNS boolean AS 'MODULE_PATHNAME', 'mq_archive' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.archive(text, bigint, bigint) IS
'Acks a message by moving it to the queue''s archive instead of deleting it (as pgmq archive). Receipt rules as mq.ack. Returns false when there is no such message or the receipt is stale. Errors: 22004 NULL queue_name or msg_id; 42704 no such queue; 42501 not mq_consumer.';

CREATE FUNCTION mq.maintain() RETURNS bigint
    AS 'MODULE_PATHNAME', 'mq_maintain' LANGUAGE C VOLATILE PARALLEL UNSAFE;
COMMENT ON FUNCTION mq.maintain() IS
'Moves every message whose last attempt''s visibility timeout has lapsed to its dead-letter queue (or discards it), in all queues; returns how many. mq.read does the same lazily for the messages it meets; call this from a scheduler (pg_cron) so metrics stay exact on idle queues. Errors: 42501 not mq_admin.';

-- Privileges.
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA mq FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA mq FROM PUBLIC;
GRANT EXECUTE ON FUNCTION mq.send(text, jsonb, text, jsonb, interval),
                          mq.send_batch(text, jsonb[], text[], jsonb[], interval)
    TO mq_producer;
GRANT EXECUTE ON FUNCTION mq.read(text, integer, interval, interval),
                          mq.ack(text, bigint, bigint),
                          mq.ack(text, bigint[]),
                          mq.nack(text, bigint, bigint, interval, text),
                          mq.extend(text, bigint, interval, bigint),
                          mq.archive(text, bigint, bigint),
                          mq.metrics(text),
                          mq._metrics(text)
    TO mq_consumer;
GRANT EXECUTE ON FUNCTION mq.create_queue(text, interval, integer, text, interval, double precision, interval, text),
                          mq.drop_queue(text),
                          mq.purge(text),
                          mq.maintain()
    TO mq_admin;
GRANT SELECT ON mq.queues TO mq_producer, mq_consumer, mq_admin;
