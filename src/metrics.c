/*-------------------------------------------------------------------------
 *
 * metrics.c
 *	  mq.metrics: how many messages a queue holds, by state, without
 *	  counting them.
 *
 * A dashboard polls metrics every few seconds on queues of millions, so
 * metrics must not scan a queue.  For a work queue, with mq preloaded, the
 * queue's shared entry (state.c) keeps counts by state that every send,
 * claim, ack, nack, dead-lettering, release and relocation adjusts when its
 * transaction commits; metrics adds what only time changes with index
 * probes that touch the due part of the delayed table, and the first
 * ready message of each segment.  An entry that has no counts yet (after a
 * restart, a purge, or when the queue first gets an entry) is counted once
 * by a scan.  Without preloading every call scans.
 *
 * The counts are approximate, as SQS's ApproximateNumberOfMessages* are:
 * they count what has committed; a scan that runs while other transactions
 * commit may count some of their changes twice or not at all; prepared
 * transactions are not counted; and a claim whose visibility timeout
 * lapsed stays in_flight until its message is read again, acked, nacked,
 * released or dead-lettered.  They are never negative.
 *
 * A partitioned queue's depth is the span of offsets it retains (rolled-
 * back sends, which leave gaps, included), read from the first retained
 * offset of each partition and its offset sequence.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/snapmgr.h"

#include "offsets.h"
#include "partition.h"
#include "queue.h"
#include "segment.h"
#include "state.h"

PG_FUNCTION_INFO_V1(mq_metrics);
PG_FUNCTION_INFO_V1(mq_metrics_all);

/* the plans of metrics, per queue (queue.h) */
enum
{
	MPLAN_COUNT_ALL = MQ_METRICS_PLAN_BASE,
	MPLAN_DUE,
	MPLAN_DEAD_LETTERED,
	MPLAN_LOG_FIRST,
	MPLAN_OLDEST,				/* one per segment */
	MPLAN_END = MPLAN_OLDEST + MQ_WORK_SEGMENTS
};

StaticAssertDecl(MPLAN_END <= MQ_PARTITION_PLAN_BASE, "too many metrics plans");

/* the columns of mq.metrics */
typedef struct Metrics
{
	int64		depth;
	int64		in_flight;
	int64		delayed;
	int64		dead_lettered;
	TimestampTz oldest;			/* enqueued_at of the oldest visible, 0: none */
	int64		total_sent;
	int64		total_acked;
	int64		blocked;
} Metrics;

#define NOW "pg_catalog.clock_timestamp()"
#define READY "NOT claimed AND NOT blocked AND vt " OP("<=") " " NOW

/* Run a read-only plan with a snapshot; the latest, as reads of messages do. */
static void
select_with(MqQueue *q, SPIPlanPtr plan, Datum *values, Snapshot snap)
{
	int			ret = SPI_execute_snapshot(plan, values, NULL, snap,
										   InvalidSnapshot, true, false, 0);

	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not compute the metrics of queue \"%s\": %s",
			 q->name, SPI_result_code_string(ret));
}

static void
select_latest(MqQueue *q, SPIPlanPtr plan, Datum *values)
{
	select_with(q, plan, values, MqQueueLatestSnapshot(plan));
}

static Datum
col(int c, bool *isnull)
{
	return SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, c, isnull);
}

static int64
int8_col(int c)
{
	bool		isnull;
	Datum		d = col(c, &isnull);

	return isnull ? 0 : DatumGetInt64(d);
}

/* The earlier of two enqueued_at, 0 meaning none. */
static TimestampTz
earlier(TimestampTz a, TimestampTz b)
{
	return a == 0 ? b : b == 0 ? a : Min(a, b);
}

/* Count every message of a work queue by state, as snap sees them. */
static SPIPlanPtr
count_all_plan(MqQueue *q)
{
	SPIPlanPtr	plan = q->plans[MPLAN_COUNT_ALL];

	if (plan == NULL)
	{
		StringInfoData sql;

		initStringInfo(&sql);
		appendStringInfoString(&sql,
							   "SELECT count(*) FILTER (WHERE NOT claimed AND NOT blocked AND NOT d),"
							   " count(*) FILTER (WHERE claimed),"
							   " count(*) FILTER (WHERE NOT claimed AND NOT blocked AND d),"
							   " count(*) FILTER (WHERE blocked) FROM (");
		for (int t = 0; t <= MQ_DELAYED_SEGMENT; t++)
			appendStringInfo(&sql, "%sSELECT %s AS d, claimed, blocked FROM mq.%s",
							 t > 0 ? " UNION ALL " : "",
							 t == MQ_DELAYED_SEGMENT ? "true" : "false",
							 MqWorkTable(q->queue_id, t));
		appendStringInfoString(&sql, ") m");
		plan = MqQueuePlan(q, MPLAN_COUNT_ALL, sql.data, 0, NULL);
	}
	return plan;
}

static void
count_all(MqQueue *q, SPIPlanPtr plan, Snapshot snap, int64 *counts)
{
	select_with(q, plan, NULL, snap);
	counts[MQ_COUNT_READY] = int8_col(1);
	counts[MQ_COUNT_IN_FLIGHT] = int8_col(2);
	counts[MQ_COUNT_DELAYED] = int8_col(3);
	counts[MQ_COUNT_BLOCKED] = int8_col(4);
}

/*
 * The one scan: counts made when the queue has none, kept as the counts
 * the queue's changes are added to, unless the count sees changes of this
 * transaction, which are added when it commits.
 */
static void
count_once(MqQueue *q, int64 *counts)
{
	SPIPlanPtr	plan = count_all_plan(q);
	Snapshot	snap;
	uint64		count_id = 0;

	/* its locks before its snapshot (MqQueueLockPlan) */
	MqQueueLockPlan(plan);
	if (GetCurrentTransactionIdIfAny() == InvalidTransactionId)
		count_id = MqStateCountBegin(q, &snap);
	else
		snap = RegisterSnapshot(GetLatestSnapshot());
	count_all(q, plan, snap, counts);
	UnregisterSnapshot(snap);
	if (count_id != 0)
		MqStateCountEnd(q, count_id, counts);
}

/* Delayed-table messages due now: they are ready, not delayed. */
static int64
count_due(MqQueue *q, TimestampTz *oldest)
{
	SPIPlanPtr	plan = q->plans[MPLAN_DUE];
	bool		isnull;
	Datum		at;

	if (plan == NULL)
		plan = MqQueuePlan(q, MPLAN_DUE,
						   psprintf("SELECT count(*), min(enqueued_at) FROM mq.%s WHERE " READY,
									MqWorkTable(q->queue_id, MQ_DELAYED_SEGMENT)),
						   0, NULL);
	select_latest(q, plan, NULL);
	at = col(2, &isnull);
	*oldest = isnull ? 0 : DatumGetTimestampTz(at);
	return int8_col(1);
}

/*
 * enqueued_at of the oldest ready message of a segment, 0 when none.  Its
 * ready messages are the ones from the segment's ticket on, and those on
 * the ring: each range is probed for its first ready message.
 */
static TimestampTz
oldest_in_segment(MqQueue *q, int segment, const MqRingEntry *ring, int nring)
{
	Oid			argtypes[2] = {INT8ARRAYOID, INT8ARRAYOID};
	SPIPlanPtr	plan = q->plans[MPLAN_OLDEST + segment];
	Datum	   *from = palloc(sizeof(Datum) * (nring + 1));
	Datum	   *to = palloc(sizeof(Datum) * (nring + 1));
	Datum		values[2];
	int			n = 0;
	bool		isnull;
	Datum		at;

	from[n] = Int64GetDatum(MqStateTicket(q, segment));
	to[n++] = Int64GetDatum(PG_INT64_MAX);
	for (int i = 0; i < nring; i++)
		if (ring[i].segment == segment)
		{
			from[n] = Int64GetDatum(ring[i].from);
			to[n++] = Int64GetDatum(ring[i].to);
		}
	if (plan == NULL)
		plan = MqQueuePlan(q, MPLAN_OLDEST + segment,
						   psprintf("SELECT min(m.enqueued_at) FROM"
									" ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2)) r(lo, hi), LATERAL"
									" (SELECT enqueued_at FROM mq.%s WHERE msg_id " OP(">=") " r.lo"
									" AND msg_id " OP("<") " r.hi AND " READY
									" ORDER BY msg_id LIMIT 1) m",
									MqSegmentTable(q, segment)),
						   2, argtypes);
	values[0] = PointerGetDatum(construct_array(from, n, INT8OID, 8, true, TYPALIGN_DOUBLE));
	values[1] = PointerGetDatum(construct_array(to, n, INT8OID, 8, true, TYPALIGN_DOUBLE));
	select_latest(q, plan, values);
	at = col(1, &isnull);
	return isnull ? 0 : DatumGetTimestampTz(at);
}

/* enqueued_at of the oldest ready message in the segments, 0 when none. */
static TimestampTz
oldest_ready(MqQueue *q)
{
	MqRingEntry ring[MQ_RING];
	int			nring = MqStatePeekRing(q, ring, MQ_RING);
	TimestampTz oldest = 0;

	for (int s = 0; s < q->nsegments; s++)
		if (q->segments[s].state != MQ_SEG_FREE)
			oldest = earlier(oldest, oldest_in_segment(q, s, ring, nring));
	return oldest;
}

static void
work_metrics(MqQueue *q, Metrics *m)
{
	int64		counts[MQ_COUNTS];
	TimestampTz due_oldest;
	int64		due;

	if (!MqStateAttach(q) || !MqStateCounters(q, counts))
		count_once(q, counts);
	due = Min(count_due(q, &due_oldest), counts[MQ_COUNT_DELAYED]);
	m->depth = counts[MQ_COUNT_READY] + due;
	m->in_flight = counts[MQ_COUNT_IN_FLIGHT];
	m->delayed = counts[MQ_COUNT_DELAYED] - due;
	m->blocked = counts[MQ_COUNT_BLOCKED];
	m->oldest = due_oldest;
	if (counts[MQ_COUNT_READY] > 0)
		m->oldest = earlier(m->oldest, oldest_ready(q));
	m->total_sent = MqSequenceEnd(q->msg_seq) - 1;
	m->total_acked = MqSequenceEnd(q->acked_seq) - 1;
}

/*
 * Sums over partitions whose offsets may each be near the top of bigint
 * stay at PG_INT64_MAX instead of overflowing (both terms are >= 0).
 */
static int64
add_capped(int64 a, int64 b)
{
	return a > PG_INT64_MAX - b ? PG_INT64_MAX : a + b;
}

/* Depth, age and offsets of a partitioned queue, partition by partition. */
static void
log_metrics(MqQueue *q, Metrics *m)
{
	Oid			argtypes[1] = {INT4OID};
	SPIPlanPtr	plan = q->plans[MPLAN_LOG_FIRST];

	/*
	 * the first retained message of a partition (the oldest one too): a
	 * plain statement on the parent, which Citus routes to the partition's
	 * worker (it cannot plan an aggregate over it generically)
	 */
	if (plan == NULL)
		plan = MqQueuePlan(q, MPLAN_LOG_FIRST,
						   psprintf("SELECT \"offset\", enqueued_at FROM mq.p_" INT64_FORMAT " WHERE partition " OP("=") " $1"
									" ORDER BY \"offset\" LIMIT 1", q->queue_id),
						   1, argtypes);
	for (int p = 0; p < q->partitions; p++)
	{
		Datum		arg = Int32GetDatum(p);
		int64		end = MqPartitionEnd(q, p, false);
		bool		isnull;
		Datum		first;

		/* no row when the partition retains nothing */
		if (SPI_execute_snapshot(plan, &arg, NULL, MqQueueLatestSnapshot(plan), InvalidSnapshot,
								 true, false, 1) != SPI_OK_SELECT)
			elog(ERROR, "could not compute the metrics of queue \"%s\"", q->name);
		if (SPI_processed == 1)
		{
			first = col(1, &isnull);
			m->depth = add_capped(m->depth, end - DatumGetInt64(first));
			m->oldest = earlier(m->oldest, DatumGetTimestampTz(col(2, &isnull)));
		}
		m->total_sent = add_capped(m->total_sent, end - 1);
	}
}

static int64
dead_lettered(MqQueue *q)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		arg = Int64GetDatum(q->queue_id);
	SPIPlanPtr	plan = q->plans[MPLAN_DEAD_LETTERED];

	if (plan == NULL)
		plan = MqQueuePlan(q, MPLAN_DEAD_LETTERED,
						   "SELECT q.dead_lettered " OP("+") " COALESCE((SELECT pg_catalog.sum(t.dead_lettered)"
						   " FROM mq.dead_letter_tally t WHERE t.queue_id " OP("=") " $1)::pg_catalog.int8, 0)"
						   " FROM mq.queue q WHERE q.queue_id " OP("=") " $1",
						   1, argtypes);
	select_latest(q, plan, &arg);
	return int8_col(1);
}

/* Every column of a queue's metrics; connected to SPI as owner. */
static void
queue_metrics(MqQueue *q, Metrics *m)
{
	if (q->partitions > 0)
		log_metrics(q, m);
	else
	{
		work_metrics(q, m);
		m->dead_lettered = dead_lettered(q);
	}
}

/* One row of mq.metrics or mq.metrics_all. */
static void
put_row(ReturnSetInfo *rsinfo, Datum queue_name, const Metrics *m)
{
	TimestampTz now = GetCurrentTimestamp();
	Datum		values[9];
	bool		nulls[9] = {false};

	values[0] = queue_name;
	values[1] = Int64GetDatum(m->depth);
	values[2] = Int64GetDatum(m->in_flight);
	values[3] = Int64GetDatum(m->delayed);
	values[4] = Int64GetDatum(m->dead_lettered);
	values[5] = Float8GetDatum(m->oldest == 0 ? 0.0 :
							   Max(now - m->oldest, 0) / (double) USECS_PER_SEC);
	values[6] = Int64GetDatum(m->total_sent);
	values[7] = Int64GetDatum(m->total_acked);
	values[8] = Int64GetDatum(m->blocked);
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/*
 * mq.metrics(queue_name text)
 *	  RETURNS TABLE (queue_name text, depth bigint, in_flight bigint,
 *					 delayed bigint, dead_lettered bigint,
 *					 oldest_age_s double precision, total_sent bigint,
 *					 total_acked bigint, blocked bigint)
 *
 * One row of approximate counts, as SQS GetQueueAttributes returns
 * ApproximateNumberOfMessages (depth: visible), ...NotVisible (in_flight)
 * and ...Delayed (delayed), and ApproximateAgeOfOldestMessage
 * (oldest_age_s, seconds, 0 when nothing is visible).  dead_lettered counts
 * messages moved to the dead-letter queue or discarded after their last
 * attempt; total_sent and total_acked are the msg_ids issued and the acks
 * and archives made, sequences that also count rolled-back operations;
 * blocked counts keyed messages waiting behind an older one of their key.
 * For a partitioned queue: depth is the offsets retained, oldest_age_s the
 * age of the oldest retained message, total_sent the offsets issued, and
 * the other columns are 0 (consumer group lag is in mq.consumer_groups).
 * Raises 22004 for a NULL name, 42704 when there is no such queue, 42501
 * without the consume right on it.
 */
Datum
mq_metrics(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MqSession	session;
	MqQueue    *q;
	Metrics		m = {0};

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("queue_name must not be NULL")));
	InitMaterializedSRF(fcinfo, 0);
	q = MqQueueOpen(PG_GETARG_TEXT_PP(0), &session, MQ_RIGHT_MONITOR);
	queue_metrics(q, &m);
	MqQueueClose(&session);
	put_row(rsinfo, PG_GETARG_DATUM(0), &m);
	return (Datum) 0;
}

/*
 * mq.metrics_all()
 *	  RETURNS TABLE (the columns of mq.metrics)
 *
 * One row per queue the caller may monitor, in queue name order, each
 * computed exactly as mq.metrics computes it (so a scrape of every queue
 * costs the sum of their mq.metrics calls, and no queue is scanned when mq
 * is preloaded).  Queues the caller may not monitor are left out, not
 * refused: an exporter running as a role with rights on some queues sees
 * those.  A queue dropped between the listing and its turn is left out.
 */
Datum
mq_metrics_all(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MemoryContext outer = CurrentMemoryContext;
	MqSession	session;
	char	  **names;
	uint64		n;

	InitMaterializedSRF(fcinfo, 0);

	/* the names, read as owner; rights are checked per queue as the caller */
	MqOwnerBegin(&session);
	if (SPI_execute("SELECT queue_name FROM mq.queue ORDER BY queue_name COLLATE \"C\"",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not list the queues");
	n = SPI_processed;
	names = MemoryContextAlloc(outer, sizeof(char *) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		char	   *name = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		names[i] = MemoryContextStrdup(outer, name);
	}
	MqOwnerEnd(&session);

	for (uint64 i = 0; i < n; i++)
	{
		MqQueue    *q = MqQueueOpenIfAllowed(names[i], &session, MQ_RIGHT_MONITOR);
		Metrics		m = {0};

		if (q == NULL)
			continue;
		queue_metrics(q, &m);
		MqQueueClose(&session);
		put_row(rsinfo, CStringGetTextDatum(names[i]), &m);
	}
	return (Datum) 0;
}
