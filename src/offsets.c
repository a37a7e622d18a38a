/*-------------------------------------------------------------------------
 *
 * offsets.c
 *	  Offsets of partitioned queues: allocation, and the visible end of a
 *	  partition, which never passes an offset whose transaction is running.
 *
 * Offsets come from one sequence per partition, so they are handed out when
 * a message is sent, not when its transaction commits: the transaction that
 * took offset 10 may commit after the one that took 11.  A consumer that
 * read 11 and moved on would skip 10 for good.  So a consumer reads only
 * below the partition's visible end: the lowest offset still held by a
 * running transaction, or, when none is, one past the last offset handed
 * out.
 *
 * Shared state: every backend has a slot listing, per (queue, partition) it
 * sent to in its current transaction, the first offset it took there (its
 * "hold").  A hold is added when the offset is taken and removed at
 * XACT_EVENT_COMMIT or _ABORT, which run after the transaction's outcome is
 * visible to new snapshots.
 *
 * Locking: a (queue, partition) maps to one of MQ_OFFSET_LOCKS LWLocks.
 * Taking an offset (nextval) and recording the hold happen together under
 * it in exclusive mode; computing the visible end (scanning the holds and
 * reading the sequence's last value) happens under it in shared mode.  So a
 * reader either sees the hold of a running sender, or the sender took its
 * offset after the reader read the sequence.  The reader computes the end
 * before its query takes a snapshot, so every offset below the end belongs
 * to a transaction that had ended: committed (visible) or rolled back (a
 * gap, never filled).  A backend edits only its own slot, under the locks
 * of the partitions it touches.
 *
 * PREPARE TRANSACTION is refused for a transaction that took offsets: its
 * hold would have to outlive the backend.  After a crash shared memory
 * starts empty, which is right: no transaction survives a crash.
 *
 * Needs shared_preload_libraries = 'mq'; otherwise partitioned queues raise
 * 55000.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "common/hashfn.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "storage/backendid.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "commands/sequence.h"
#include "utils/fmgrprotos.h"

#include "offsets.h"
#include "shmem.h"

#define MQ_OFFSET_LOCKS 128
/* (queue, partition) pairs one transaction may send to */
#define MQ_MAX_HOLDS 256

typedef struct OffsetHold
{
	Oid			database;		/* queue ids are per database */
	int32		queue_id;
	int32		partition;
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
partition_lock(int32 queue_id, int32 partition)
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
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot PREPARE a transaction that sent to a partitioned queue")));
	if (event != XACT_EVENT_COMMIT && event != XACT_EVENT_ABORT &&
		event != XACT_EVENT_PARALLEL_COMMIT && event != XACT_EVENT_PARALLEL_ABORT)
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

/* Take the next offset of a partition and hold it until this transaction ends. */
int64
MqOffsetAllocate(int32 queue_id, int32 partition, Oid seq)
{
	BackendHolds *mine;
	LWLock	   *lock;
	int64		offset;
	bool		held = false;

	MqRequirePreload("partitioned queues");
	mine = my_holds();
	lock = partition_lock(queue_id, partition);
	for (int i = 0; i < mine->nholds; i++)
		if (mine->holds[i].queue_id == queue_id && mine->holds[i].partition == partition)
			held = true;		/* our first offset there is the lower one;
								 * a backend is in one database */
	if (!held && mine->nholds >= MQ_MAX_HOLDS)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("cannot send to more than %d partitions in one transaction",
						MQ_MAX_HOLDS),
				 errhint("Commit between sends to many partitioned queues.")));

	LWLockAcquire(lock, LW_EXCLUSIVE);
	offset = nextval_internal(seq, false);
	if (!held)
	{
		OffsetHold *h = &mine->holds[mine->nholds];

		h->database = MyDatabaseId;
		h->queue_id = queue_id;
		h->partition = partition;
		h->offset = offset;
		mine->nholds++;
	}
	LWLockRelease(lock);
	return offset;
}

/*
 * The partition's visible end: every offset below it belongs to a
 * transaction that has ended.  Compute it before taking the snapshot that
 * reads below it.
 */
int64
MqOffsetVisibleEnd(int32 queue_id, int32 partition, Oid seq)
{
	LWLock	   *lock;
	int64		end = PG_INT64_MAX;
	Datum		last;
	LOCAL_FCINFO(fcinfo, 1);

	MqRequirePreload("partitioned queues");
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
	/* pg_sequence_last_value() returns NULL before the first nextval */
	InitFunctionCallInfoData(*fcinfo, NULL, 1, InvalidOid, NULL, NULL);
	fcinfo->args[0].value = ObjectIdGetDatum(seq);
	fcinfo->args[0].isnull = false;
	last = pg_sequence_last_value(fcinfo);
	LWLockRelease(lock);

	if (!fcinfo->isnull && DatumGetInt64(last) + 1 < end)
		end = DatumGetInt64(last) + 1;
	else if (fcinfo->isnull && end == PG_INT64_MAX)
		end = 1;
	return end;
}
