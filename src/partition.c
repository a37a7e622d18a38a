/*-------------------------------------------------------------------------
 *
 * partition.c
 *	  Partitioned queues (logs, like Kafka topics): send, and mq.poll for
 *	  the members of consumer groups.
 *
 * A message with a key goes to partition hash(key) mod partitions, always
 * the same one for a key; a message without a key goes to the next
 * partition of a per-session round robin.  Rows go to the current segment
 * mq.p_<id>_<segment> (segment.c), a leaf of the declarative parent
 * mq.p_<id>; their offsets are assigned where the row is stored, by the
 * trigger mq._assign_offset() (offsets.c: the hold, then the next value
 * of the partition's sequence, so that readers never pass it while the
 * sending transaction runs), and come back with RETURNING.  Readers read
 * the parent in one statement, a Merge Append of the leaves' primary keys.
 *
 * mq.poll first settles the member's membership by the consumer group
 * rule (stated once, below, with its constants): in the steady state
 * (heartbeat and leases fresh, fair share held) one read returns its
 * partitions; otherwise mq._group_sync (mq_group_sync, here) heartbeats
 * and rebalances, leaving with the member the partitions it says it is
 * still processing (busy_partitions: a hand-over waits for their commits).
 * It then reads each of the member's partitions from its
 * position up to the partition's visible end, with the latest snapshot
 * (taken after the end was computed, whatever the isolation level).
 * Nothing is written per poll: the position, how far this session has read
 * a partition, is kept by the session (positions), so a session that is
 * new, or whose lease was taken afresh (a new lease epoch), starts again
 * after the committed offset, and an answer that never reached its client
 * cannot make anybody skip it.  A partition with nothing new below its
 * visible end is not queried at all, so an idle long poll touches no
 * segment table and never holds up retention's TRUNCATE.  mq.commit is
 * one kept INSERT into mq.group_offset (insert-only, so that a snapshot
 * held elsewhere leaves no versions for commits and lookups to step over).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/table.h"
#include "access/transam.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "storage/procarray.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"

#include "consumer.h"
#include "notify.h"
#include "offsets.h"
#include "ratelimit.h"
#include "segment.h"
#include "shmem.h"
#include "partition.h"
#include "pooler.h"
#include "wait.h"

PG_FUNCTION_INFO_V1(mq_poll);
PG_FUNCTION_INFO_V1(mq_group_sync);
PG_FUNCTION_INFO_V1(mq_commit);
PG_FUNCTION_INFO_V1(mq_partition_end);
PG_FUNCTION_INFO_V1(mq_require_preload);
PG_FUNCTION_INFO_V1(mq_compact_offsets);

enum
{
	PPLAN_INSERT = MQ_PARTITION_PLAN_BASE,	/* one per segment */
	PPLAN_SYNC = PPLAN_INSERT + MQ_LOG_SEGMENTS,
	PPLAN_COMMITTED,
	PPLAN_FETCH,
	PPLAN_COMMIT,
	PPLAN_GROUP_INIT,
	PPLAN_STEADY,
	PPLAN_LOCAL_END,			/* distributed: the end from the partition's node */
	PPLAN_END
};

StaticAssertDecl(PPLAN_END <= MQ_MAX_PLANS, "too many plans per queue");


#define MAX_POLL 10000

/* The send into segment: the trigger assigns the offset, RETURNING gives it. */
static SPIPlanPtr
insert_plan(MqQueue *q, int segment)
{
	static const Oid argtypes[4] = {INT4OID, TEXTOID, JSONBOID, JSONBOID};

	if (q->plans[PPLAN_INSERT + segment] != NULL)
		return q->plans[PPLAN_INSERT + segment];
	return MqQueuePlan(q, PPLAN_INSERT + segment,
					   psprintf("INSERT INTO mq.%s (segment, partition, key, payload, headers)"
								" VALUES (%d, $1, $2, $3, $4) RETURNING \"offset\"",
								MqSegmentTable(q, segment), segment),
					   4, argtypes);
}

/*
 * The segment sends go to, locked first so that retention cannot empty it
 * meanwhile, and checked again after the lock, which takes in any change
 * of segments that committed before.
 */
static int
send_segment(MqQueue *q)
{
	for (;;)
	{
		uint64		version = q->segments_version;
		int			segment = q->current;

		LockRelationOid(q->segments[segment].relid, RowExclusiveLock);
		MqQueueRefreshSegments(q);
		if (q->segments_version == version && q->current == segment)
			return segment;
	}
}

/* hash(key) mod partitions; keyless: a per-session round robin */
static int32
partition_of(MqQueue *q, const char *key)
{
	static uint32 next_keyless = 0;

	if (key != NULL)
		return hash_bytes((const unsigned char *) key, strlen(key)) % q->partitions;
	if (next_keyless == 0)
		next_keyless = (uint32) MyProcPid;
	return next_keyless++ % q->partitions;
}

/*
 * A partition's offsets end at PG_INT64_MAX - 1: the visible end, one past
 * the last offset, must be a bigint too, so that every offset handed out
 * can be read and committed, and nothing computes last + 1 past the range.
 */
#define MQ_LAST_OFFSET (PG_INT64_MAX - 1)

static void
partition_exhausted(MqQueue *q, int32 partition)
{
	ereport(ERROR,
			(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
			 errmsg("partition %d of queue \"%s\" has run out of offsets", partition, q->name),
			 errdetail("The last offset of a partition is " INT64_FORMAT ".", MQ_LAST_OFFSET),
			 errhint("Send to another queue; the partition's messages can still be polled.")));
}

static int64
send_one(MqQueue *q, int segment, Datum payload, MqNullable key, MqNullable headers)
{
	char	   *keystr = key.isnull ? NULL : TextDatumGetCString(key.value);
	int32		partition = partition_of(q, keystr);
	Datum		values[4];
	char		nulls[4] = {' ', key.isnull ? 'n' : ' ', ' ', headers.isnull ? 'n' : ' '};
	bool		isnull;
	int64		offset;
	MemoryContext cxt = CurrentMemoryContext;

	values[0] = Int32GetDatum(partition);
	values[1] = key.value;
	values[2] = payload;
	values[3] = headers.value;
	/* the sequence's own error at its end names an internal object */
	PG_TRY();
	{
		if (MqQueueRun(q, insert_plan(q, segment), values, nulls, SPI_OK_INSERT_RETURNING) != 1)
			elog(ERROR, "send to queue \"%s\" returned no offset", q->name);
	}
	PG_CATCH();
	{
		ErrorData  *edata;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		if (edata->sqlerrcode != ERRCODE_SEQUENCE_GENERATOR_LIMIT_EXCEEDED)
			PG_RE_THROW();
		FlushErrorState();
		partition_exhausted(q, partition);
	}
	PG_END_TRY();
	offset = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	if (offset > MQ_LAST_OFFSET)
		partition_exhausted(q, partition);
	return offset;
}

/* Send one message; returns its offset in its partition. */
int64
MqPartitionSend(MqQueue *q, Datum payload, MqNullable key, MqNullable headers)
{
	int64		offset;

	MqRequirePreload("partitioned queues");
	offset = send_one(q, send_segment(q), payload, key, headers);

	MqWaitNoteSend(q->queue_id);
	MqNotifySend(q);
	return offset;
}

/* Send a batch; emits the offsets in array order. */
void
MqPartitionSendBatch(MqQueue *q, ArrayType *payloads, ArrayType *keys,
					 ArrayType *headers, ReturnSetInfo *rsinfo)
{
	Datum	   *p_elems,
			   *k_elems = NULL,
			   *h_elems = NULL;
	bool	   *p_nulls,
			   *k_nulls = NULL,
			   *h_nulls = NULL;
	int			n;
	int			segment;

	MqRequirePreload("partitioned queues");
	segment = send_segment(q);
	/* jsonb: varlena, not by value, int alignment */
	deconstruct_array(payloads, JSONBOID, -1, false, TYPALIGN_INT, &p_elems, &p_nulls, &n);
	if (keys != NULL)
		deconstruct_array_builtin(keys, TEXTOID, &k_elems, &k_nulls, &n);
	if (headers != NULL)
		deconstruct_array(headers, JSONBOID, -1, false, TYPALIGN_INT, &h_elems, &h_nulls, &n);
	for (int i = 0; i < n; i++)
	{
		MqNullable	key = {keys ? k_elems[i] : (Datum) 0, keys ? k_nulls[i] : true};
		MqNullable	hdr = {headers ? h_elems[i] : (Datum) 0, headers ? h_nulls[i] : true};
		Datum		offset = Int64GetDatum(send_one(q, segment, p_elems[i], key, hdr));
		bool		isnull = false;

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &offset, &isnull);
	}
	MqWaitNoteSend(q->queue_id);
	MqNotifySend(q);
}

/*
 * How far this session has read a partition for a group, under a lease
 * epoch.  Kept for the session: a new session starts from the committed
 * offset.
 */
#define GROUP_KEY_LEN 201		/* 1 to 200 bytes, NUL-padded */

typedef struct PositionKey
{
	int64		queue_id;
	Oid			incarnation;	/* the first segment: queue ids are reused
								 * when mq is installed again */
	int32		partition;
	char		group[GROUP_KEY_LEN];
} PositionKey;

typedef struct Position
{
	PositionKey key;
	int64		lease_epoch;
	int64		position;
} Position;

static HTAB *positions = NULL;

static Position *
position_entry(MqQueue *q, text *group, int32 partition)
{
	PositionKey key;
	bool		found;
	Position   *p;

	if (positions == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(PositionKey);
		ctl.entrysize = sizeof(Position);
		ctl.hcxt = TopMemoryContext;
		positions = hash_create("mq positions", 64, &ctl, HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	memset(&key, 0, sizeof(key));
	key.queue_id = q->queue_id;
	key.incarnation = q->segments[0].relid;
	key.partition = partition;
	memcpy(key.group, VARDATA_ANY(group), Min(VARSIZE_ANY_EXHDR(group), GROUP_KEY_LEN - 1));
	p = hash_search(positions, &key, HASH_ENTER, &found);
	if (!found)
		p->lease_epoch = -1;
	return p;
}

/* A member's partition: its lease epoch and, if known, the committed offset. */
typedef struct Owned
{
	int32		partition;
	int64		lease_epoch;
	int64		committed;		/* -1 when not read */
	int64		position;
}			Owned;

static int
owned_from_result(Owned **owned, bool with_committed)
{
	uint64		n = SPI_processed;

	*owned = palloc(sizeof(Owned) * Max(n, 1));
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;

		(*owned)[i].partition = DatumGetInt32(SPI_getbinval(tup, desc, 1, &isnull));
		(*owned)[i].lease_epoch = DatumGetInt64(SPI_getbinval(tup, desc, 2, &isnull));
		(*owned)[i].committed = with_committed ?
			DatumGetInt64(SPI_getbinval(tup, desc, 3, &isnull)) : -1;
	}
	return (int) n;
}

/* The committed offset of a partition (when this session has no position). */
static int64
committed_offset(MqQueue *q, text *group, int32 partition)
{
	static const Oid argtypes[3] = {INT8OID, TEXTOID, INT4OID};
	SPIPlanPtr	plan = q->plans[PPLAN_COMMITTED];
	Datum		values[3] = {Int64GetDatum(q->queue_id), PointerGetDatum(group),
	Int32GetDatum(partition)};
	bool		isnull;

	if (plan == NULL)
		plan = MqQueuePlan(q, PPLAN_COMMITTED,
						   "SELECT committed FROM mq.group_offset"
						   " WHERE queue_id " OP("=") " $1 AND consumer_group " OP("=") " $2"
						   " AND partition " OP("=") " $3 ORDER BY commit_seq DESC LIMIT 1",
						   3, argtypes);
	if (MqQueueRun(q, plan, values, NULL, SPI_OK_SELECT) == 0)
		return 0;
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/* Where this session reads each owned partition from. */
static void
resolve_positions(MqQueue *q, text *group, Owned *owned, int n)
{
	for (int i = 0; i < n; i++)
	{
		Position   *p = position_entry(q, group, owned[i].partition);

		if (p->lease_epoch != owned[i].lease_epoch)
		{
			p->lease_epoch = owned[i].lease_epoch;
			p->position = owned[i].committed >= 0 ? owned[i].committed :
				committed_offset(q, group, owned[i].partition);
		}
		owned[i].position = p->position;
	}
}

/*
 * The membership rule of consumer groups.  This is its only statement: the
 * steady check of mq.poll and the sync (mq._group_sync, which mq.poll and
 * mq.heartbeat call) follow it, and nothing else decides membership
 * (mq.leave and a dead consumer's release only free partitions).  As in
 * Kafka's consumer groups, except that each member applies it to itself at
 * every poll or heartbeat instead of a coordinator assigning partitions:
 *
 * - a member is live while its heartbeat (mq.group_member.last_seen) is
 *   less than the queue's session_timeout old;
 * - a lease (mq.group_partition.lease_until) lasts session_timeout from
 *   when it was taken or renewed; once it lapsed anyone may take it, and
 *   it is taken afresh (a new lease_epoch, so that the poller starts again
 *   from the committed offset), even by the member that held it;
 * - a member's heartbeat and leases are written again once GROUP_REFRESH of
 *   session_timeout has passed since they were written: a member polling in
 *   a tight loop writes them a few times per timeout, not on every poll
 *   (bench: those writes bounded the consumption rate);
 * - each member holds its fair share, ceil(partitions / live members): it
 *   gives back its highest partitions beyond it and takes free or lapsed
 *   ones, lowest first, up to it.
 */
#define GROUP_REFRESH 0.25

/* The rule's instants for one decision, from the member's clock_timestamp(). */
typedef struct GroupClock
{
	TimestampTz now;
	TimestampTz live_after;		/* a member seen after this is live */
	TimestampTz heartbeat_due;	/* a heartbeat written before this is rewritten */
	TimestampTz renew_before;	/* a lease ending before this is renewed */
	TimestampTz lease_end;		/* a lease taken or renewed now ends here */
} GroupClock;

static TimestampTz
timestamp_plus(TimestampTz t, const Interval *span, double factor)
{
	Datum		scaled = DirectFunctionCall2(interval_mul, IntervalPGetDatum(span),
											 Float8GetDatum(factor));

	return DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
												   TimestampTzGetDatum(t), scaled));
}

static void
group_clock(const Interval *timeout, GroupClock *c)
{
	c->now = GetCurrentTimestamp();
	c->live_after = timestamp_plus(c->now, timeout, -1.0);
	c->heartbeat_due = timestamp_plus(c->now, timeout, -GROUP_REFRESH);
	c->renew_before = timestamp_plus(c->now, timeout, 1.0 - GROUP_REFRESH);
	c->lease_end = timestamp_plus(c->now, timeout, 1.0);
}

static int
fair_share(int partitions, int64 live)
{
	live = Max(live, 1);
	return (int) ((partitions + live - 1) / live);
}

/*
 * The steady state, in one read and no write: the member's heartbeat and
 * all its leases need no rewrite, it holds its fair share, and no
 * partition of it lapsed.  Returns -1 when anything is due, for the sync.
 */
static int
group_steady(MqQueue *q, text *group, text *member, bool stamped, int64 token,
			 Owned **owned)
{
	static const Oid argtypes[7] = {INT8OID, TEXTOID, TEXTOID, INT8OID,
	TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID};
	SPIPlanPtr	plan = q->plans[PPLAN_STEADY];
	GroupClock	clock;
	Datum		values[7];
	bool		isnull;
	int64		live;
	int64		mine;
	int			n;

	group_clock(&q->session_timeout, &clock);
	values[0] = Int64GetDatum(q->queue_id);
	values[1] = PointerGetDatum(group);
	values[2] = PointerGetDatum(member);
	values[3] = Int64GetDatum(token);
	values[4] = TimestampTzGetDatum(clock.live_after);
	values[5] = TimestampTzGetDatum(clock.heartbeat_due);
	values[6] = TimestampTzGetDatum(clock.renew_before);
	if (plan == NULL)
		plan = MqQueuePlan(q, PPLAN_STEADY,
						   "SELECT g.partition, g.lease_epoch,"
						   " (SELECT pg_catalog.count(*) FROM mq.group_member m2"
						   "   WHERE m2.queue_id " OP("=") " $1 AND m2.consumer_group " OP("=") " $2"
						   "   AND m2.last_seen " OP(">") " $5),"
						   " (SELECT pg_catalog.count(*) FROM mq.group_partition g2"
						   "   WHERE g2.queue_id " OP("=") " $1 AND g2.consumer_group " OP("=") " $2"
						   "   AND g2.member " OP("=") " $3)"
						   " FROM mq.group_partition g"
						   " WHERE g.queue_id " OP("=") " $1 AND g.consumer_group " OP("=") " $2"
						   " AND g.member " OP("=") " $3 AND g.lease_until " OP(">=") " $7"
						   " AND EXISTS (SELECT FROM mq.group_member m"
						   "   WHERE m.queue_id " OP("=") " $1 AND m.consumer_group " OP("=") " $2"
						   "   AND m.member " OP("=") " $3 AND m.last_seen " OP(">=") " $6"
						   "   AND ($4 IS NULL OR m.session " OP("=") " $4))"
						   " ORDER BY g.partition",
						   7, argtypes);
	n = (int) MqQueueRun(q, plan, values, stamped ? "       " : "   n   ", SPI_OK_SELECT);
	if (n == 0)
		return -1;
	live = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	mine = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	/* every partition fresh, and exactly the fair share */
	if (n != mine || live < 1 || mine != fair_share(q->partitions, live))
		return -1;
	return owned_from_result(owned, false);
}

/*
 * Heartbeat and rebalance; returns the member's partitions to poll.  busy
 * (an integer[], or NULL) lists the partitions the member is still
 * processing: a rebalance does not take them from it, and one it must give
 * back is left out of the result until it is no longer busy (mq._group_sync).
 */
static int
group_sync(MqQueue *q, text *group, text *member, ArrayType *busy, Owned **owned)
{
	static const Oid argtypes[7] = {INT8OID, TEXTOID, TEXTOID, INT8OID, INT4OID, INTERVALOID,
	INT4ARRAYOID};
	SPIPlanPtr	plan = q->plans[PPLAN_SYNC];
	int64		token = 0;
	/* the leases are released when this session ends (consumer.c) */
	bool		stamped = MqConsumerToken(&token);
	Datum		values[7] = {Int64GetDatum(q->queue_id), PointerGetDatum(group),
		PointerGetDatum(member), Int64GetDatum(token), Int32GetDatum(q->partitions),
	IntervalPGetDatum(&q->session_timeout), PointerGetDatum(busy)};
	char		nulls[8] = "       ";
	int			n = group_steady(q, group, member, stamped, token, owned);

	if (n >= 0)
		return n;
	if (plan == NULL)
		plan = MqQueuePlan(q, PPLAN_SYNC,
						   "SELECT partition, lease_epoch, committed"
						   " FROM mq._group_sync($1, $2, $3, $4, $5, $6, $7)",
						   7, argtypes);
	if (!stamped)
		nulls[3] = 'n';
	if (busy == NULL)
		nulls[6] = 'n';
	MqQueueRun(q, plan, values, nulls, SPI_OK_SELECT);
	return owned_from_result(owned, true);
}

/*
 * The sync's statements, run by mq._group_sync under its pinned
 * search_path (pg_catalog, pg_temp), planned once per session.  $1 is the
 * queue id, $2 the group, $3 the member in each.
 */
enum
{
	SYNC_PARTITIONS,			/* $4 renew_before: all, mine, mine to renew */
	SYNC_INIT,
	SYNC_MEMBERS,				/* $3 live_after, $4 member: live, my heartbeat */
	SYNC_HEARTBEAT,				/* $4 now, $5 session */
	SYNC_RENEW,					/* $4 now, $5 lease_end, $6 renew_before */
	SYNC_GIVE,					/* $4 how many, $5 busy (kept) */
	SYNC_TAKE,					/* $4 how many, $5 now, $6 lease_end */
	SYNC_OWNED,					/* $4 busy, $5 how many of them to leave out */
	SYNC_STATEMENTS
};

static const struct
{
	const char *sql;
	int			nargs;
	Oid			argtypes[6];
}			sync_statements[SYNC_STATEMENTS] =
{
	[SYNC_PARTITIONS] = {
		"SELECT count(*), count(*) FILTER (WHERE member = $3),"
		" count(*) FILTER (WHERE member = $3 AND lease_until < $4)"
		" FROM mq.group_partition WHERE queue_id = $1 AND consumer_group = $2",
		4, {INT8OID, TEXTOID, TEXTOID, TIMESTAMPTZOID}
	},
	[SYNC_INIT] = {
		"SELECT mq._group_init($1, $2)", 2, {INT8OID, TEXTOID}
	},
	[SYNC_MEMBERS] = {
		"SELECT count(*) FILTER (WHERE last_seen > $3), max(last_seen) FILTER (WHERE member = $4),"
		" max(session) FILTER (WHERE member = $4)"
		" FROM mq.group_member WHERE queue_id = $1 AND consumer_group = $2",
		4, {INT8OID, TEXTOID, TIMESTAMPTZOID, TEXTOID}
	},
	[SYNC_HEARTBEAT] = {
		"INSERT INTO mq.group_member AS m (queue_id, consumer_group, member, last_seen, session)"
		" VALUES ($1, $2, $3, $4, $5) ON CONFLICT (queue_id, consumer_group, member)"
		" DO UPDATE SET last_seen = excluded.last_seen, session = coalesce(excluded.session, m.session)",
		5, {INT8OID, TEXTOID, TEXTOID, TIMESTAMPTZOID, INT8OID}
	},
	[SYNC_RENEW] = {
		"UPDATE mq.group_partition g SET lease_until = $5,"
		" lease_epoch = CASE WHEN g.lease_until < $4 THEN g.lease_epoch + 1 ELSE g.lease_epoch END"
		" WHERE g.queue_id = $1 AND g.consumer_group = $2 AND g.member = $3 AND g.lease_until < $6",
		6, {INT8OID, TEXTOID, TEXTOID, TIMESTAMPTZOID, TIMESTAMPTZOID, TIMESTAMPTZOID}
	},
	[SYNC_GIVE] = {
		"UPDATE mq.group_partition g SET member = NULL, lease_until = NULL"
		" WHERE g.queue_id = $1 AND g.consumer_group = $2"
		" AND g.partition IN (SELECT g2.partition FROM mq.group_partition g2"
		"  WHERE g2.queue_id = $1 AND g2.consumer_group = $2 AND g2.member = $3"
		"  AND g2.partition <> ALL (pg_catalog.array_remove($5, NULL::integer))"
		"  ORDER BY g2.partition DESC LIMIT $4)",
		5, {INT8OID, TEXTOID, TEXTOID, INT4OID, INT4ARRAYOID}
	},
	/* SKIP LOCKED, and the re-check after the lock: two members never hold one partition */
	[SYNC_TAKE] = {
		"UPDATE mq.group_partition g SET member = $3, lease_until = $6, lease_epoch = g.lease_epoch + 1"
		" WHERE g.queue_id = $1 AND g.consumer_group = $2"
		" AND g.partition IN (SELECT g2.partition FROM mq.group_partition g2"
		"  WHERE g2.queue_id = $1 AND g2.consumer_group = $2"
		"  AND (g2.member IS NULL OR g2.lease_until < $5)"
		"  ORDER BY g2.partition LIMIT $4 FOR UPDATE SKIP LOCKED)",
		6, {INT8OID, TEXTOID, TEXTOID, INT4OID, TIMESTAMPTZOID, TIMESTAMPTZOID}
	},
	[SYNC_OWNED] = {
		"SELECT g.partition, g.lease_epoch,"
		" (SELECT o.committed FROM mq.group_offset o"
		"   WHERE o.queue_id = g.queue_id AND o.consumer_group = g.consumer_group"
		"   AND o.partition = g.partition ORDER BY o.commit_seq DESC LIMIT 1)"
		" FROM mq.group_partition g"
		" WHERE g.queue_id = $1 AND g.consumer_group = $2 AND g.member = $3"
		" AND g.partition NOT IN (SELECT g3.partition FROM mq.group_partition g3"
		"  WHERE g3.queue_id = $1 AND g3.consumer_group = $2 AND g3.member = $3"
		"  AND g3.partition = ANY ($4) ORDER BY g3.partition DESC LIMIT $5)"
		" ORDER BY g.partition",
		5, {INT8OID, TEXTOID, TEXTOID, INT4ARRAYOID, INT4OID}
	},
};

static SPIPlanPtr sync_plans[SYNC_STATEMENTS];

/*
 * Run sync statement which with values[0..2] the queue, group and member
 * and values[3..] its own; nulls as SPI's.  Returns the rows processed.
 */
static uint64
sync_run(int which, Datum *values, const char *nulls)
{
	int			ret;

	if (sync_plans[which] == NULL)
	{
		SPIPlanPtr	plan = SPI_prepare(sync_statements[which].sql, sync_statements[which].nargs,
									   (Oid *) sync_statements[which].argtypes);

		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "could not prepare \"%s\": %s", sync_statements[which].sql,
				 SPI_result_code_string(SPI_result));
		sync_plans[which] = plan;
	}
	ret = SPI_execute_plan(sync_plans[which], values, nulls, false, 0);
	if (ret < 0)
		elog(ERROR, "could not run \"%s\": %s", sync_statements[which].sql,
			 SPI_result_code_string(ret));
	return SPI_processed;
}

static int64
result_int8(int column, bool *isnull)
{
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, column, isnull));
}

/*
 * mq._group_sync(p_queue_id bigint, p_group text, p_member text,
 *				  p_session bigint, p_partitions integer, p_timeout interval,
 *				  p_busy integer[])
 *		RETURNS TABLE (partition integer, lease_epoch bigint, committed bigint)
 *
 * mq internal (EXECUTE for mq_owner only): the heartbeat and rebalance of
 * member in a consumer group of partitioned queue p_queue_id, which has
 * p_partitions partitions and session_timeout p_timeout, by the rule above;
 * p_session is the polling session's stamp, whose end frees the leases
 * (consumer.c; NULL for a heartbeat or a session that stamps nothing,
 * which keeps the stamp there; a new stamp rewrites the heartbeat).  p_busy (NULL: none; NULL elements
 * ignored) lists the partitions the member is still processing: when it
 * holds more than its fair share it gives back the others first, keeps a
 * busy one it must give back (its lease renewed, so its commits count) and
 * leaves it out of the result, so that the poll fetches nothing new from
 * it, until a sync no longer lists it: Kafka's cooperative rebalancing.
 * Returns the partitions the member may poll, with their lease epochs and
 * committed offsets.  One read
 * of the group's partitions and one of its members decide everything; a
 * member in a steady state writes nothing.  Errors: 22004 NULL member (or
 * queue, group, partitions, timeout), 22023 member not 1 to 200 bytes.
 */
Datum
mq_group_sync(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	char		session_null = PG_ARGISNULL(3) ? 'n' : ' ';
	text	   *member;
	int			partitions;
	GroupClock	clock;
	Datum		v[6];
	bool		isnull;
	int64		mine;
	int64		stale;
	int64		live;
	TimestampTz seen;
	bool		seen_null;
	int			target;
	int64		draining = 0;	/* busy partitions it must give back */
	Datum		busy;

	if (PG_ARGISNULL(2))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("member must not be NULL")));
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1) || PG_ARGISNULL(4) || PG_ARGISNULL(5))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("queue id, group, partitions and timeout must not be NULL")));
	member = PG_GETARG_TEXT_PP(2);
	if (VARSIZE_ANY_EXHDR(member) < 1 || VARSIZE_ANY_EXHDR(member) > 200)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("member must be 1 to 200 bytes long")));
	partitions = PG_GETARG_INT32(4);
	group_clock(PG_GETARG_INTERVAL_P(5), &clock);
	InitMaterializedSRF(fcinfo, 0);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	v[0] = PG_GETARG_DATUM(0);
	v[1] = PointerGetDatum(PG_GETARG_TEXT_PP(1));
	v[2] = PointerGetDatum(member);
	busy = PG_ARGISNULL(6) ? PointerGetDatum(construct_empty_array(INT4OID)) : PG_GETARG_DATUM(6);

	v[3] = TimestampTzGetDatum(clock.renew_before);
	sync_run(SYNC_PARTITIONS, v, NULL);
	mine = result_int8(2, &isnull);
	stale = result_int8(3, &isnull);
	if (result_int8(1, &isnull) == 0)
		sync_run(SYNC_INIT, v, NULL);

	v[2] = TimestampTzGetDatum(clock.live_after);
	v[3] = PointerGetDatum(member);
	sync_run(SYNC_MEMBERS, v, NULL);
	v[2] = PointerGetDatum(member);
	live = result_int8(1, &isnull);
	seen = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 2, &seen_null));
	{
		int64		session = result_int8(3, &isnull);
		/*
		 * p_session: the polling session's stamp (its end frees the leases);
		 * NULL (a heartbeat, or a session that stamps nothing) keeps the one
		 * there, so a heartbeat from another connection does not untie them.
		 */
		bool		same_session = session_null == 'n' ||
			(!isnull && session == PG_GETARG_INT64(3));

		if (seen_null || seen < clock.heartbeat_due || !same_session)
		{
			v[3] = TimestampTzGetDatum(clock.now);
			v[4] = session_null == 'n' ? (Datum) 0 : PG_GETARG_DATUM(3);
			sync_run(SYNC_HEARTBEAT, v, session_null == 'n' ? "    n" : NULL);
			if (seen_null || seen <= clock.live_after)
				live++;			/* this member is live from now on */
		}
	}
	if (stale > 0)
	{
		v[3] = TimestampTzGetDatum(clock.now);
		v[4] = TimestampTzGetDatum(clock.lease_end);
		v[5] = TimestampTzGetDatum(clock.renew_before);
		sync_run(SYNC_RENEW, v, NULL);
	}
	target = fair_share(partitions, live);
	if (mine > target)
	{
		v[3] = Int32GetDatum((int32) (mine - target));
		v[4] = busy;
		draining = mine - target - (int64) sync_run(SYNC_GIVE, v, NULL);
	}
	else if (mine < target)
	{
		v[3] = Int32GetDatum((int32) (target - mine));
		v[4] = TimestampTzGetDatum(clock.now);
		v[5] = TimestampTzGetDatum(clock.lease_end);
		sync_run(SYNC_TAKE, v, NULL);
	}

	v[3] = busy;
	v[4] = Int32GetDatum((int32) draining);
	sync_run(SYNC_OWNED, v, NULL);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		Datum		row[3];
		bool		nulls[3];

		for (int c = 0; c < 3; c++)
			row[c] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, c + 1, &nulls[c]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, nulls);
	}
	SPI_finish();
	return (Datum) 0;
}

/*
 * The end of a partition: visible, the visible end (every offset below it
 * belongs to a send that has ended); otherwise one past the highest offset
 * handed out.
 */
int64
MqPartitionEnd(MqQueue *q, int32 partition, bool visible)
{
	static const Oid argtypes[3] = {INT8OID, INT4OID, BOOLOID};
	SPIPlanPtr	plan;
	Datum		values[3];
	bool		isnull;

	if (!q->distributed)
		return visible ? MqVisibleEnd(q->queue_id, partition, q->offset_seqs[partition]) :
			MqSequenceEnd(q->offset_seqs[partition]);

	/*
	 * On a Citus cluster the sequence and the holds are on the node that
	 * stores the partition: a router query on its head row runs
	 * mq._local_end there (a kept generic plan, one round trip).
	 */
	plan = q->plans[PPLAN_LOCAL_END];
	if (plan == NULL)
		plan = MqQueuePlan(q, PPLAN_LOCAL_END,
						   psprintf("SELECT mq._local_end($1, $2, $3) FROM mq.p_" INT64_FORMAT "_head"
									" WHERE partition " OP("=") " $2", q->queue_id),
						   3, argtypes);
	values[0] = Int64GetDatum(q->queue_id);
	values[1] = Int32GetDatum(partition);
	values[2] = BoolGetDatum(visible);
	if (MqQueueRun(q, plan, values, NULL, SPI_OK_SELECT) != 1)
		ereport(ERROR,
				(errcode(ERRCODE_DATA_CORRUPTED),
				 errmsg("partition %d of queue \"%s\" has no head row", partition, q->name)));
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * On a Citus cluster a poll or commit reads the end and the rows on the
 * partition's worker in two statements; the worker's transaction must take
 * a new snapshot for the second, which only READ COMMITTED does.
 */
static void
require_read_committed(MqQueue *q, const char *what)
{
	if (q->distributed && IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot %s distributed queue \"%s\" in a REPEATABLE READ or SERIALIZABLE transaction",
						what, q->name),
				 errdetail("On a Citus cluster the partition's visible end and its messages are read on its worker in two statements, which need two snapshots."),
				 errhint("Use READ COMMITTED.")));
}

/* Read one partition from its position below end; returns rows emitted. */
static uint64
fetch_partition(MqQueue *q, Owned *o, int64 end, int limit, ReturnSetInfo *rsinfo)
{
	static const Oid argtypes[4] = {INT4OID, INT8OID, INT8OID, INT4OID};
	SPIPlanPtr	plan = q->plans[PPLAN_FETCH];
	Datum		values[4] = {Int32GetDatum(o->partition), Int64GetDatum(o->position),
	Int64GetDatum(end), Int32GetDatum(limit)};
	uint64		n;
	int			ret;

	if (plan == NULL)
		plan = MqQueuePlan(q, PPLAN_FETCH,
						   psprintf("SELECT partition, \"offset\", key, payload, headers, enqueued_at"
									" FROM mq.p_" INT64_FORMAT " WHERE partition " OP("=") " $1"
									" AND \"offset\" " OP(">") " $2 AND \"offset\" " OP("<") " $3"
									" ORDER BY \"offset\" LIMIT $4", q->queue_id),
						   4, argtypes);
	/* the latest snapshot: taken after the visible end was computed */
	ret = SPI_execute_snapshot(plan, values, NULL, MqQueueLatestSnapshot(plan), InvalidSnapshot,
							   true, false, 0);
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read queue \"%s\": %s", q->name, SPI_result_code_string(ret));
	n = SPI_processed;
	for (uint64 i = 0; i < n; i++)
	{
		Datum		row[6];
		bool		nulls[6];

		for (int c = 0; c < 6; c++)
			row[c] = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, c + 1, &nulls[c]);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, row, nulls);
		o->position = DatumGetInt64(row[1]);
	}
	return n;
}

/*
 * A position moved by this transaction's polls takes effect when it
 * commits: a poll whose transaction rolls back is read again.
 */
typedef struct PendingPosition
{
	Position   *entry;
	int64		lease_epoch;
	int64		position;
	int			level;			/* subtransaction nesting level */
} PendingPosition;

static List *pending_positions = NIL;

static PendingPosition *
pending_for(Position *entry)
{
	ListCell   *lc;

	foreach(lc, pending_positions)
	{
		PendingPosition *p = lfirst(lc);

		if (p->entry == entry)
			return p;
	}
	return NULL;
}

/*
 * mq.autocommit_positions: whether a poll outside an explicit transaction
 * block moves the position.  Such a poll commits before its answer is sent;
 * on a direct connection an answer lost with the connection is lost with
 * the session and its positions, but behind a transaction-mode pooler the
 * server session outlives its client (docs/poolers.md).  Off, only a poll
 * whose transaction the client committed, after the answer arrived, moves
 * it; an autocommit poll is read again.
 */
static bool autocommit_positions = true;

static void
save_position(MqQueue *q, text *group, Owned *o)
{
	Position   *entry;
	PendingPosition *p;

	if ((!autocommit_positions || MqTransactionPooled()) && !IsTransactionBlock())
		return;
	entry = position_entry(q, group, o->partition);
	p = pending_for(entry);
	if (p == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

		p = palloc(sizeof(PendingPosition));
		p->entry = entry;
		pending_positions = lappend(pending_positions, p);
		MemoryContextSwitchTo(old);
	}
	p->lease_epoch = o->lease_epoch;
	p->position = o->position;
	p->level = GetCurrentTransactionNestLevel();
}

static void
positions_xact_callback(XactEvent event, void *arg)
{
	ListCell   *lc;

	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT)
		foreach(lc, pending_positions)
		{
			PendingPosition *p = lfirst(lc);

			p->entry->lease_epoch = p->lease_epoch;
			p->entry->position = p->position;
		}
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_ABORT || event == XACT_EVENT_PARALLEL_ABORT ||
		event == XACT_EVENT_PREPARE)
		pending_positions = NIL;
}

static void
positions_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
						   SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();
	ListCell   *lc;

	foreach(lc, pending_positions)
	{
		PendingPosition *p = lfirst(lc);

		if (p->level < level)
			continue;
		if (event == SUBXACT_EVENT_COMMIT_SUB)
			p->level = level - 1;
		else if (event == SUBXACT_EVENT_ABORT_SUB)
		{
			/* read again from what the session had committed */
			p->lease_epoch = -1;
			p->level = level - 1;
		}
	}
}

/* Called from _PG_init. */
void
MqPartitionInit(void)
{
	RegisterXactCallback(positions_xact_callback, NULL);
	RegisterSubXactCallback(positions_subxact_callback, NULL);
	DefineCustomBoolVariable("mq.autocommit_positions",
							 "Whether a poll outside an explicit transaction block moves the member's position.",
							 "Off behind a transaction-mode pooler: there the server session outlives a client whose answer was lost.",
							 &autocommit_positions, true, PGC_USERSET, 0, NULL, NULL, NULL);
}

/* Where this session reads each owned partition from, pending moves included. */
static void
resolve_pending(MqQueue *q, text *group, Owned *owned, int n)
{
	resolve_positions(q, group, owned, n);
	for (int i = 0; i < n; i++)
	{
		PendingPosition *p = pending_for(position_entry(q, group, owned[i].partition));

		if (p != NULL && p->lease_epoch == owned[i].lease_epoch)
			owned[i].position = p->position;
	}
}

/* One pass over the member's partitions; returns messages emitted. */
static uint64
poll_once(MqQueue *q, text *group, text *member, ArrayType *busy, int max,
		  ReturnSetInfo *rsinfo)
{
	static uint32 start = 0;	/* rotate so no partition starves */
	Owned	   *owned;
	int			nowned;
	uint64		total = 0;

	require_read_committed(q, "poll");
	nowned = group_sync(q, group, member, busy, &owned);
	resolve_pending(q, group, owned, nowned);
	start++;
	for (int i = 0; i < nowned && total < (uint64) max; i++)
	{
		Owned	   *o = &owned[(start + i) % nowned];
		int64		end = MqPartitionEnd(q, o->partition, true);
		uint64		n;

		if (end - 1 <= o->position)
			continue;			/* nothing new: do not touch the segments */
		n = fetch_partition(q, o, end, max - (int) total, rsinfo);
		if (n > 0)
		{
			total += n;
			save_position(q, group, o);
		}
	}
	return total;
}

typedef struct PollArgs
{
	text	   *group;
	text	   *member;
	ArrayType  *busy;			/* busy_partitions, or NULL */
	ReturnSetInfo *rsinfo;
}			PollArgs;

static uint64
poll_fetch(MqQueue *q, int granted, void *arg)
{
	PollArgs   *poll = (PollArgs *) arg;

	return poll_once(q, poll->group, poll->member, poll->busy, granted, poll->rsinfo);
}

static text *
required_text(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", name)));
	return PG_GETARG_TEXT_PP(argno);
}

/*
 * mq.poll(queue_name text, consumer_group text, member text,
 *		   max_messages integer, wait interval, busy_partitions integer[])
 *		RETURNS TABLE (partition, "offset", key, payload, headers, enqueued_at)
 *
 * busy_partitions (NULL: none) are the partitions the caller still
 * processes: a rebalance leaves them with it, and hands one over only once
 * a later poll or heartbeat no longer lists it, as Kafka's cooperative
 * rebalancing lets a consumer finish and commit revoked partitions first.
 * Errors: see docs/reference.md#mqpoll.
 */
Datum
mq_poll(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	text	   *queue_name = required_text(fcinfo, 0, "queue_name");
	text	   *group = required_text(fcinfo, 1, "consumer_group");
	text	   *member = required_text(fcinfo, 2, "member");
	int32		max;
	TimestampTz deadline;
	PollArgs	poll;

	if (PG_ARGISNULL(3) || PG_ARGISNULL(4))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("max_messages and wait must not be NULL")));
	max = PG_GETARG_INT32(3);
	if (max < 1 || max > MAX_POLL)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("max_messages must be between 1 and %d", MAX_POLL)));
	if (VARSIZE_ANY_EXHDR(group) < 1 || VARSIZE_ANY_EXHDR(group) > 200 ||
		VARSIZE_ANY_EXHDR(member) < 1 || VARSIZE_ANY_EXHDR(member) > 200)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("consumer_group and member must be 1 to 200 bytes long")));
	deadline = MqWaitDeadline(PG_GETARG_INTERVAL_P(4));

	MqRequirePreload("partitioned queues");
	InitMaterializedSRF(fcinfo, 0);
	poll.group = group;
	poll.member = member;
	poll.busy = PG_NARGS() > 5 && !PG_ARGISNULL(5) ? PG_GETARG_ARRAYTYPE_P(5) : NULL;
	poll.rsinfo = rsinfo;
	MqWaitLoop(queue_name, true, max, deadline, poll_fetch, &poll);
	return (Datum) 0;
}

/* Consumer group names: 1 to 200 bytes, as member names. */
static void
check_group(text *group)
{
	if (VARSIZE_ANY_EXHDR(group) < 1 || VARSIZE_ANY_EXHDR(group) > 200)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("consumer_group must be 1 to 200 bytes long")));
}

/*
 * One commit attempt: a row inserted into mq.group_offset once the
 * partition's lease row is locked (commits of a partition in commit order,
 * see mq.group_offset in sql/mq.sql), and with member only while it holds
 * the lease.  Returns whether it was inserted: false for a fenced member or
 * a group that does not exist yet.
 */
static bool
commit_once(MqQueue *q, text *group, int32 partition, int64 offset, text *member)
{
	static const Oid argtypes[5] = {INT8OID, TEXTOID, INT4OID, INT8OID, TEXTOID};
	SPIPlanPtr	plan = q->plans[PPLAN_COMMIT];
	Datum		values[5] = {Int64GetDatum(q->queue_id), PointerGetDatum(group),
		Int32GetDatum(partition), Int64GetDatum(offset),
	PointerGetDatum(member)};
	char		nulls[5] = {' ', ' ', ' ', ' ', member ? ' ' : 'n'};

	if (plan == NULL)
		plan = MqQueuePlan(q, PPLAN_COMMIT,
						   "WITH lease AS (SELECT FROM mq.group_partition g"
						   " WHERE g.queue_id " OP("=") " $1 AND g.consumer_group " OP("=") " $2"
						   " AND g.partition " OP("=") " $3 AND ($5 IS NULL OR"
						   " (g.member " OP("=") " $5"
						   " AND g.lease_until " OP(">") " pg_catalog.clock_timestamp()))"
						   " FOR NO KEY UPDATE)"
						   " INSERT INTO mq.group_offset (queue_id, consumer_group, partition, committed)"
						   " SELECT $1, $2, $3, $4 FROM lease",
						   5, argtypes);
	return MqQueueRun(q, plan, values, nulls, SPI_OK_INSERT) > 0;
}

static void
group_init(MqQueue *q, text *group)
{
	static const Oid argtypes[2] = {INT8OID, TEXTOID};
	SPIPlanPtr	plan = q->plans[PPLAN_GROUP_INIT];
	Datum		values[2] = {Int64GetDatum(q->queue_id), PointerGetDatum(group)};

	if (plan == NULL)
		plan = MqQueuePlan(q, PPLAN_GROUP_INIT, "SELECT mq._group_init($1, $2)",
						   2, argtypes);
	MqQueueRun(q, plan, values, NULL, SPI_OK_SELECT);
}

/*
 * mq.commit(queue_name text, consumer_group text, partition integer,
 *			 "offset" bigint, member text) RETURNS boolean
 *	  One small row inserted with a kept plan; creates the group on first use.
 */
Datum
mq_commit(PG_FUNCTION_ARGS)
{
	text	   *queue_name = required_text(fcinfo, 0, "queue_name");
	text	   *group;
	text	   *member = PG_ARGISNULL(4) ? NULL : PG_GETARG_TEXT_PP(4);
	MqSession	session;
	MqQueue    *q;
	int32		partition;
	int64		offset;
	int64		end;
	bool		done;

	MqRequirePreload("partitioned queues");
	q = MqQueueOpen(queue_name, &session, MQ_RIGHT_CONSUME);
	MqRequirePartitioned(q);
	require_read_committed(q, "commit to");
	group = required_text(fcinfo, 1, "consumer_group");
	check_group(group);
	if (PG_ARGISNULL(2) || PG_ARGISNULL(3))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("partition and offset must not be NULL")));
	partition = PG_GETARG_INT32(2);
	offset = PG_GETARG_INT64(3);
	if (partition < 0 || partition >= q->partitions)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("partition %d does not exist", partition)));
	if (offset < 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("offset must not be negative")));
	/* committing past the visible end would silently skip messages to come */
	end = MqPartitionEnd(q, partition, true);
	if (offset >= end)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("offset " INT64_FORMAT " is beyond the end of partition %d",
						offset, partition),
				 errdetail("The last visible offset is " INT64_FORMAT ".", end - 1)));
	if (member && (VARSIZE_ANY_EXHDR(member) < 1 || VARSIZE_ANY_EXHDR(member) > 200))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("member must be 1 to 200 bytes long")));

	done = commit_once(q, group, partition, offset, member);
	if (!done)
	{
		/* the group may not exist yet; a fenced commit just fails again */
		group_init(q, group);
		done = commit_once(q, group, partition, offset, member);
	}
	MqQueueClose(&session);
	PG_RETURN_BOOL(done);
}

/*
 * The ids of the partitioned queues, each with its queue lock taken, in id
 * order (a queue dropped meanwhile is left out): maintenance takes the
 * lock before it touches a queue's rows, as every call does, so that it
 * cannot deadlock with a drop_queue (queue.c).  Connected to SPI.
 */
static Datum
lock_log_queues(void)
{
	if (SPI_execute("SELECT queue_id FROM mq.queue WHERE partitions IS NOT NULL ORDER BY 1",
					true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not list partitioned queues");
	return MqQueueLockIds();
}

/*
 * mq._compact_offsets() RETURNS bigint
 *	  Deletes the rows of mq.group_offset superseded by a later commit of
 *	  the same group and partition; returns how many.  Called by
 *	  mq._maintain as mq_owner.  Does nothing (returns 0) while what this
 *	  backend's previous call deleted cannot be removed yet: under a
 *	  snapshot held elsewhere those rows stay in the table and its index,
 *	  and each call would scan them all again (a long hold would make
 *	  maintenance cost grow with it); once the snapshot is gone, one call
 *	  deletes everything superseded since.  Each queue's rows under its
 *	  queue lock (lock_log_queues).
 */
Datum
mq_compact_offsets(PG_FUNCTION_ARGS)
{
	static TransactionId last_xid = InvalidTransactionId;
	static SPIPlanPtr plan = NULL;
	static Oid	argtypes[1] = {INT8ARRAYOID};
	Datum		queues;
	Oid			relid = get_relname_relid("group_offset", get_namespace_oid("mq", false));
	Relation	rel;
	TransactionId horizon;
	uint64		n;

	if (!OidIsValid(relid))
		elog(ERROR, "mq.group_offset is missing");
	rel = table_open(relid, RowExclusiveLock);
	horizon = GetOldestNonRemovableTransactionId(rel);
	table_close(rel, NoLock);
	if (TransactionIdIsValid(last_xid) && !TransactionIdPrecedes(last_xid, horizon))
		PG_RETURN_INT64(0);

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	queues = lock_log_queues();
	if (plan == NULL)
	{
		/* per group partition (few rows): its latest commit, then a range */
		plan = SPI_prepare("DELETE FROM mq.group_offset o USING mq.group_partition g"
						   " WHERE g.queue_id " OP("=") " ANY ($1)"
						   " AND o.queue_id " OP("=") " g.queue_id"
						   " AND o.consumer_group " OP("=") " g.consumer_group"
						   " AND o.partition " OP("=") " g.partition"
						   " AND o.commit_seq " OP("<") " (SELECT n.commit_seq FROM mq.group_offset n"
						   " WHERE n.queue_id " OP("=") " g.queue_id"
						   " AND n.consumer_group " OP("=") " g.consumer_group"
						   " AND n.partition " OP("=") " g.partition"
						   " ORDER BY n.commit_seq DESC LIMIT 1)",
						   1, argtypes);
		if (plan == NULL || SPI_keepplan(plan) != 0)
			elog(ERROR, "could not prepare the compaction of committed offsets");
	}
	if (SPI_execute_plan(plan, &queues, NULL, false, 0) != SPI_OK_DELETE)
		elog(ERROR, "could not compact committed offsets");
	n = SPI_processed;
	SPI_finish();
	if (n > 0)
		last_xid = GetTopTransactionId();
	PG_RETURN_INT64((int64) n);
}

/* mq._partition_end(queue_name text, partition integer) RETURNS bigint */
Datum
mq_partition_end(PG_FUNCTION_ARGS)
{
	text	   *queue_name = required_text(fcinfo, 0, "queue_name");
	MqSession	session;
	MqQueue    *q;
	int32		partition;
	int64		end;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("partition must not be NULL")));
	partition = PG_GETARG_INT32(1);
	MqRequirePreload("partitioned queues");
	q = MqQueueOpen(queue_name, &session, MQ_RIGHT_MONITOR);
	MqRequirePartitioned(q);
	if (partition < 0 || partition >= q->partitions)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("partition %d does not exist", partition)));
	end = MqPartitionEnd(q, partition, true);
	MqQueueClose(&session);
	PG_RETURN_INT64(end);
}

/* mq._require_preload(what text) RETURNS void: 55000 unless mq is preloaded */
Datum
mq_require_preload(PG_FUNCTION_ARGS)
{
	MqRequirePreload(PG_ARGISNULL(0) ? "this" : text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}
