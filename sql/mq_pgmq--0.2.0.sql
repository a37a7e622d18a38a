-- mq_pgmq: pgmq's public SQL API (schema pgmq) on top of mq's work queues.
--
-- Pure SQL over mq's public functions: every call below goes through mq's
-- own entry points, so mq checks the caller's rights, the queue's settings
-- and its arguments exactly as for a direct call.  Nothing here stores
-- anything: a pgmq "queue" is an mq queue of the same name, so queues made
-- with mq.create_queue and with pgmq.create are usable both ways.  What maps
-- to what, and every difference from pgmq, is in docs/pgmq.md.
--
-- Every function pins search_path (the script runs with the extension
-- schema on search_path, and callers run with theirs) and names mq's and
-- its own objects with their schema.

\echo Use "CREATE EXTENSION mq_pgmq" to load this file. \quit

-- Fails when schema pgmq exists, e.g. when pgmq itself is installed: the
-- two cannot share a database.
CREATE SCHEMA pgmq;
COMMENT ON SCHEMA pgmq IS 'mq_pgmq: pgmq''s SQL API on top of mq''s queues (docs/pgmq.md)';
GRANT USAGE ON SCHEMA pgmq TO PUBLIC;

-- ---------------------------------------------------------------------------
-- Types, with pgmq's names and columns.

CREATE TYPE pgmq.message_record AS (
    msg_id bigint,
    read_ct integer,
    enqueued_at timestamptz,
    vt timestamptz,
    message jsonb,
    headers jsonb
);
COMMENT ON TYPE pgmq.message_record IS
'A message as pgmq returns it: msg_id = mq msg_id, read_ct = mq attempts, enqueued_at, vt = mq visible_at, message = mq payload, headers';

CREATE TYPE pgmq.queue_record AS (
    queue_name varchar,
    is_partitioned boolean,
    is_unlogged boolean,
    created_at timestamptz
);
COMMENT ON TYPE pgmq.queue_record IS 'A queue as pgmq.list_queues returns it';

CREATE TYPE pgmq.metrics_result AS (
    queue_name text,
    queue_length bigint,
    newest_msg_age_sec integer,
    oldest_msg_age_sec integer,
    total_messages bigint,
    scrape_time timestamptz,
    queue_visible_length bigint
);
COMMENT ON TYPE pgmq.metrics_result IS 'Queue metrics as pgmq.metrics returns them (mapped from mq.metrics)';

-- pgmq's queue catalog, as a view of mq's: the queues the caller has a
-- right on.  mq has no unlogged queues; is_partitioned marks mq's
-- partitioned queues (logs), which pgmq's read functions refuse.
CREATE VIEW pgmq.meta AS
SELECT q.queue_name::pg_catalog.varchar AS queue_name,
       q.partitions IS NOT NULL AS is_partitioned,
       false AS is_unlogged,
       q.created_at
  FROM mq.queues q;
COMMENT ON VIEW pgmq.meta IS 'pgmq''s queue list: the mq queues the caller has a right on (mq.queues)';
GRANT SELECT ON pgmq.meta TO PUBLIC;

-- ---------------------------------------------------------------------------
-- Internal helpers.

-- pgmq counts times in whole seconds; a negative vt or delay means "now".
-- NULL stays NULL, for mq to refuse (GREATEST would make it 0).
CREATE FUNCTION pgmq._seconds(seconds integer) RETURNS interval
LANGUAGE sql IMMUTABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT pg_catalog.make_interval(secs => CASE WHEN seconds < 0 THEN 0 ELSE seconds END) $$;
COMMENT ON FUNCTION pgmq._seconds(integer) IS 'mq_pgmq internal: seconds as an interval, negative as 0, NULL as NULL';

CREATE FUNCTION pgmq._until(at timestamptz) RETURNS interval
LANGUAGE sql VOLATILE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT CASE WHEN at <= pg_catalog.clock_timestamp() THEN interval '0' ELSE at - pg_catalog.clock_timestamp() END
$$;
COMMENT ON FUNCTION pgmq._until(timestamptz) IS 'mq_pgmq internal: the delay from now to a time, a past time as 0, NULL as NULL';

-- The claim behind read, read_with_poll and pop.  Reads are always unkeyed
-- and in msg_id order, as pgmq's are.
CREATE FUNCTION pgmq._read(queue_name text, vt interval, qty integer, wait interval, conditional jsonb)
RETURNS SETOF pgmq.message_record
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF conditional IS NOT NULL AND conditional <> '{}'::jsonb THEN
        RAISE EXCEPTION 'conditional reads are not supported'
            USING ERRCODE = '0A000',
                  DETAIL = 'mq claims messages in msg_id order and cannot skip those whose message does not contain the condition.',
                  HINT = 'Read without a condition, or use one queue per kind of message.';
    END IF;
    -- NULL would be mq's "the queue's visibility timeout"; pgmq refuses it
    IF vt IS NULL THEN
        RAISE EXCEPTION 'vt must not be NULL' USING ERRCODE = '22004';
    END IF;
    -- pgmq reads nothing for qty 0 (LIMIT 0); mq's read takes 1 to 10000
    IF qty = 0 THEN
        RETURN;
    END IF;
    RETURN QUERY
        SELECT m.msg_id, m.attempts, m.enqueued_at, m.visible_at, m.payload, m.headers
          FROM mq.read(_read.queue_name, _read.qty, _read.vt, _read.wait) AS m;
END
$$;
COMMENT ON FUNCTION pgmq._read(text, interval, integer, interval, jsonb) IS 'mq_pgmq internal: mq.read returning pgmq.message_record';

-- ---------------------------------------------------------------------------
-- Queues.

CREATE FUNCTION pgmq."create"(queue_name text) RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    -- pgmq's create is idempotent, and clients call it at every start: a
    -- queue that exists (and that the caller may see) is left as it is
    IF EXISTS (SELECT FROM mq.queues q WHERE q.queue_name = "create".queue_name) THEN
        RETURN;
    END IF;
    BEGIN
        -- pgmq never dead-letters: allow mq's most attempts
        PERFORM mq.create_queue("create".queue_name, max_attempts => 1000);
    EXCEPTION WHEN duplicate_object OR unique_violation THEN
        -- created by a concurrent call meanwhile
        NULL;
    END;
END
$$;
COMMENT ON FUNCTION pgmq."create"(text) IS
'As pgmq.create: creates an mq work queue (max_attempts 1000, other settings mq''s defaults), or does nothing when a queue of that name exists. Errors: as mq.create_queue (22004, 22023, 42622, 42501), except 42710.';

CREATE FUNCTION pgmq.create_unlogged(queue_name text) RETURNS void
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgmq."create"(queue_name) $$;
COMMENT ON FUNCTION pgmq.create_unlogged(text) IS
'As pgmq.create_unlogged, but mq has no unlogged queues: creates an ordinary (logged, crash-safe) queue, as pgmq.create.';

CREATE FUNCTION pgmq.create_partitioned(queue_name text, partition_interval text DEFAULT '10000',
                                        retention_interval text DEFAULT '100000') RETURNS void
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    PERFORM pgmq."create"(queue_name);
    RAISE NOTICE 'queue "%" is an ordinary mq work queue', queue_name
        USING DETAIL = 'mq''s queues need no pg_partman partitions; partition_interval and retention_interval are not used.';
END
$$;
COMMENT ON FUNCTION pgmq.create_partitioned(text, text, text) IS
'As pgmq.create_partitioned, but creates an ordinary mq work queue (as pgmq.create): mq''s storage needs no pg_partman, and the intervals are not used (no retention).';

-- pgmq's detach_archive keeps a queue's archive when pgmq is dropped.  mq
-- owns the archives, and DROP EXTENSION mq_pgmq leaves every queue and
-- archive in place: there is nothing to detach.
CREATE FUNCTION pgmq.detach_archive(queue_name text) RETURNS void
LANGUAGE plpgsql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF queue_name IS NULL THEN
        RAISE EXCEPTION 'queue_name must not be NULL' USING ERRCODE = '22004';
    END IF;
    IF NOT EXISTS (SELECT FROM mq.queues q WHERE q.queue_name = detach_archive.queue_name) THEN
        RAISE EXCEPTION 'queue "%" does not exist', queue_name USING ERRCODE = '42704';
    END IF;
END
$$;
COMMENT ON FUNCTION pgmq.detach_archive(text) IS
'As pgmq.detach_archive, which keeps a queue''s archive when the extension is dropped: DROP EXTENSION mq_pgmq keeps every mq queue and archive, so this only checks that the queue exists (and that the caller has a right on it). Errors: 22004 NULL, 42704 no such queue (or no right on it).';

CREATE FUNCTION pgmq.drop_queue(queue_name text) RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    IF mq.drop_queue(queue_name) THEN
        RETURN true;
    END IF;
    RAISE NOTICE 'queue "%" does not exist', queue_name;
    RETURN false;
END
$$;
COMMENT ON FUNCTION pgmq.drop_queue(text) IS
'As pgmq.drop_queue: drops the queue with its messages and archive (mq.drop_queue); false, with a notice, when there is no such queue. Errors: 22004 NULL, 2BP01 the queue is another queue''s dead-letter queue, 42501 no admin right.';

CREATE FUNCTION pgmq.drop_queue(queue_name text, partitioned boolean) RETURNS boolean
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
BEGIN
    RAISE WARNING 'drop_queue(queue_name, partitioned) is deprecated in pgmq'
        USING HINT = 'Use drop_queue(queue_name).';
    RETURN pgmq.drop_queue(queue_name);
END
$$;
COMMENT ON FUNCTION pgmq.drop_queue(text, boolean) IS 'As pgmq''s deprecated drop_queue(queue_name, partitioned): warns, then pgmq.drop_queue(queue_name).';

CREATE FUNCTION pgmq.purge_queue(queue_name text) RETURNS bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT mq.purge(queue_name) $$;
COMMENT ON FUNCTION pgmq.purge_queue(text) IS
'As pgmq.purge_queue: deletes every message and returns how many (mq.purge; the archive is kept). Errors: 22004 NULL, 42704 no such queue, 42501 no admin right.';

CREATE FUNCTION pgmq.list_queues() RETURNS SETOF pgmq.queue_record
LANGUAGE sql STABLE PARALLEL SAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT m.queue_name, m.is_partitioned, m.is_unlogged, m.created_at FROM pgmq.meta m ORDER BY m.created_at, m.queue_name $$;
COMMENT ON FUNCTION pgmq.list_queues() IS 'As pgmq.list_queues: the queues the caller has a right on, oldest first (is_unlogged is always false)';

-- ---------------------------------------------------------------------------
-- Sending.  pgmq's delay is whole seconds or a time to become visible at;
-- both end as mq's delay interval (0 to 365 days).

CREATE FUNCTION pgmq.send(queue_name text, msg jsonb, headers jsonb, delay timestamptz) RETURNS SETOF bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT mq.send(queue_name, coalesce(msg, 'null'::jsonb), headers => headers, delay => pgmq._until(delay)) $$;
COMMENT ON FUNCTION pgmq.send(text, jsonb, jsonb, timestamptz) IS
'As pgmq.send: sends one message (mq.send) that becomes readable at delay (a past time: at once); returns its msg_id. A NULL msg is sent as JSON null. Errors: 22004 NULL queue_name or delay, 22023 delay over 365 days, 42704 no such queue, 42501 no send right.';

CREATE FUNCTION pgmq.send(queue_name text, msg jsonb, headers jsonb, delay integer) RETURNS SETOF bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT mq.send(queue_name, coalesce(msg, 'null'::jsonb), headers => headers, delay => pgmq._seconds(delay)) $$;
COMMENT ON FUNCTION pgmq.send(text, jsonb, jsonb, integer) IS
'As pgmq.send: sends one message readable after delay seconds (negative: at once); returns its msg_id. Errors: as pgmq.send(text, jsonb, jsonb, timestamptz).';

CREATE FUNCTION pgmq.send(queue_name text, msg jsonb, delay timestamptz) RETURNS SETOF bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgmq.send(queue_name, msg, NULL::jsonb, delay) $$;
COMMENT ON FUNCTION pgmq.send(text, jsonb, timestamptz) IS 'As pgmq.send without headers, readable at delay.';

CREATE FUNCTION pgmq.send(queue_name text, msg jsonb, delay integer) RETURNS SETOF bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgmq.send(queue_name, msg, NULL::jsonb, delay) $$;
COMMENT ON FUNCTION pgmq.send(text, jsonb, integer) IS 'As pgmq.send without headers, readable after delay seconds.';

CREATE FUNCTION pgmq.send(queue_name text, msg jsonb, headers jsonb) RETURNS SETOF bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgmq.send(queue_name, msg, headers, 0) $$;
COMMENT ON FUNCTION pgmq.send(text, jsonb, jsonb) IS 'As pgmq.send with headers, readable at once.';

CREATE FUNCTION pgmq.send(queue_name text, msg jsonb) RETURNS SETOF bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgmq.send(queue_name, msg, NULL::jsonb, 0) $$;
COMMENT ON FUNCTION pgmq.send(text, jsonb) IS 'As pgmq.send: one message, readable at once; returns its msg_id.';

CREATE FUNCTION pgmq.send_batch(queue_name text, msgs jsonb[], headers jsonb[], delay timestamptz) RETURNS SETOF bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT mq.send_batch(queue_name, pg_catalog.array_replace(msgs, NULL, 'null'::jsonb),
                         headers => headers, delay => pgmq._until(delay))
$$;
COMMENT ON FUNCTION pgmq.send_batch(text, jsonb[], jsonb[], timestamptz) IS
'As pgmq.send_batch: sends the messages in one statement (mq.send_batch), readable at delay; returns their msg_ids in array order. headers, when not NULL, needs one element per message. NULL messages are sent as JSON null. Errors: 22004 NULL queue_name, msgs or delay; 22023 headers of another length, more than 100000 messages, delay over 365 days; 42704 no such queue; 42501 no send right.';

CREATE FUNCTION pgmq.send_batch(queue_name text, msgs jsonb[], headers jsonb[], delay integer) RETURNS SETOF bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT mq.send_batch(queue_name, pg_catalog.array_replace(msgs, NULL, 'null'::jsonb),
                         headers => headers, delay => pgmq._seconds(delay))
$$;
COMMENT ON FUNCTION pgmq.send_batch(text, jsonb[], jsonb[], integer) IS
'As pgmq.send_batch, readable after delay seconds (negative: at once). Errors: as pgmq.send_batch(text, jsonb[], jsonb[], timestamptz).';

CREATE FUNCTION pgmq.send_batch(queue_name text, msgs jsonb[], delay timestamptz) RETURNS SETOF bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgmq.send_batch(queue_name, msgs, NULL::jsonb[], delay) $$;
COMMENT ON FUNCTION pgmq.send_batch(text, jsonb[], timestamptz) IS 'As pgmq.send_batch without headers, readable at delay.';

CREATE FUNCTION pgmq.send_batch(queue_name text, msgs jsonb[], delay integer) RETURNS SETOF bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgmq.send_batch(queue_name, msgs, NULL::jsonb[], delay) $$;
COMMENT ON FUNCTION pgmq.send_batch(text, jsonb[], integer) IS 'As pgmq.send_batch without headers, readable after delay seconds.';

CREATE FUNCTION pgmq.send_batch(queue_name text, msgs jsonb[], headers jsonb[]) RETURNS SETOF bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgmq.send_batch(queue_name, msgs, headers, 0) $$;
COMMENT ON FUNCTION pgmq.send_batch(text, jsonb[], jsonb[]) IS 'As pgmq.send_batch with headers, readable at once.';

CREATE FUNCTION pgmq.send_batch(queue_name text, msgs jsonb[]) RETURNS SETOF bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT pgmq.send_batch(queue_name, msgs, NULL::jsonb[], 0) $$;
COMMENT ON FUNCTION pgmq.send_batch(text, jsonb[]) IS 'As pgmq.send_batch: the messages readable at once; returns their msg_ids.';

-- ---------------------------------------------------------------------------
-- Reading.  pgmq's vt is whole seconds (mq: 0 to 12 hours).

CREATE FUNCTION pgmq.read(queue_name text, vt integer, qty integer, conditional jsonb DEFAULT '{}')
RETURNS SETOF pgmq.message_record
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM pgmq._read(queue_name, pgmq._seconds(vt), qty, interval '0', conditional) $$;
COMMENT ON FUNCTION pgmq.read(text, integer, integer, jsonb) IS
'As pgmq.read: claims up to qty readable messages, oldest msg_id first, invisible to other readers for vt seconds (negative: 0) (mq.read); read_ct counts deliveries. qty 0 reads nothing. Errors: 22004 NULL queue_name, vt or qty; 22023 qty outside 0..10000, vt over 12 hours; 0A000 a conditional other than {}; 42704 no such queue; 42809 a partitioned mq queue; 42501 no consume right.';

CREATE FUNCTION pgmq.read_with_poll(queue_name text, vt integer, qty integer, max_poll_seconds integer DEFAULT 5,
                                    poll_interval_ms integer DEFAULT 100, conditional jsonb DEFAULT '{}')
RETURNS SETOF pgmq.message_record
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT * FROM pgmq._read(queue_name, pgmq._seconds(vt), qty, pgmq._seconds(max_poll_seconds), conditional) $$;
COMMENT ON FUNCTION pgmq.read_with_poll(text, integer, integer, integer, integer, jsonb) IS
'As pgmq.read_with_poll: pgmq.read that waits up to max_poll_seconds for a message (mq.read''s long poll, woken by a sender''s commit, so poll_interval_ms is not used). Errors: as pgmq.read; 22023 max_poll_seconds over 900; 57014 cancelled.';

CREATE FUNCTION pgmq.pop(queue_name text, qty integer DEFAULT 1) RETURNS SETOF pgmq.message_record
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_msg mq.message;
BEGIN
    IF qty = 0 THEN
        RETURN;
    END IF;
    -- claim and delete in one transaction: no other reader can take the
    -- message in between, since the claim holds its row lock until commit
    FOR v_msg IN SELECT * FROM mq.read(pop.queue_name, pop.qty, interval '0') LOOP
        PERFORM mq.ack(pop.queue_name, v_msg.msg_id, v_msg.receipt);
        -- pgmq's pop does not count itself as a read
        RETURN NEXT ROW(v_msg.msg_id, v_msg.attempts - 1, v_msg.enqueued_at, v_msg.visible_at,
                        v_msg.payload, v_msg.headers)::pgmq.message_record;
    END LOOP;
END
$$;
COMMENT ON FUNCTION pgmq.pop(text, integer) IS
'As pgmq.pop: reads and deletes up to qty (default 1) messages at once (mq.read then mq.ack in one transaction). Errors: as pgmq.read.';

CREATE FUNCTION pgmq.set_vt(queue_name text, msg_id bigint, vt integer) RETURNS SETOF pgmq.message_record
LANGUAGE plpgsql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
DECLARE
    v_vt timestamptz := mq.extend(set_vt.queue_name, set_vt.msg_id, pgmq._seconds(set_vt.vt));
BEGIN
    -- mq.extend returns only the new visibility: the other columns are
    -- not known here (docs/pgmq.md)
    IF v_vt IS NOT NULL THEN
        RETURN NEXT ROW(set_vt.msg_id, NULL, NULL, v_vt, NULL, NULL)::pgmq.message_record;
    END IF;
END
$$;
COMMENT ON FUNCTION pgmq.set_vt(text, bigint, integer) IS
'As pgmq.set_vt for a message that was read: it becomes readable again vt seconds from now (mq.extend; 0: at once). Returns the message with msg_id and vt (read_ct, enqueued_at, message and headers are NULL), or no row when the message does not exist or is not claimed (never read, or already released). Errors: 22004 NULL; 22023 vt over 12 hours; 42704 no such queue; 42809 a partitioned mq queue; 42501 no consume right.';

-- ---------------------------------------------------------------------------
-- Acknowledging.

CREATE FUNCTION pgmq.delete(queue_name text, msg_id bigint) RETURNS boolean
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT mq.ack(queue_name, msg_id) $$;
COMMENT ON FUNCTION pgmq.delete(text, bigint) IS
'As pgmq.delete: deletes a message whatever its state (mq.ack without receipt); false when there is none. Errors: 22004 NULL, 42704 no such queue, 42809 a partitioned mq queue, 42501 no consume right.';

CREATE FUNCTION pgmq.delete(queue_name text, msg_ids bigint[]) RETURNS SETOF bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT i.id FROM pg_catalog.unnest(msg_ids) AS i(id)
     WHERE CASE WHEN i.id IS NULL THEN false ELSE mq.ack(queue_name, i.id) END
$$;
COMMENT ON FUNCTION pgmq.delete(text, bigint[]) IS
'As pgmq.delete for many messages: returns the msg_ids that existed and were deleted, in array order; unknown ids and NULLs are skipped. Errors: as pgmq.delete(text, bigint).';

CREATE FUNCTION pgmq.archive(queue_name text, msg_id bigint) RETURNS boolean
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT mq.archive(queue_name, msg_id) $$;
COMMENT ON FUNCTION pgmq.archive(text, bigint) IS
'As pgmq.archive: moves a message to the queue''s archive (mq.archive); false when there is none. Errors: as pgmq.delete.';

CREATE FUNCTION pgmq.archive(queue_name text, msg_ids bigint[]) RETURNS SETOF bigint
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT i.id FROM pg_catalog.unnest(msg_ids) AS i(id)
     WHERE CASE WHEN i.id IS NULL THEN false ELSE mq.archive(queue_name, i.id) END
$$;
COMMENT ON FUNCTION pgmq.archive(text, bigint[]) IS
'As pgmq.archive for many messages: returns the msg_ids that existed and were archived, in array order. Errors: as pgmq.delete.';

-- ---------------------------------------------------------------------------
-- Metrics.

CREATE FUNCTION pgmq.metrics(queue_name text) RETURNS pgmq.metrics_result
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$
    SELECT m.queue_name, l.queue_length,
           NULL::integer,
           CASE WHEN l.queue_length > 0 THEN pg_catalog.round(m.oldest_age_s)::integer END,
           m.total_sent, pg_catalog.now(), m.depth
      FROM mq.metrics(queue_name) AS m,
           LATERAL (SELECT m.depth + m.in_flight + m.delayed + m.blocked AS queue_length) AS l
$$;
COMMENT ON FUNCTION pgmq.metrics(text) IS
'As pgmq.metrics, from mq.metrics: queue_length = every message not yet deleted or archived (visible, in flight, delayed, blocked), queue_visible_length = readable now, oldest_msg_age_sec = age of the oldest readable message (NULL when the queue is empty), newest_msg_age_sec = NULL (not kept), total_messages = msg_ids issued. Errors: 22004 NULL, 42704 no such queue, 42501 neither a consume right nor mq_monitor.';

CREATE FUNCTION pgmq.metrics_all() RETURNS SETOF pgmq.metrics_result
LANGUAGE sql VOLATILE PARALLEL UNSAFE SET search_path = pg_catalog, pg_temp
AS $$ SELECT r.* FROM pgmq.list_queues() AS q, LATERAL pgmq.metrics(q.queue_name::text) AS r $$;
COMMENT ON FUNCTION pgmq.metrics_all() IS
'As pgmq.metrics_all: pgmq.metrics of every queue in pgmq.list_queues. Errors: 42501 when the caller may see a queue but not monitor it (a producer''s queue: mq.metrics needs a consume right or mq_monitor).';
