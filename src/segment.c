/*-------------------------------------------------------------------------
 *
 * segment.c
 *	  The segment tables of a queue (docs/concepts.md#storage): loading
 *	  their state from mq.segment, finding the segment of a msg_id, and
 *	  the maintenance that empties whole segments with TRUNCATE and reuses
 *	  them, so that messages leave no dead tuples however long a snapshot
 *	  is held elsewhere in the database.
 *
 * A work queue has MQ_WORK_SEGMENTS tables.  One is current: sends go
 * there, and it records the first msg_id it was given (lo), so that the
 * segment of an id is the one with the highest lo at or below it.  A send
 * whose cache is a little stale may still put a higher id in the previous
 * segment; lookups by id then try the other segments (storage.c), and the
 * previous segment stays open to readers until no running sender can
 * write to it (offsets.c tells), when state.c closes it at its highest id.
 * Maintenance seals the current segment when it has taken
 * MQ_SEGMENT_ROTATE_IDS ids or is MQ_SEGMENT_ROTATE_MS old and not empty,
 * and makes a free one current.  A sealed segment whose messages are all
 * gone is emptied with TRUNCATE and becomes free (its epoch counts the
 * reuses, so that hints of its past life are recognised).  When no
 * segment is free, the oldest sealed one's remaining messages, if only a
 * few (slow claims, keyed messages waiting for their key), move to the
 * delayed table, where reads find them by time, and it is emptied;
 * otherwise the current segment goes on taking ids.
 *
 * A partitioned queue has MQ_LOG_SEGMENTS tables used in turn: every
 * retention / 2 the oldest is emptied, provided it holds nothing younger
 * than the retention, and becomes current.
 *
 * Maintenance never waits for a table lock: it takes the ACCESS EXCLUSIVE
 * lock that TRUNCATE needs only if nobody is using the segment (a running
 * send or read holds a lock on it), and otherwise tries again next pass.
 * Before a partitioned queue's segment is emptied, each partition's visible
 * end is recorded as its high-water mark (mq.p_<id>_head): offsets never
 * go below it, wherever the partition is stored later.
 * The state lives in mq.segment so that it is transactional and survives
 * restarts; changing it sends an invalidation on which every backend
 * reloads it (queue.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "catalog/namespace.h"
#include "executor/spi.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "offsets.h"
#include "partition.h"
#include "segment.h"
#include "shmem.h"
#include "state.h"

/* when maintenance seals the current segment of a work queue */
#define MQ_SEGMENT_ROTATE_IDS 65536
/*
 * The most messages a relocation moves to the delayed table.  More means
 * a backlog, not stragglers: moved, it would be read by time through the
 * delayed table (and counted there by mq.metrics on every call) instead
 * of by tickets; the current segment takes more ids until the oldest one
 * drains.
 */
#define MQ_RELOCATE_MAX 4096
#define MQ_SEGMENT_ROTATE_MS 10000

static const char *const state_names[] = {"free", "current", "sealed"};

static MqSegmentState
state_of(const char *s)
{
	for (int i = 0; i < lengthof(state_names); i++)
		if (strcmp(s, state_names[i]) == 0)
			return (MqSegmentState) i;
	elog(ERROR, "unknown segment state \"%s\"", s);
	return MQ_SEG_FREE;			/* keep compiler quiet */
}

/*
 * The name of a work queue's table: segment 0 to MQ_WORK_SEGMENTS - 1, or
 * MQ_DELAYED_SEGMENT for the delayed table.
 */
const char *
MqWorkTable(int64 queue_id, int table)
{
	if (table == MQ_DELAYED_SEGMENT)
		return psprintf("q_" INT64_FORMAT "_d", queue_id);
	return psprintf("q_" INT64_FORMAT "_%d", queue_id, table);
}

/* The name of segment's table (the delayed table for MQ_DELAYED_SEGMENT). */
const char *
MqSegmentTable(MqQueue *q, int segment)
{
	if (q->partitions > 0)
		return psprintf("p_" INT64_FORMAT "_%d", q->queue_id, segment);
	return MqWorkTable(q->queue_id, segment);
}

/*
 * Read the queue's segments from mq.segment; connected to SPI as owner.
 * With the latest snapshot, as the catalogs are read: the reload follows an
 * invalidation, and what it reads is kept after this transaction, so it
 * must be what committed, not what an older transaction snapshot
 * (REPEATABLE READ, SERIALIZABLE) shows.  With that snapshot a send went on
 * to a segment that had been emptied since and was free, where no read
 * looks.
 */
void
MqSegmentsLoad(MqQueue *q)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(q->queue_id)};
	int			ret;

	PushActiveSnapshot(GetLatestSnapshot());
	ret = SPI_execute_with_args("SELECT segment, state, epoch, lo, since FROM mq.segment"
								" WHERE queue_id OPERATOR(pg_catalog.=) $1",
								1, argtypes, values, NULL, true, 0);
	PopActiveSnapshot();
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read mq.segment");
	q->nsegments = q->partitions > 0 ? MQ_LOG_SEGMENTS : MQ_WORK_SEGMENTS;
	if (SPI_processed != (uint64) q->nsegments)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("queue \"%s\" does not exist", q->name),
				 errdetail("It was dropped while this statement ran.")));
	q->current = 0;
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		int			n = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		MqSegment  *s;

		if (n < 0 || n >= q->nsegments)
			elog(ERROR, "segment %d of queue \"%s\" is out of range", n, q->name);
		s = &q->segments[n];
		s->state = state_of(SPI_getvalue(tup, desc, 2));
		s->epoch = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
		s->lo = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
		s->since = DatumGetTimestampTz(SPI_getbinval(tup, desc, 5, &isnull));
		if (s->state == MQ_SEG_CURRENT)
			q->current = n;
	}
	for (int i = 0; i < q->nsegments; i++)
		q->segments[i].relid = MqQueueRelid(q, MqSegmentTable(q, i));
}

/* The segment a msg_id went to, or -1 when none has a lo at or below it. */
int
MqSegmentOf(MqQueue *q, int64 msg_id)
{
	int			best = -1;

	for (int i = 0; i < q->nsegments; i++)
	{
		MqSegment  *s = &q->segments[i];

		if (s->state != MQ_SEG_FREE && s->lo <= msg_id &&
			(best < 0 || s->lo > q->segments[best].lo))
			best = i;
	}
	return best;
}

/* ---- maintenance --------------------------------------------------------- */

static void
run(const char *sql, int nargs, Oid *argtypes, Datum *values, int expected)
{
	SPIPlanPtr	plan = SPI_prepare(sql, nargs, argtypes);
	int			ret;

	if (plan == NULL)
		elog(ERROR, "segment maintenance failed: %s: %s", SPI_result_code_string(SPI_result), sql);

	/*
	 * With the latest snapshot, taken after the caller locked the segment:
	 * a transaction snapshot (maintenance called in a REPEATABLE READ or
	 * SERIALIZABLE transaction) missed messages that committed after it
	 * was taken, and a segment that looked empty was emptied with them
	 * (maintain_snapshot.spec).
	 */
	ret = SPI_execute_snapshot(plan, values, NULL, GetLatestSnapshot(), InvalidSnapshot,
							   false, true, 0);
	SPI_freeplan(plan);
	if (ret != expected)
		elog(ERROR, "segment maintenance failed: %s: %s", SPI_result_code_string(ret), sql);
}

static void
set_state(MqQueue *q, int segment, MqSegmentState state, bool reused, int64 lo)
{
	Oid			argtypes[4] = {INT8OID, INT4OID, TEXTOID, INT8OID};
	Datum		values[4] = {Int64GetDatum(q->queue_id), Int32GetDatum(segment),
		CStringGetTextDatum(state_names[state]), Int64GetDatum(lo)};

	run(reused ?
		"UPDATE mq.segment SET state = $3, epoch = epoch OPERATOR(pg_catalog.+) 1,"
		" since = pg_catalog.clock_timestamp()"
		" WHERE queue_id OPERATOR(pg_catalog.=) $1 AND segment OPERATOR(pg_catalog.=) $2" :
		"UPDATE mq.segment SET state = $3, lo = CASE WHEN $4 OPERATOR(pg_catalog.>) 0 THEN $4 ELSE lo END,"
		" since = pg_catalog.clock_timestamp()"
		" WHERE queue_id OPERATOR(pg_catalog.=) $1 AND segment OPERATOR(pg_catalog.=) $2",
		4, argtypes, values, SPI_OK_UPDATE);
	q->segments[segment].state = state;
	if (reused)
		q->segments[segment].epoch++;
	if (lo > 0)
		q->segments[segment].lo = lo;
}

static void
invalidate_segments(void)
{
	CacheInvalidateRelcacheByRelid(get_relname_relid("segment", get_namespace_oid("mq", false)));
}

/* ACCESS EXCLUSIVE on a segment if nobody uses it; false otherwise. */
static bool
lock_if_idle(MqQueue *q, int segment)
{
	return ConditionalLockRelationOid(q->segments[segment].relid, AccessExclusiveLock);
}

static bool
segment_empty(MqQueue *q, int segment)
{
	run(psprintf("SELECT FROM mq.%s LIMIT 1", MqSegmentTable(q, segment)),
		0, NULL, NULL, SPI_OK_SELECT);
	return SPI_processed == 0;
}

static void
truncate_segment(MqQueue *q, int segment)
{
	run(psprintf("TRUNCATE mq.%s", MqSegmentTable(q, segment)), 0, NULL, NULL, SPI_OK_UTILITY);
	set_state(q, segment, MQ_SEG_FREE, true, 0);
}

/* Empty sealed segments whose messages are gone; returns how many. */
static int
retire_empty(MqQueue *q)
{
	int			retired = 0;

	for (int i = 0; i < q->nsegments; i++)
	{
		if (q->segments[i].state != MQ_SEG_SEALED || !lock_if_idle(q, i))
			continue;
		if (segment_empty(q, i))
		{
			truncate_segment(q, i);
			retired++;
		}
		else
			UnlockRelationOid(q->segments[i].relid, AccessExclusiveLock);
	}
	return retired;
}

/* Ready messages a relocation moved are delayed ones now (metrics). */
static void
count_moved(int64 queue_id)
{
	int64		ready = 0;

	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		HeapTuple	tup = SPI_tuptable->vals[i];

		if (!DatumGetBool(SPI_getbinval(tup, SPI_tuptable->tupdesc, 1, &isnull)) &&
			!DatumGetBool(SPI_getbinval(tup, SPI_tuptable->tupdesc, 2, &isnull)))
			ready++;
	}
	MqStateCount(queue_id, MQ_COUNT_READY, -ready);
	MqStateCount(queue_id, MQ_COUNT_DELAYED, ready);
}

/*
 * Move what is left in the oldest sealed segment to the delayed table and
 * empty it; returns the segment, or -1 when it is in use or holds more than
 * MQ_RELOCATE_MAX messages.  *moved counts the messages.
 */
static int
relocate_oldest(MqQueue *q, int64 *moved)
{
	int			oldest = -1;
	const char *from;

	for (int i = 0; i < q->nsegments; i++)
		if (q->segments[i].state == MQ_SEG_SEALED &&
			(oldest < 0 || q->segments[i].lo < q->segments[oldest].lo))
			oldest = i;
	if (oldest < 0 || !lock_if_idle(q, oldest))
		return -1;
	from = MqSegmentTable(q, oldest);
	/* only a few left: a backlog stays where tickets read it, in order */
	run(psprintf("SELECT FROM mq.%s LIMIT %d", from, MQ_RELOCATE_MAX + 1), 0, NULL, NULL,
		SPI_OK_SELECT);
	if (SPI_processed > MQ_RELOCATE_MAX)
	{
		UnlockRelationOid(q->segments[oldest].relid, AccessExclusiveLock);
		return -1;
	}
	run(psprintf("INSERT INTO mq.q_" INT64_FORMAT "_d SELECT * FROM mq.%s RETURNING claimed, blocked",
				 q->queue_id, from),
		0, NULL, NULL, SPI_OK_INSERT_RETURNING);
	*moved += SPI_processed;
	count_moved(q->queue_id);
	truncate_segment(q, oldest);
	/* the moved messages are found by time; some may be due now */
	MqStateNoteDue(q->queue_id, 0);
	return oldest;
}

/* Seal the current segment of a work queue if it is due; returns moved. */
static int64
rotate_work(MqQueue *q, bool *changed)
{
	MqSegment  *cur = &q->segments[q->current];
	int64		end;
	int			next = -1;
	int64		moved = 0;
	TimestampTz now = GetCurrentTimestamp();

	end = MqSequenceEnd(q->msg_seq);
	if (end - cur->lo < MQ_SEGMENT_ROTATE_IDS &&
		(end <= cur->lo || !TimestampDifferenceExceeds(cur->since, now, MQ_SEGMENT_ROTATE_MS)))
		return 0;
	for (int i = 0; i < q->nsegments; i++)
		if (q->segments[i].state == MQ_SEG_FREE)
			next = i;
	if (next < 0)
		next = relocate_oldest(q, &moved);
	if (next < 0)
		return moved;
	set_state(q, q->current, MQ_SEG_SEALED, false, 0);
	set_state(q, next, MQ_SEG_CURRENT, false, end);
	q->current = next;
	*changed = true;
	return moved;
}

/* Close sealed segments that no running sender can write to any more. */
static void
close_sealed(MqQueue *q)
{
	for (int i = 0; i < q->nsegments; i++)
	{
		int64		max_id;

		if (q->segments[i].state != MQ_SEG_SEALED ||
			MqStateSegmentClosed(q, i, &max_id) || MqHeldSegment(q->queue_id, i))
			continue;
		run(psprintf("SELECT pg_catalog.max(msg_id) FROM mq.%s", MqSegmentTable(q, i)),
			0, NULL, NULL, SPI_OK_SELECT);
		{
			bool		isnull;
			Datum		d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);

			max_id = isnull ? q->segments[i].lo - 1 : DatumGetInt64(d);
		}
		MqStateCloseSegment(q, i, q->segments[i].epoch, max_id);
	}
}

/*
 * Retention of a partitioned queue: every retention / 2, empty the oldest
 * segment if it holds nothing younger than the retention (which also
 * protects a very late commit) and make it current.  Returns the messages
 * removed.
 */
static int64
rotate_log(MqQueue *q, bool *changed)
{
	MqSegment  *cur = &q->segments[q->current];
	int			oldest = (q->current + 1) % q->nsegments;
	double		half_ms = MqIntervalSeconds(&q->retention) * 500.0;
	TimestampTz now = GetCurrentTimestamp();
	Oid			argtypes[2] = {TIMESTAMPTZOID, INT8OID};
	Datum		values[2];
	bool		isnull;
	int64		count;

	if (!TimestampDifferenceExceeds(cur->since, now, (int) Min(half_ms, INT_MAX)) ||
		!lock_if_idle(q, oldest))
		return 0;
	values[0] = DirectFunctionCall2(timestamptz_mi_interval, TimestampTzGetDatum(now),
									IntervalPGetDatum(&q->retention));
	run(psprintf("SELECT pg_catalog.count(*) FILTER (WHERE enqueued_at OPERATOR(pg_catalog.>=) $1),"
				 " pg_catalog.count(*) FROM mq.%s", MqSegmentTable(q, oldest)),
		1, argtypes, values, SPI_OK_SELECT);
	if (DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull)) > 0)
	{
		UnlockRelationOid(q->segments[oldest].relid, AccessExclusiveLock);
		return 0;
	}
	count = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &isnull));
	for (int p = 0; p < q->partitions; p++)
	{
		argtypes[0] = INT4OID;
		values[0] = Int32GetDatum(p);
		values[1] = Int64GetDatum(MqPartitionEnd(q, p, true) - 1);
		run(psprintf("UPDATE mq.p_" INT64_FORMAT "_head SET hwm = $2"
					 " WHERE partition OPERATOR(pg_catalog.=) $1 AND hwm OPERATOR(pg_catalog.<) $2",
					 q->queue_id),
			2, argtypes, values, SPI_OK_UPDATE);
	}
	run(psprintf("TRUNCATE mq.%s", MqSegmentTable(q, oldest)), 0, NULL, NULL, SPI_OK_UTILITY);
	set_state(q, q->current, MQ_SEG_SEALED, false, 0);
	set_state(q, oldest, MQ_SEG_CURRENT, true, 0);
	q->current = oldest;
	*changed = true;
	return count;
}

/*
 * The segment upkeep of one queue; connected to SPI as owner.  Returns how
 * many messages it removed (retention) or moved (relocation).
 */
int64
MqSegmentMaintain(MqQueue *q)
{
	bool		changed = false;
	int64		n;

	if (q->partitions > 0)
		n = rotate_log(q, &changed);
	else
	{
		if (MqPreloaded())
			close_sealed(q);
		changed = retire_empty(q) > 0;
		n = rotate_work(q, &changed);
	}
	if (changed)
		invalidate_segments();
	return n;
}
