/*-------------------------------------------------------------------------
 *
 * offsets.c
 *	  Ids handed out by sends (msg_ids of work queues, offsets of the
 *	  partitions of partitioned queues), and the visible end: an id below
 *	  which every send has ended, so that a reader going forward by id
 *	  never passes a send that has yet to commit.
 *
 * Ids come from a sequence (one per work queue, one per partition), so they
 * are handed out when a message is sent, not when its transaction commits:
 * the transaction that took id 10 may commit after the one that took 11,
 * and a reader that took 11 and went on would skip 10 for good.  So readers
 * that go forward by id stop at the visible end: the lowest id a running
 * sender may still commit (its "hold"), or, when no sender runs, one past
 * the sequence's last value.
 *
 * A sender, before its first id in a (queue, partition) in a transaction,
 * reads the sequence's last value and records one more than it as its hold
 * in its backend's slot; then it takes ids with nextval.  The hold is
 * dropped at commit or abort (XACT_EVENT_COMMIT and _ABORT run after the
 * outcome is visible to new snapshots).  A reader reads the sequence's last
 * value first and the holds after.  If the last value it read covers an id
 * x of a running sender, that sender's nextval came before the read
 * (PostgreSQL's buffer lock on the sequence orders the two), and its hold,
 * recorded before its nextval, comes before the reader's look at the holds,
 * which are under an LWLock: the reader sees the hold, at most x, and stops
 * there.  Sequences have CACHE 1, so the last value is exactly the highest
 * id handed out.  Neither side waits on anything while holding the LWLock:
 * no nextval, no buffer I/O, no heavyweight lock (a sender that waits for a
 * sequence behind a drop_queue can be cancelled).
 *
 * Shared state: a slot per backend listing the (database, queue,
 * partition) pairs its transaction sends to, with the first hold and which
 * segments of a work queue it writes to (so that maintenance knows when a
 * sealed segment takes no more rows).  A backend edits only its own slot.
 *
 * Locking: MQ_OFFSET_LOCKS LWLocks; a (database, queue, partition) maps to
 * one; a sender records or drops its hold under it in exclusive mode, a
 * reader scans the slots under it in shared mode.
 *
 * PREPARE TRANSACTION is refused for a transaction that holds ids of a
 * partitioned queue, since the hold would have to outlive the backend (a
 * work queue's prepared send is found by the sweep, storage.c).  After a
 * crash shared memory starts empty, which is right: no transaction
 * survives a crash.
 *
 * A partitioned queue's offsets are taken where its rows are stored: by
 * the trigger mq._assign_offset() on the queue's tables, which holds and
 * takes nextval in the backend that inserts the row.  After a Citus shard
 * move the node's sequence may be behind the partition's rows: the first
 * send through a table raises it (reseed_if_behind).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "access/xact.h"
#include "catalog/namespace.h"
#include "catalog/partition.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "commands/trigger.h"
#include "common/hashfn.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/backendid.h"
#include "storage/ipc.h"
#include "storage/lmgr.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/fmgrprotos.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/rel.h"
#include "utils/syscache.h"

#include "offsets.h"
#include "queue.h"
#include "shmem.h"

#define MQ_OFFSET_LOCKS 128
/* (queue, partition) pairs one transaction may send to */
#define MQ_MAX_HOLDS 256

typedef struct OffsetHold
{
	Oid			database;		/* queue ids are per database */
	int64		queue_id;
	int32		partition;		/* 0 for a work queue */
	uint32		segments;		/* work queue segments written, a bit each */
	bool		log;			/* a partitioned queue's: cannot be prepared */
	int64		offset;
} OffsetHold;

typedef struct BackendHolds
{
	int			nholds;
	OffsetHold	holds[MQ_MAX_HOLDS];
} BackendHolds;

static BackendHolds *all_holds = NULL;	/* MaxBackends slots */
static LWLockPadded *offset_locks = NULL;

static Size
holds_size(void)
{
	return mul_size(MaxBackends, sizeof(BackendHolds));
}

void
MqOffsetsShmemRequest(void)
{
	RequestAddinShmemSpace(MAXALIGN(holds_size()));
	RequestNamedLWLockTranche("mq offsets", MQ_OFFSET_LOCKS);
}

void
MqOffsetsShmemStartup(void)
{
	bool		found;

	all_holds = ShmemInitStruct("mq offset holds", holds_size(), &found);
	if (!found)
		memset(all_holds, 0, holds_size());
	offset_locks = GetNamedLWLockTranche("mq offsets");
}

static LWLock *
partition_lock(int64 queue_id, int32 partition)
{
	uint32		h = hash_combine(hash_combine(hash_uint32((uint32) MyDatabaseId),
											  hash_uint32((uint32) queue_id)),
								 hash_uint32((uint32) partition));

	return &offset_locks[h % MQ_OFFSET_LOCKS].lock;
}

static BackendHolds *
my_holds(void)
{
	Assert(MyBackendId >= 1 && MyBackendId <= MaxBackends);
	return &all_holds[MyBackendId - 1];
}

/* Drop this backend's holds when its transaction ends, however it ends. */
static void
offsets_xact_callback(XactEvent event, void *arg)
{
	BackendHolds *mine;

	if (all_holds == NULL || MyBackendId == InvalidBackendId)
		return;
	mine = my_holds();
	if (mine->nholds == 0)
		return;
	if (event == XACT_EVENT_PRE_PREPARE)
	{
		for (int i = 0; i < mine->nholds; i++)
			if (mine->holds[i].log)
				ereport(ERROR,
						(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
						 errmsg("cannot PREPARE a transaction that sent to a partitioned queue")));
		return;
	}
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT &&
		event != XACT_EVENT_PREPARE)
		return;
	while (mine->nholds > 0)
	{
		OffsetHold *h = &mine->holds[mine->nholds - 1];
		LWLock	   *lock = partition_lock(h->queue_id, h->partition);

		LWLockAcquire(lock, LW_EXCLUSIVE);
		mine->nholds--;
		LWLockRelease(lock);
	}
}

/* Called from _PG_init. */
void
MqOffsetsInit(void)
{
	RegisterXactCallback(offsets_xact_callback, NULL);
}

/* One past the sequence's last value: 1 before its first nextval. */
int64
MqSequenceEnd(Oid seq)
{
	LOCAL_FCINFO(fcinfo, 1);
	Datum		last;

	InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = ObjectIdGetDatum(seq);
	fcinfo->args[0].isnull = false;
	last = pg_sequence_last_value(fcinfo);
	if (fcinfo->isnull)
		return 1;
	if (DatumGetInt64(last) == PG_INT64_MAX)
		return PG_INT64_MAX;
	return DatumGetInt64(last) + 1;
}

/*
 * Before taking ids of (queue, partition) with nextval in this
 * transaction: record the hold, and for a work queue the segment the ids
 * go to.
 */
void
MqHold(int64 queue_id, int32 partition, int segment, Oid seq, bool log)
{
	BackendHolds *mine;
	OffsetHold *h = NULL;
	LWLock	   *lock;

	Assert(MqPreloaded());
	mine = my_holds();
	for (int i = 0; i < mine->nholds; i++)
		if (mine->holds[i].queue_id == queue_id && mine->holds[i].partition == partition)
			h = &mine->holds[i];
	if (h != NULL && (h->segments & (1u << segment)) != 0)
		return;					/* our first id there is the lower one */
	if (h == NULL && mine->nholds >= MQ_MAX_HOLDS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("cannot send to more than %d partitions in one transaction",
						MQ_MAX_HOLDS),
				 errhint("Commit between sends to many queues or partitions.")));

	lock = partition_lock(queue_id, partition);
	if (h != NULL)
	{
		LWLockAcquire(lock, LW_EXCLUSIVE);
		h->segments |= 1u << segment;
		LWLockRelease(lock);
		return;
	}
	{
		int64		floor = MqSequenceEnd(seq);	/* before taking the lock */

		LWLockAcquire(lock, LW_EXCLUSIVE);
		h = &mine->holds[mine->nholds];
		h->database = MyDatabaseId;
		h->queue_id = queue_id;
		h->partition = partition;
		h->segments = 1u << segment;
		h->log = log;
		h->offset = floor;
		mine->nholds++;
		LWLockRelease(lock);
	}
}

/* The next id: nextval, after MqHold. */
int64
MqNextId(Oid seq)
{
	return nextval_internal(seq, false);
}

/*
 * The lowest hold of (queue, partition) below end, or end: called with an
 * end read before (a sequence's, or what the partition's rows show).
 */
static int64
holds_below(int64 queue_id, int32 partition, int64 end)
{
	LWLock	   *lock;

	Assert(MqPreloaded());
	lock = partition_lock(queue_id, partition);
	LWLockAcquire(lock, LW_SHARED);
	for (int b = 0; b < MaxBackends; b++)
	{
		BackendHolds *bh = &all_holds[b];

		for (int i = 0; i < bh->nholds; i++)
			if (bh->holds[i].database == MyDatabaseId &&
				bh->holds[i].queue_id == queue_id &&
				bh->holds[i].partition == partition &&
				bh->holds[i].offset < end)
				end = bh->holds[i].offset;
	}
	LWLockRelease(lock);
	return end;
}

/*
 * The visible end of (queue, partition): every id below it belongs to a
 * send that has ended.  Compute it before the snapshot that reads below it.
 */
int64
MqVisibleEnd(int64 queue_id, int32 partition, Oid seq)
{
	/* the sequence first, before the holds */
	return holds_below(queue_id, partition, MqSequenceEnd(seq));
}

/* Whether a running sender may still write to segment of work queue_id. */
bool
MqHeldSegment(int64 queue_id, int segment)
{
	LWLock	   *lock;
	bool		held = false;

	if (all_holds == NULL)
		return true;
	lock = partition_lock(queue_id, 0);
	LWLockAcquire(lock, LW_SHARED);
	for (int b = 0; b < MaxBackends && !held; b++)
	{
		BackendHolds *bh = &all_holds[b];

		for (int i = 0; i < bh->nholds; i++)
			if (bh->holds[i].database == MyDatabaseId &&
				bh->holds[i].queue_id == queue_id &&
				bh->holds[i].partition == 0 &&
				(bh->holds[i].segments & (1u << segment)) != 0)
				held = true;
	}
	LWLockRelease(lock);
	return held;
}

/* ---- log offsets, assigned on the node that stores the row --------------- */

/*
 * The offset sequence of a partition on this node, per table and partition:
 * the leaf a row goes to.  An entry is valid while its sequence exists.
 */
typedef struct SeqKey
{
	Oid			relid;
	int32		partition;
} SeqKey;

typedef struct SeqEntry
{
	SeqKey		key;
	Oid			seq;
} SeqEntry;

static HTAB *seq_cache = NULL;

static SeqEntry *
seq_entry(Oid relid, int32 partition, bool *found)
{
	SeqKey		key;

	if (seq_cache == NULL)
	{
		HASHCTL		ctl;

		ctl.keysize = sizeof(SeqKey);
		ctl.entrysize = sizeof(SeqEntry);
		ctl.hcxt = TopMemoryContext;
		seq_cache = hash_create("mq offset sequences", 64, &ctl,
								HASH_ELEM | HASH_BLOBS | HASH_CONTEXT);
	}
	memset(&key, 0, sizeof(key));
	key.relid = relid;
	key.partition = partition;
	return hash_search(seq_cache, &key, HASH_ENTER, found);
}

/* The partition's sequence on this node, InvalidOid when there is none. */
static Oid
find_sequence(int64 queue_id, int32 partition)
{
	return get_relname_relid(psprintf("p_" INT64_FORMAT "_o%d", queue_id, partition),
							 get_namespace_oid("mq", false));
}

/*
 * Raise sequence seq so that its next value is above at_least; never
 * lower it.  Checked again under a lock that waits for the node's running
 * sends of the partition (they hold the sequence's RowExclusiveLock from
 * nextval), so that no nextval runs between the check and setval.
 */
static void
raise_sequence(Oid seq, int64 at_least)
{
	if (at_least < MqSequenceEnd(seq))
		return;
	LockRelationOid(seq, ShareRowExclusiveLock);
	if (at_least >= MqSequenceEnd(seq))
		DirectFunctionCall2(setval_oid, ObjectIdGetDatum(seq), Int64GetDatum(at_least));
	/* setval is not transactional: nothing to keep the lock for */
	UnlockRelationOid(seq, ShareRowExclusiveLock);
}

/*
 * A shard move (Citus) carries a partition's rows to another node, not its
 * sequence: that node's copy may be behind the rows, and would hand out
 * offsets below visible ones, or twice.  So the first send of a backend
 * through a table (a moved shard is a new table, with a new oid) compares
 * the partition's highest stored offset with the sequence and, when the
 * sequence is behind, raises it (setval never lowers it here: it is checked
 * again under a lock that waits for the node's running sends of the
 * partition, which hold the sequence's RowExclusiveLock from nextval).  On
 * one server the sequence is never behind: one read per backend, table and
 * partition.
 */
static void
reseed_if_behind(Relation rel, int32 partition, Oid seq)
{
	Oid			relid = RelationGetRelid(rel);
	Oid			parent = rel->rd_rel->relispartition ? get_partition_parent(relid, false) : relid;
	Oid			argtypes[1] = {INT4OID};
	Datum		values[1] = {Int32GetDatum(partition)};
	bool		isnull;
	int64		stored;
	int			ret;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	ret = SPI_execute_with_args(psprintf("SELECT pg_catalog.max(\"offset\") FROM %s"
										 " WHERE partition OPERATOR(pg_catalog.=) $1",
										 quote_qualified_identifier(get_namespace_name(get_rel_namespace(parent)),
																	get_rel_name(parent))),
								1, argtypes, values, NULL, true, 1);
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read the offsets of partition %d: %s", partition,
			 SPI_result_code_string(ret));
	stored = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	if (!isnull)
		raise_sequence(seq, stored);
}

/*
 * The partition's sequence for a row going to table relid (cached per
 * table and partition, while the sequence exists), raised above the
 * partition's stored offsets the first time (reseed_if_behind).
 */
static Oid
row_sequence(Relation rel, int64 queue_id, int32 partition, int segment)
{
	bool		found;
	SeqEntry   *e = seq_entry(RelationGetRelid(rel), partition, &found);
	Oid			seq;

	if (found && OidIsValid(e->seq) && SearchSysCacheExists1(RELOID, ObjectIdGetDatum(e->seq)))
		return e->seq;
	e->seq = InvalidOid;
	seq = find_sequence(queue_id, partition);
	if (!OidIsValid(seq))
	{
		hash_search(seq_cache, &e->key, HASH_REMOVE, NULL);
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("offset sequence of partition %d of queue %lld does not exist",
						partition, (long long) queue_id)));
	}
	reseed_if_behind(rel, partition, seq);
	e->seq = seq;
	return seq;
}

static int
column_of(Relation rel, const char *name)
{
	int			attnum = SPI_fnumber(RelationGetDescr(rel), name);

	if (attnum <= 0)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("table \"%s\" has no column \"%s\"", RelationGetRelationName(rel), name)));
	return attnum;
}

/*
 * mq._assign_offset() RETURNS trigger
 *	  BEFORE INSERT FOR EACH ROW on a partitioned queue's parent mq.p_<id>
 *	  (so on its leaves), with the
 *	  queue id as its one argument.  A row without an offset gets the next
 *	  one of its partition on this node: the hold first, then nextval (see
 *	  the banner), so the visible end computed here never passes it.  A row
 *	  that has an offset keeps it (rows copied with their offsets).  Errors: 39P01 not called as such a trigger; 55000 mq not
 *	  preloaded; 54000 too many partitions in one transaction (MqHold);
 *	  42704 the partition's sequence is missing.
 */
PG_FUNCTION_INFO_V1(mq_assign_offset);

Datum
mq_assign_offset(PG_FUNCTION_ARGS)
{
	TriggerData *td = (TriggerData *) fcinfo->context;
	Relation	rel;
	HeapTuple	tuple;
	int			offset_col;
	bool		isnull;
	int64		queue_id;
	int32		partition;
	int			segment;
	Oid			seq;
	Datum		offset;
	bool		offset_null = false;

	if (!CALLED_AS_TRIGGER(fcinfo) || !TRIGGER_FIRED_BEFORE(td->tg_event) ||
		!TRIGGER_FIRED_FOR_ROW(td->tg_event) || !TRIGGER_FIRED_BY_INSERT(td->tg_event) ||
		td->tg_trigger->tgnargs != 1)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("mq._assign_offset() must be a BEFORE INSERT FOR EACH ROW trigger with the queue id as argument")));
	rel = td->tg_relation;
	tuple = td->tg_trigtuple;
	offset_col = column_of(rel, "offset");
	(void) heap_getattr(tuple, offset_col, RelationGetDescr(rel), &isnull);
	if (!isnull)
		return PointerGetDatum(tuple);

	queue_id = pg_strtoint64(td->tg_trigger->tgargs[0]);
	partition = DatumGetInt32(heap_getattr(tuple, column_of(rel, "partition"),
										   RelationGetDescr(rel), &isnull));
	segment = DatumGetInt16(heap_getattr(tuple, column_of(rel, "segment"),
										 RelationGetDescr(rel), &isnull));
	if (segment < 0 || segment >= 32)
		ereport(ERROR,
				(errcode(ERRCODE_E_R_I_E_TRIGGER_PROTOCOL_VIOLATED),
				 errmsg("segment %d is out of range", segment)));
	MqRequirePreload("partitioned queues");
	seq = row_sequence(rel, queue_id, partition, segment);
	MqHold(queue_id, partition, segment, seq, true);
	offset = Int64GetDatum(MqNextId(seq));
	return PointerGetDatum(heap_modify_tuple_by_cols(tuple, RelationGetDescr(rel), 1,
													 &offset_col, &offset, &offset_null));
}

/*
 * mq._local_end(queue_id bigint, partition integer, visible boolean)
 *	  RETURNS bigint
 *	  The end of a partition as this node sees it, from this node's offset
 *	  sequence mq.p_<queue_id>_o<partition> and, when visible, the holds of
 *	  this node's running sends: with visible, every offset below the result
 *	  belongs to a send that has ended here (the visible end); otherwise one
 *	  past the last offset handed out.  On a Citus cluster the coordinator
 *	  calls it in a router query on mq.p_<id>_head, so that it runs on the
 *	  node holding the partition (partition.c); on one server it gives what
 *	  mq._partition_end does.  STRICT.  Errors: 42704 the sequence does not
 *	  exist on this node; 55000 visible without mq preloaded; 42501 (from
 *	  PostgreSQL) no SELECT on the sequence.
 */
PG_FUNCTION_INFO_V1(mq_local_end);

Datum
mq_local_end(PG_FUNCTION_ARGS)
{
	int64		queue_id = PG_GETARG_INT64(0);
	int32		partition = PG_GETARG_INT32(1);
	bool		visible = PG_GETARG_BOOL(2);
	Oid			seq = find_sequence(queue_id, partition);

	if (!OidIsValid(seq))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("offset sequence of partition %d of queue %lld does not exist on this node",
						partition, (long long) queue_id),
				 errhint("Run mq.citus_distribute() on the coordinator after adding nodes.")));
	if (!visible)
		PG_RETURN_INT64(MqSequenceEnd(seq));
	MqRequirePreload("partitioned queues");
	PG_RETURN_INT64(MqVisibleEnd(queue_id, partition, seq));
}

/*
 * mq._raise_offsets(queue_id bigint, partition integer, at_least bigint)
 *	  RETURNS bigint
 *	  Raises this node's offset sequence of the partition so that the next
 *	  offset it hands out is above at_least (never lowers it), waiting for
 *	  this node's running sends of the partition; returns the sequence's
 *	  end (one past its last value) afterwards.  mq.citus_distribute() runs
 *	  it on every worker, so that offsets continue above every offset
 *	  stored, recorded (high-water mark) or committed by a group wherever a
 *	  partition is later moved.  STRICT.  Errors: 42704 no such sequence on
 *	  this node; 42501 (from PostgreSQL) no UPDATE on it.
 */
PG_FUNCTION_INFO_V1(mq_raise_offsets);

Datum
mq_raise_offsets(PG_FUNCTION_ARGS)
{
	int64		queue_id = PG_GETARG_INT64(0);
	int32		partition = PG_GETARG_INT32(1);
	Oid			seq = find_sequence(queue_id, partition);

	if (!OidIsValid(seq))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("offset sequence of partition %d of queue %lld does not exist on this node",
						partition, (long long) queue_id)));
	raise_sequence(seq, PG_GETARG_INT64(2));
	PG_RETURN_INT64(MqSequenceEnd(seq));
}
