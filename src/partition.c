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
 * mq.poll first settles the member's membership: in the steady state
 * (heartbeat and leases fresh, fair share held) one read returns its
 * partitions; otherwise mq._group_sync (PL/pgSQL) heartbeats and
 * rebalances.  It then reads each of the member's partitions from its
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
#include "wait.h"

PG_FUNCTION_INFO_V1(mq_poll);
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
 * The steady state, in one read and no write: the member's heartbeat and
 * all its leases are fresh (written less than a quarter of the session
 * timeout ago), it holds its fair share, and no partition of it lapsed.
 * Returns -1 when anything is due, for the full _group_sync.
 */
static int
group_steady(MqQueue *q, text *group, text *member, bool stamped, int64 token,
			 Owned **owned)
{
	static const Oid argtypes[5] = {INT8OID, TEXTOID, TEXTOID, INT8OID, INTERVALOID};
	SPIPlanPtr	plan = q->plans[PPLAN_STEADY];
	Datum		values[5] = {Int64GetDatum(q->queue_id), PointerGetDatum(group),
		PointerGetDatum(member), Int64GetDatum(token),
	IntervalPGetDatum(&q->session_timeout)};
	bool		isnull;
	int64		live;
	int64		mine;
	int			n;

	if (plan == NULL)
		plan = MqQueuePlan(q, PPLAN_STEADY,
						   "SELECT g.partition, g.lease_epoch,"
						   " (SELECT pg_catalog.count(*) FROM mq.group_member m2"
						   "   WHERE m2.queue_id " OP("=") " $1 AND m2.consumer_group " OP("=") " $2"
						   "   AND m2.last_seen " OP(">") " (pg_catalog.clock_timestamp() " OP("-") " $5)),"
						   " (SELECT pg_catalog.count(*) FROM mq.group_partition g2"
						   "   WHERE g2.queue_id " OP("=") " $1 AND g2.consumer_group " OP("=") " $2"
						   "   AND g2.member " OP("=") " $3)"
						   " FROM mq.group_partition g"
						   " WHERE g.queue_id " OP("=") " $1 AND g.consumer_group " OP("=") " $2"
						   " AND g.member " OP("=") " $3"
						   " AND g.lease_until " OP(">=") " (pg_catalog.clock_timestamp() " OP("+")
						   " ($5 " OP("*") " 0.75::pg_catalog.float8))"
						   " AND EXISTS (SELECT FROM mq.group_member m"
						   "   WHERE m.queue_id " OP("=") " $1 AND m.consumer_group " OP("=") " $2"
						   "   AND m.member " OP("=") " $3"
						   "   AND m.last_seen " OP(">=") " (pg_catalog.clock_timestamp() " OP("-")
						   " ($5 " OP("/") " 4::pg_catalog.float8))"
						   "   AND ($4 IS NULL OR m.session " OP("=") " $4))"
						   " ORDER BY g.partition",
						   5, argtypes);
	n = (int) MqQueueRun(q, plan, values, stamped ? "     " : "   n ", SPI_OK_SELECT);
	if (n == 0)
		return -1;
	live = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull));
	mine = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 4, &isnull));
	/* every partition fresh, and exactly the fair share ceil(partitions / live) */
	if (n != mine || live < 1 || mine != (q->partitions + live - 1) / live)
		return -1;
	return owned_from_result(owned, false);
}

/* Heartbeat and rebalance; returns the member's partitions. */
static int
group_sync(MqQueue *q, text *group, text *member, Owned **owned)
{
	static const Oid argtypes[6] = {INT8OID, TEXTOID, TEXTOID, INT8OID, INT4OID, INTERVALOID};
	SPIPlanPtr	plan = q->plans[PPLAN_SYNC];
	int64		token = 0;
	/* the leases are released when this session ends (consumer.c) */
	bool		stamped = MqConsumerToken(&token);
	Datum		values[6] = {Int64GetDatum(q->queue_id), PointerGetDatum(group),
		PointerGetDatum(member), Int64GetDatum(token), Int32GetDatum(q->partitions),
	IntervalPGetDatum(&q->session_timeout)};
	int			n = group_steady(q, group, member, stamped, token, owned);

	if (n >= 0)
		return n;
	if (plan == NULL)
		plan = MqQueuePlan(q, PPLAN_SYNC,
						   "SELECT partition, lease_epoch, committed"
						   " FROM mq._group_sync($1, $2, $3, $4, $5, $6)",
						   6, argtypes);
	MqQueueRun(q, plan, values, stamped ? "      " : "   n  ", SPI_OK_SELECT);
	return owned_from_result(owned, true);
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

	if (!autocommit_positions && !IsTransactionBlock())
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
poll_once(MqQueue *q, text *group, text *member, int max, ReturnSetInfo *rsinfo)
{
	static uint32 start = 0;	/* rotate so no partition starves */
	Owned	   *owned;
	int			nowned;
	uint64		total = 0;

	require_read_committed(q, "poll");
	nowned = group_sync(q, group, member, &owned);
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
	ReturnSetInfo *rsinfo;
}			PollArgs;

static uint64
poll_fetch(MqQueue *q, int granted, void *arg)
{
	PollArgs   *poll = (PollArgs *) arg;

	return poll_once(q, poll->group, poll->member, granted, poll->rsinfo);
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
 *		   max_messages integer, wait interval)
 *		RETURNS TABLE (partition, "offset", key, payload, headers, enqueued_at)
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
