/*-------------------------------------------------------------------------
 *
 * state.c
 *	  Per work queue, in shared memory: the hints that let a read go
 *	  straight to the messages it can claim (docs/concepts.md#storage).
 *
 * A queue keeps its messages in segment tables (segment.c), ordered by
 * msg_id.  Each segment has a ticket: every msg_id below it has been given
 * to some reader, which looked at exactly that range (an index range scan
 * of its primary key).  So a read claims from a range nobody else is
 * looking at, without stepping over the messages that others hold, that
 * are in flight, or that were acked and left dead tuples behind; and
 * concurrent readers never queue on one another's row locks.  Readers take
 * tickets up to the msg_id sequence's last value.
 *
 * A message behind the tickets can be, or become, claimable: one whose
 * send committed after a reader looked at its id, a claim whose
 * transaction aborts, a key unblocked by the removal of its head, a claim
 * whose visibility timeout lapses, a consumer released for liveness.  The
 * first three are put on the queue's ring (MQ_RING ranges of msg_ids) by
 * the transaction callbacks below, at commit or abort, after the change is
 * visible: a sender whose ids the tickets passed rings them itself, so an
 * open transaction that sent holds back no other message.  The sweep
 * (storage.c) finds the others, and anything the ring could not take, by
 * scanning the part of a segment behind its ticket, when a lapse is due
 * and at least every MQ_SWEEP_PERIOD_MS.  Messages sent with a delay or
 * waiting out a backoff are in the delayed table; earliest_due says when
 * to look there.  It is lowered when the change that put a message there
 * commits, or when a claim of a due one aborts, not before: a reader that
 * looked before would not see the message, yet would take the hint as
 * looked at (a release of claims asks for a sweep in the same way).
 *
 * The entry also counts the queue's messages by state, for mq.metrics: a
 * transaction's changes are added when it commits, to counts that start
 * from one count of the tables (see "Counts" below).
 *
 * All of it is a hint that can be rebuilt from the tables: a new entry
 * starts every ticket at its segment's first msg_id and sweeps at once, so
 * after a restart, or for a queue that found no free entry (it then works
 * as without preloading), reads are correct, only slower at first.
 *
 * Locking: one LWLock.  Shared mode for every use of an entry, which is
 * short and never spans a statement; exclusive to add or remove entries,
 * so that an entry cannot be removed and reused for another queue while
 * anyone is using it, and to start a count.  The entry's generation tells a backend whether the
 * entry it remembers is still its queue's.  Tickets are atomics; the rest
 * of an entry is guarded by its spinlock.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/lwlock.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/hsearch.h"
#include "utils/memutils.h"
#include "utils/snapmgr.h"

#include "segment.h"
#include "shmem.h"
#include "state.h"
#include "wait.h"

#define MQ_QUEUE_STATES 1024
#define MQ_SWEEP_PERIOD_MS 5000

/*
 * HASH_BLOBS compares every byte of a key and key_of returns it by value,
 * which need not copy padding: the key has none.
 */
typedef struct StateKey
{
	int64		queue_id;
	Oid			database;
	uint32		unused;			/* zero */
} StateKey;

typedef struct SegmentHint
{
	int32		epoch;			/* the segment's catalog epoch these are for */
	bool		closed;			/* sealed and no sender left: max_id final */
	int64		max_id;
	TimestampTz next_sweep;
	pg_atomic_uint64 ticket;	/* next msg_id to give to a reader */
} SegmentHint;

/*
 * The snapshot a count of the queue's tables was made with: a transaction
 * it saw is in that count, so its changes must not be added again.
 */
#define MQ_COUNT_XIDS 256
typedef struct CountSnapshot
{
	uint64		count_id;		/* 0: none */
	int			pid;			/* backend counting, until the count is in */
	TransactionId xmin;
	TransactionId xmax;
	int			xcnt;
	TransactionId xip[MQ_COUNT_XIDS];
} CountSnapshot;

typedef struct QueueState
{
	StateKey	key;
	uint64		generation;
	Oid			incarnation;	/* the queue's first segment table: a queue
								 * id is reused when mq is installed again */
	slock_t		mutex;
	TimestampTz earliest_due;	/* no delayed message is due before */
	uint64		due_changes;	/* bumped by MqStateNoteDue */
	int			ring_len;
	bool		counted;		/* counts are valid */
	int64		counts[MQ_COUNTS];
	CountSnapshot count_snap;	/* of the count the counts started from */
	SegmentHint seg[MQ_MAX_SEGMENTS];
	MqRingEntry ring[MQ_RING];
} QueueState;

typedef struct StateShared
{
	LWLock	   *lock;
	uint64		next_generation;	/* under lock, exclusive */
	uint64		next_count_id;	/* under lock, exclusive */
} StateShared;

static StateShared *state_shared = NULL;
static HTAB *states = NULL;

void
MqStateShmemRequest(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(StateShared)));
	RequestAddinShmemSpace(hash_estimate_size(MQ_QUEUE_STATES, sizeof(QueueState)));
	RequestNamedLWLockTranche("mq queue states", 1);
}

void
MqStateShmemStartup(void)
{
	HASHCTL		info;
	bool		found;

	state_shared = ShmemInitStruct("mq queue state", sizeof(StateShared), &found);
	if (!found)
	{
		state_shared->lock = &(GetNamedLWLockTranche("mq queue states"))->lock;
		state_shared->next_generation = 1;
		state_shared->next_count_id = 1;
	}
	info.keysize = sizeof(StateKey);
	info.entrysize = sizeof(QueueState);
	states = ShmemInitHash("mq queue states", MQ_QUEUE_STATES, MQ_QUEUE_STATES,
						   &info, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
}

static StateKey
key_of(int64 queue_id)
{
	StateKey	key;

	memset(&key, 0, sizeof(key));
	key.database = MyDatabaseId;
	key.queue_id = queue_id;
	return key;
}

static void
hint_reset(SegmentHint *h, const MqSegment *s);

/* Make the entry new for the queue q (new, or a queue id used before). */
static void
state_reset(QueueState *st, MqQueue *q)
{
	st->incarnation = q->segments[0].relid;
	st->earliest_due = 0;		/* look in the delayed table at once */
	st->due_changes = 0;
	st->ring_len = 0;
	st->counted = false;
	st->count_snap.count_id = 0;
	for (int i = 0; i < MQ_MAX_SEGMENTS; i++)
	{
		pg_atomic_write_u64(&st->seg[i].ticket, 0);
		st->seg[i].epoch = -1;
	}
	for (int i = 0; i < q->nsegments; i++)
		hint_reset(&st->seg[i], &q->segments[i]);
}

static void
hint_reset(SegmentHint *h, const MqSegment *s)
{
	h->epoch = s->epoch;
	h->closed = false;
	h->max_id = PG_INT64_MAX;
	h->next_sweep = 0;			/* sweep at once: messages may be behind */
	pg_atomic_write_u64(&h->ticket, (uint64) s->lo);
}

/*
 * The queue's entry, with the lock held in shared mode, or NULL (lock not
 * held) when the entry the queue remembers is gone.  The segment hints are
 * brought to the catalog's epochs.
 */
static QueueState *
lock_state(MqQueue *q)
{
	QueueState *st = (QueueState *) q->state;

	if (st == NULL)
		return NULL;
	LWLockAcquire(state_shared->lock, LW_SHARED);
	if (st->generation != q->state_generation)
	{
		LWLockRelease(state_shared->lock);
		q->state = NULL;
		return NULL;
	}
	SpinLockAcquire(&st->mutex);
	if (st->incarnation != q->segments[0].relid)
		state_reset(st, q);
	for (int i = 0; i < q->nsegments; i++)
		if (q->segments[i].state != MQ_SEG_FREE && q->segments[i].epoch > st->seg[i].epoch)
			hint_reset(&st->seg[i], &q->segments[i]);
	SpinLockRelease(&st->mutex);
	return st;
}

static void
unlock_state(void)
{
	LWLockRelease(state_shared->lock);
}

/*
 * Find or make the queue's entry; false when mq is not preloaded or every
 * entry is taken (the queue then works without hints).
 */
bool
MqStateAttach(MqQueue *q)
{
	StateKey	key = key_of(q->queue_id);
	QueueState *st;
	bool		found;

	if (states == NULL || q->partitions > 0)
		return false;
	if (q->state != NULL)
	{
		if (lock_state(q) != NULL)
		{
			unlock_state();
			return true;
		}
	}
	LWLockAcquire(state_shared->lock, LW_SHARED);
	st = hash_search(states, &key, HASH_FIND, NULL);
	if (st != NULL)
	{
		q->state = st;
		q->state_generation = st->generation;
		LWLockRelease(state_shared->lock);
		if (lock_state(q) != NULL)
			unlock_state();
		return q->state != NULL;
	}
	LWLockRelease(state_shared->lock);

	LWLockAcquire(state_shared->lock, LW_EXCLUSIVE);
	st = hash_search(states, &key, HASH_ENTER_NULL, &found);
	if (st != NULL && !found)
	{
		SpinLockInit(&st->mutex);
		st->generation = state_shared->next_generation++;
		for (int i = 0; i < MQ_MAX_SEGMENTS; i++)
			pg_atomic_init_u64(&st->seg[i].ticket, 0);
		state_reset(st, q);
	}
	if (st != NULL)
	{
		q->state = st;
		q->state_generation = st->generation;
	}
	LWLockRelease(state_shared->lock);
	return st != NULL;
}

/* Free the entry of a queue being dropped. */
void
MqStateForget(int64 queue_id)
{
	StateKey	key = key_of(queue_id);
	QueueState *st;

	if (states == NULL)
		return;
	LWLockAcquire(state_shared->lock, LW_EXCLUSIVE);
	st = hash_search(states, &key, HASH_FIND, NULL);
	if (st != NULL)
	{
		st->generation = 0;		/* backends that remember it will see it gone */
		(void) hash_search(states, &key, HASH_REMOVE, NULL);
	}
	LWLockRelease(state_shared->lock);
}

/*
 * Take up to n msg_ids of a segment, below bound, for this reader alone.
 * False when there is none left below bound.
 */
bool
MqStateTakeTickets(MqQueue *q, int segment, int64 bound, int64 n, MqTickets *t)
{
	QueueState *st = lock_state(q);
	SegmentHint *h;
	uint64		from;

	if (st == NULL)
		return false;
	h = &st->seg[segment];
	from = pg_atomic_read_u64(&h->ticket);
	for (;;)
	{
		uint64		to;

		if ((int64) from >= bound)
		{
			unlock_state();
			return false;
		}
		to = (bound - (int64) from > n) ? from + n : (uint64) bound;
		if (pg_atomic_compare_exchange_u64(&h->ticket, &from, to))
		{
			t->segment = segment;
			t->epoch = h->epoch;
			t->from = (int64) from;
			t->to = (int64) to;
			break;
		}
	}
	unlock_state();
	return true;
}

static void
lower_ticket(SegmentHint *h, int64 from)
{
	uint64		cur = pg_atomic_read_u64(&h->ticket);

	while ((int64) cur > from &&
		   !pg_atomic_compare_exchange_u64(&h->ticket, &cur, (uint64) from))
		;
}

/*
 * Give msg_ids from `from` up back to the segment (lowering its ticket):
 * what a reader took but did not look at.  Lowering is always safe: at
 * worst, readers look at some ids again.
 */
void
MqStateReturnTickets(MqQueue *q, int segment, int32 epoch, int64 from)
{
	QueueState *st = lock_state(q);

	if (st == NULL)
		return;
	if (st->seg[segment].epoch == epoch)
		lower_ticket(&st->seg[segment], from);
	unlock_state();
}

/* The segment's ticket: ids below it have been given to readers. */
int64
MqStateTicket(MqQueue *q, int segment)
{
	QueueState *st = lock_state(q);
	int64		ticket;

	if (st == NULL)
		return q->segments[segment].lo;
	ticket = (int64) pg_atomic_read_u64(&st->seg[segment].ticket);
	unlock_state();
	return ticket;
}

/* Whether a sealed segment takes no more sends; then *max_id is final. */
bool
MqStateSegmentClosed(MqQueue *q, int segment, int64 *max_id)
{
	QueueState *st = lock_state(q);
	bool		closed = false;

	if (st == NULL)
		return false;
	SpinLockAcquire(&st->mutex);
	if (st->seg[segment].closed)
	{
		closed = true;
		*max_id = st->seg[segment].max_id;
	}
	SpinLockRelease(&st->mutex);
	unlock_state();
	return closed;
}

void
MqStateCloseSegment(MqQueue *q, int segment, int32 epoch, int64 max_id)
{
	QueueState *st = lock_state(q);

	if (st == NULL)
		return;
	SpinLockAcquire(&st->mutex);
	if (st->seg[segment].epoch == epoch)
	{
		st->seg[segment].closed = true;
		st->seg[segment].max_id = max_id;
	}
	SpinLockRelease(&st->mutex);
	unlock_state();
}

/* Take up to max entries off the ring. */
int
MqStatePopRing(MqQueue *q, MqRingEntry *out, int max)
{
	QueueState *st;
	int			n = 0;

	if (q->state == NULL || ((QueueState *) q->state)->ring_len == 0)
		return 0;				/* unlocked peek: an empty ring is common */
	st = lock_state(q);
	if (st == NULL)
		return 0;
	SpinLockAcquire(&st->mutex);
	while (n < max && st->ring_len > 0)
		out[n++] = st->ring[--st->ring_len];
	SpinLockRelease(&st->mutex);
	unlock_state();
	return n;
}

/* Copy the ring without taking anything off it; returns the entries. */
int
MqStatePeekRing(MqQueue *q, MqRingEntry *out, int max)
{
	QueueState *st = lock_state(q);
	int			n;

	if (st == NULL)
		return 0;
	SpinLockAcquire(&st->mutex);
	n = Min(max, st->ring_len);
	memcpy(out, st->ring, sizeof(MqRingEntry) * n);
	SpinLockRelease(&st->mutex);
	unlock_state();
	return n;
}

/*
 * Put messages on the ring; when the ring is full, lower the ticket of
 * their segment instead (the delayed table needs neither: reads find due
 * messages there by time).  Returns false when the queue has no entry.
 */
static bool
push_ring(QueueState *st, const MqRingEntry *e)
{
	bool		pushed = false;

	if (e->segment == MQ_DELAYED_SEGMENT || e->from >= e->to)
		return true;
	SpinLockAcquire(&st->mutex);
	if (st->seg[e->segment].epoch == e->epoch)
	{
		if (st->ring_len < MQ_RING)
		{
			st->ring[st->ring_len++] = *e;
			pushed = true;
		}
	}
	else
		pushed = true;			/* the segment was emptied since: nothing to do */
	SpinLockRelease(&st->mutex);
	if (!pushed)
		lower_ticket(&st->seg[e->segment], e->from);
	return true;
}

bool
MqStatePushRing(MqQueue *q, const MqRingEntry *e)
{
	QueueState *st = lock_state(q);

	if (st == NULL)
		return false;
	push_ring(st, e);
	unlock_state();
	return true;
}

/*
 * As MqStatePushRing, by queue id, for the transaction callbacks.  With
 * only_passed, only the part of the range below the segment's ticket: the
 * rest the tickets will reach.
 */
static void
push_ring_by_id(int64 queue_id, const MqRingEntry *e, bool only_passed)
{
	StateKey	key = key_of(queue_id);
	QueueState *st;

	if (states == NULL)
		return;
	LWLockAcquire(state_shared->lock, LW_SHARED);
	st = hash_search(states, &key, HASH_FIND, NULL);
	if (st != NULL)
	{
		MqRingEntry r = *e;

		if (only_passed)
		{
			int64		ticket = (int64) pg_atomic_read_u64(&st->seg[r.segment].ticket);

			if (ticket < r.to)
				r.to = ticket;
		}
		push_ring(st, &r);
	}
	LWLockRelease(state_shared->lock);
}

/* When the next delayed message may be due; *changes goes with it. */
TimestampTz
MqStateEarliestDue(MqQueue *q, uint64 *changes)
{
	QueueState *st = lock_state(q);
	TimestampTz due;

	if (st == NULL)
		return 0;
	SpinLockAcquire(&st->mutex);
	due = st->earliest_due;
	*changes = st->due_changes;
	SpinLockRelease(&st->mutex);
	unlock_state();
	return due;
}

/*
 * After looking: no delayed message is due before `due`, unless a message
 * was noted due since the caller read `changes` (then that note stands).
 * Looked at again after MQ_SWEEP_PERIOD_MS at the latest, in case a note
 * was lost with a queue's entry.
 */
void
MqStateSetEarliestDue(MqQueue *q, TimestampTz due, uint64 changes)
{
	QueueState *st = lock_state(q);
	TimestampTz limit = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), MQ_SWEEP_PERIOD_MS);

	if (st == NULL)
		return;
	SpinLockAcquire(&st->mutex);
	if (st->due_changes == changes)
		st->earliest_due = Min(due, limit);
	SpinLockRelease(&st->mutex);
	unlock_state();
}

/*
 * A message of queue_id's delayed table is due at `due`, now that the
 * change that put it there is visible (see MqStateNoteDue).
 */
static void
due_now(int64 queue_id, TimestampTz due)
{
	StateKey	key = key_of(queue_id);
	QueueState *st;

	if (states == NULL)
		return;
	LWLockAcquire(state_shared->lock, LW_SHARED);
	st = hash_search(states, &key, HASH_FIND, NULL);
	if (st != NULL)
	{
		SpinLockAcquire(&st->mutex);
		if (due < st->earliest_due)
			st->earliest_due = due;
		st->due_changes++;
		SpinLockRelease(&st->mutex);
	}
	LWLockRelease(state_shared->lock);
}

/* Sweep every segment of queue_id at the next read (see MqStateSweepSoon). */
static void
sweep_soon_now(int64 queue_id)
{
	StateKey	key = key_of(queue_id);
	QueueState *st;

	if (states == NULL)
		return;
	LWLockAcquire(state_shared->lock, LW_SHARED);
	st = hash_search(states, &key, HASH_FIND, NULL);
	if (st != NULL)
	{
		SpinLockAcquire(&st->mutex);
		for (int i = 0; i < MQ_MAX_SEGMENTS; i++)
			st->seg[i].next_sweep = 0;
		SpinLockRelease(&st->mutex);
	}
	LWLockRelease(state_shared->lock);
}

/* Whether the segment needs a sweep now; if so, it is this caller's. */
bool
MqStateSweepDue(MqQueue *q, int segment, TimestampTz now)
{
	QueueState *st = lock_state(q);
	bool		due = false;

	if (st == NULL)
		return false;
	SpinLockAcquire(&st->mutex);
	if (st->seg[segment].next_sweep <= now)
	{
		due = true;
		/* others go on without waiting for this sweep */
		st->seg[segment].next_sweep = TimestampTzPlusMilliseconds(now, MQ_SWEEP_PERIOD_MS);
	}
	SpinLockRelease(&st->mutex);
	unlock_state();
	return due;
}

/* The sweep found the next lapse at `next` (0: none). */
void
MqStateSweepDone(MqQueue *q, int segment, TimestampTz next)
{
	QueueState *st = lock_state(q);
	TimestampTz period;

	if (st == NULL)
		return;
	period = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), MQ_SWEEP_PERIOD_MS);
	SpinLockAcquire(&st->mutex);
	st->seg[segment].next_sweep = (next != 0 && next < period) ? next : period;
	SpinLockRelease(&st->mutex);
	unlock_state();
}

/* A claim in the segment lapses at vt unless acked or extended. */
void
MqStateNoteLapse(MqQueue *q, int segment, TimestampTz vt)
{
	QueueState *st = lock_state(q);

	if (st == NULL)
		return;
	SpinLockAcquire(&st->mutex);
	if (vt < st->seg[segment].next_sweep)
		st->seg[segment].next_sweep = vt;
	SpinLockRelease(&st->mutex);
	unlock_state();
}

/*
 * When a message may next become claimable by time alone: the earliest
 * due delayed message or the next sweep.  A waiting read sleeps until then
 * at most.  0 when the queue has no entry (the caller then polls).
 */
TimestampTz
MqStateNextTimedEvent(MqQueue *q)
{
	QueueState *st = lock_state(q);
	TimestampTz next;

	if (st == NULL)
		return 0;
	SpinLockAcquire(&st->mutex);
	next = st->earliest_due;
	for (int i = 0; i < q->nsegments; i++)
		if (q->segments[i].state != MQ_SEG_FREE && st->seg[i].next_sweep < next)
			next = st->seg[i].next_sweep;
	SpinLockRelease(&st->mutex);
	unlock_state();
	return next;
}

/* ------------------------------------------------------------------------
 * Counts by state (mq.metrics).  A transaction's changes are added when it
 * commits; the counts start from one count of the tables, made with a
 * snapshot that is kept: a committing transaction that snapshot saw is
 * already in the count.  Taking the snapshot and installing it happen
 * under the lock in exclusive mode, so no change is added in between.
 */

static int64 counting_queue = 0;	/* whose count this backend began */

/* The queue's counts by state; false when they are not known yet. */
bool
MqStateCounters(MqQueue *q, int64 *counts)
{
	QueueState *st = lock_state(q);
	bool		counted;

	if (st == NULL)
		return false;
	SpinLockAcquire(&st->mutex);
	counted = st->counted;
	for (int i = 0; i < MQ_COUNTS; i++)
		counts[i] = Max(st->counts[i], 0);
	SpinLockRelease(&st->mutex);
	unlock_state();
	return counted;
}

/*
 * Start the count the counts will start from: *snap is the snapshot to
 * count with (registered; the caller unregisters it).  Returns the count's
 * id for MqStateCountEnd, or 0 when this count cannot be kept (no entry,
 * another backend counting, too many transactions running); *snap is then
 * the latest snapshot all the same.
 */
uint64
MqStateCountBegin(MqQueue *q, Snapshot *snap)
{
	QueueState *st = lock_state(q);
	CountSnapshot *cs;
	uint64		id = 0;

	if (st == NULL)
	{
		*snap = RegisterSnapshot(GetLatestSnapshot());
		return 0;
	}
	unlock_state();
	LWLockAcquire(state_shared->lock, LW_EXCLUSIVE);
	*snap = RegisterSnapshot(GetLatestSnapshot());
	cs = &st->count_snap;
	if (st->generation == q->state_generation && !st->counted &&
		(cs->pid == 0 || cs->pid == MyProcPid || BackendPidGetProc(cs->pid) == NULL) &&
		(*snap)->xcnt <= MQ_COUNT_XIDS)
	{
		id = state_shared->next_count_id++;
		SpinLockAcquire(&st->mutex);
		memset(st->counts, 0, sizeof(st->counts));
		cs->count_id = id;
		cs->pid = MyProcPid;
		cs->xmin = (*snap)->xmin;
		cs->xmax = (*snap)->xmax;
		cs->xcnt = (*snap)->xcnt;
		memcpy(cs->xip, (*snap)->xip, sizeof(TransactionId) * cs->xcnt);
		SpinLockRelease(&st->mutex);
		counting_queue = q->queue_id;
	}
	LWLockRelease(state_shared->lock);
	return id;
}

/* A count this backend began and an error interrupted: let others count. */
static void
abandon_count(void)
{
	StateKey	key = key_of(counting_queue);
	QueueState *st;

	if (counting_queue == 0 || states == NULL)
		return;
	LWLockAcquire(state_shared->lock, LW_SHARED);
	st = hash_search(states, &key, HASH_FIND, NULL);
	if (st != NULL)
	{
		SpinLockAcquire(&st->mutex);
		if (st->count_snap.pid == MyProcPid)
			st->count_snap.pid = 0;
		SpinLockRelease(&st->mutex);
	}
	LWLockRelease(state_shared->lock);
	counting_queue = 0;
}

/* The count made with MqStateCountBegin's snapshot: the counts are valid. */
void
MqStateCountEnd(MqQueue *q, uint64 count_id, const int64 *counts)
{
	QueueState *st = lock_state(q);

	if (st == NULL)
		return;
	SpinLockAcquire(&st->mutex);
	if (st->count_snap.count_id == count_id)
	{
		for (int i = 0; i < MQ_COUNTS; i++)
			st->counts[i] += counts[i];
		st->counted = true;
		st->count_snap.pid = 0;
	}
	SpinLockRelease(&st->mutex);
	unlock_state();
	counting_queue = 0;
}

/*
 * Whether the count's snapshot saw transaction xid as committed.  Past a
 * billion transactions later none it saw can still be committing, and the
 * snapshot is dropped before xids wrap around.
 */
static bool
seen_by_count(CountSnapshot *cs, TransactionId xid)
{
	if (cs->count_id == 0 || !TransactionIdIsNormal(xid))
		return false;
	if ((int32) (xid - cs->xmax) > (1 << 30))
	{
		cs->count_id = 0;
		return false;
	}
	if (TransactionIdPrecedes(xid, cs->xmin))
		return true;
	if (TransactionIdFollowsOrEquals(xid, cs->xmax))
		return false;
	for (int i = 0; i < cs->xcnt; i++)
		if (TransactionIdEquals(cs->xip[i], xid))
			return false;
	return true;
}

/* A transaction that wrote as xid commits these changes. */
static void
add_counts(int64 queue_id, TransactionId xid, const int64 *delta)
{
	StateKey	key = key_of(queue_id);
	QueueState *st;

	if (states == NULL)
		return;
	LWLockAcquire(state_shared->lock, LW_SHARED);
	st = hash_search(states, &key, HASH_FIND, NULL);
	if (st != NULL)
	{
		SpinLockAcquire(&st->mutex);
		if (!seen_by_count(&st->count_snap, xid))
			for (int i = 0; i < MQ_COUNTS; i++)
				st->counts[i] += delta[i];
		SpinLockRelease(&st->mutex);
	}
	LWLockRelease(state_shared->lock);
}

/* ------------------------------------------------------------------------
 * Transaction bookkeeping.  Lists live in TopTransactionContext and are
 * reset when the transaction ends.
 */

typedef enum NoteKind
{
	NOTE_CLAIM,					/* claimed: ring at abort */
	NOTE_UNBLOCK,				/* unblocked: ring at commit */
	NOTE_SENT,					/* sent: ring at commit what tickets passed */
	NOTE_CLAIM_DUE,				/* claimed in the delayed table: due at abort */
	NOTE_DUE,					/* into the delayed table: due at commit */
	NOTE_SWEEP					/* claims released: sweep after commit */
} NoteKind;

typedef struct Noted
{
	NoteKind	kind;
	int64		queue_id;
	int			level;			/* subtransaction nesting level */
	MqRingEntry entry;			/* NOTE_CLAIM, _UNBLOCK, _SENT */
	TimestampTz due;			/* NOTE_DUE */
} Noted;

static List *notes = NIL;		/* of this transaction */

/* count changes of this transaction, per queue and subtransaction level */
typedef struct Delta
{
	int64		queue_id;
	int			level;
	int64		d[MQ_COUNTS];
} Delta;

static List *deltas = NIL;
static TransactionId deltas_xid = InvalidTransactionId;
static bool pending_valid = false;
static int64 pending_queue;
static MqTickets pending;		/* tickets taken, claim not done */

/* Note msg_ids [from, to), merged with the last note when they follow it. */
static void
note(NoteKind kind, MqQueue *q, int segment, int64 from, int64 to)
{
	MemoryContext old;
	Noted	   *n;
	int			level = GetCurrentTransactionNestLevel();
	int32		epoch = q->segments[segment].epoch;

	if (q->state == NULL || segment == MQ_DELAYED_SEGMENT)
		return;
	if (notes != NIL)
	{
		n = llast(notes);
		if (n->kind == kind && n->queue_id == q->queue_id && n->level == level &&
			n->entry.segment == segment && n->entry.epoch == epoch && n->entry.to == from)
		{
			n->entry.to = to;
			return;
		}
	}
	old = MemoryContextSwitchTo(TopTransactionContext);
	n = palloc0(sizeof(Noted));
	n->kind = kind;
	n->queue_id = q->queue_id;
	n->level = level;
	n->entry.segment = segment;
	n->entry.epoch = epoch;
	n->entry.from = from;
	n->entry.to = to;
	notes = lappend(notes, n);
	MemoryContextSwitchTo(old);
}

/*
 * Note something about queue_id's delayed table or sweeps (kind NOTE_DUE,
 * NOTE_CLAIM_DUE or NOTE_SWEEP), merged with the last note when it is the
 * same kind for the same queue.
 */
static void
note_queue(NoteKind kind, int64 queue_id, TimestampTz due)
{
	MemoryContext old;
	Noted	   *n;
	int			level = GetCurrentTransactionNestLevel();

	if (states == NULL)
		return;
	if (notes != NIL)
	{
		n = llast(notes);
		if (n->kind == kind && n->queue_id == queue_id && n->level == level)
		{
			n->due = Min(n->due, due);
			return;
		}
	}
	old = MemoryContextSwitchTo(TopTransactionContext);
	n = palloc0(sizeof(Noted));
	n->kind = kind;
	n->queue_id = queue_id;
	n->level = level;
	n->due = due;
	notes = lappend(notes, n);
	MemoryContextSwitchTo(old);
}

/* This transaction changes the count `what` of a work queue by delta. */
void
MqStateCount(int64 queue_id, MqCount what, int64 delta)
{
	int			level = GetCurrentTransactionNestLevel();
	ListCell   *lc;
	Delta	   *d = NULL;

	if (states == NULL || delta == 0)
		return;
	deltas_xid = GetTopTransactionIdIfAny();	/* the change wrote: it has one */
	foreach(lc, deltas)
	{
		Delta	   *e = lfirst(lc);

		if (e->queue_id == queue_id && e->level == level)
			d = e;
	}
	if (d == NULL)
	{
		MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

		d = palloc0(sizeof(Delta));
		d->queue_id = queue_id;
		d->level = level;
		deltas = lappend(deltas, d);
		MemoryContextSwitchTo(old);
	}
	d->d[what] += delta;
}

/* Deltas at level >= level: applied (commit), dropped, or handed up. */
static void
end_deltas(int level, bool commit, bool commit_sub)
{
	List	   *kept = NIL;
	ListCell   *lc;
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

	foreach(lc, deltas)
	{
		Delta	   *e = lfirst(lc);

		if (e->level < level)
			kept = lappend(kept, e);
		else if (commit_sub)
		{
			e->level = level - 1;	/* may now share a level: sums still add up */
			kept = lappend(kept, e);
		}
		else if (commit)
			add_counts(e->queue_id, deltas_xid, e->d);
	}
	MemoryContextSwitchTo(old);
	deltas = kept;
}

/*
 * A message claimed by this transaction: read again if it aborts.  One of
 * the delayed table was due (the abort makes it due again), but this
 * transaction's own look at the delayed table saw its claim's later vt.
 */
void
MqStateNoteClaim(MqQueue *q, int segment, int64 msg_id)
{
	if (segment == MQ_DELAYED_SEGMENT)
		note_queue(NOTE_CLAIM_DUE, q->queue_id, 0);
	else
		note(NOTE_CLAIM, q, segment, msg_id, msg_id + 1);
}

/*
 * A message of queue_id's delayed table becomes due at `due` (a delayed
 * send, a nack, a dead letter, an unblocked key, a relocation, released
 * claims) when this transaction commits.  Not before: a reader that looked
 * at the delayed table before the commit would not see the message, yet
 * would take the hint as looked at and put off the next look.
 */
void
MqStateNoteDue(int64 queue_id, TimestampTz due)
{
	note_queue(NOTE_DUE, queue_id, due);
}

/*
 * Sweep every segment of queue_id at the next read once this transaction
 * commits (it released claims); as for MqStateNoteDue, a sweep before the
 * commit would not see them.
 */
void
MqStateSweepSoon(int64 queue_id)
{
	note_queue(NOTE_SWEEP, queue_id, 0);
}

/* A message to read again once this transaction commits (an unblocked key). */
void
MqStateRingAtCommit(MqQueue *q, int segment, int64 msg_id)
{
	note(NOTE_UNBLOCK, q, segment, msg_id, msg_id + 1);
}

/* msg_ids [from, to) sent: at commit, ring those the tickets passed. */
void
MqStateNoteSent(MqQueue *q, int segment, int64 from, int64 to)
{
	note(NOTE_SENT, q, segment, from, to);
}

/* Tickets taken whose range is not looked at yet: given back on error. */
void
MqStateNotePending(MqQueue *q, const MqTickets *t)
{
	pending_valid = true;
	pending_queue = q->queue_id;
	pending = *t;
}

void
MqStateClearPending(void)
{
	pending_valid = false;
}

static void
return_pending(void)
{
	StateKey	key;
	QueueState *st;

	if (!pending_valid)
		return;
	pending_valid = false;
	if (states == NULL)
		return;
	key = key_of(pending_queue);
	LWLockAcquire(state_shared->lock, LW_SHARED);
	st = hash_search(states, &key, HASH_FIND, NULL);
	if (st != NULL && st->seg[pending.segment].epoch == pending.epoch)
		lower_ticket(&st->seg[pending.segment], pending.from);
	LWLockRelease(state_shared->lock);
}

/* What a note calls for when its transaction commits, after it is visible. */
static void
note_committed(Noted *n)
{
	switch (n->kind)
	{
		case NOTE_SENT:
			push_ring_by_id(n->queue_id, &n->entry, true);
			break;
		case NOTE_UNBLOCK:
			push_ring_by_id(n->queue_id, &n->entry, false);
			MqWaitWake(n->queue_id);
			break;
		case NOTE_DUE:
			due_now(n->queue_id, n->due);
			break;
		case NOTE_SWEEP:
			sweep_soon_now(n->queue_id);
			break;
		case NOTE_CLAIM:
		case NOTE_CLAIM_DUE:
			break;
	}
}

/* What a note calls for when its (sub)transaction aborts. */
static void
note_aborted(Noted *n)
{
	switch (n->kind)
	{
		case NOTE_CLAIM:
			push_ring_by_id(n->queue_id, &n->entry, false);
			MqWaitWake(n->queue_id);
			break;
		case NOTE_CLAIM_DUE:
			due_now(n->queue_id, 0);
			MqWaitWake(n->queue_id);
			break;
		default:
			break;
	}
}

/*
 * A (sub)transaction at level ended: do what its outcome calls for, and
 * keep the notes of outer levels (with commit_sub, its own too, as its
 * parent's).
 */
static void
end_level(int level, bool commit, bool commit_sub)
{
	List	   *kept = NIL;
	ListCell   *lc;
	MemoryContext old = MemoryContextSwitchTo(TopTransactionContext);

	foreach(lc, notes)
	{
		Noted	   *n = lfirst(lc);

		if (n->level < level)
			kept = lappend(kept, n);
		else if (commit_sub)
		{
			n->level = level - 1;
			kept = lappend(kept, n);
		}
		else if (commit)
			note_committed(n);
		else
			note_aborted(n);
	}
	MemoryContextSwitchTo(old);
	notes = kept;
}

static void
state_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
			end_level(0, true, false);
			end_deltas(0, true, false);
			break;
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
			return_pending();
			end_level(0, false, false);
			abandon_count();
			break;
		case XACT_EVENT_PREPARE:
			/* what a prepared transaction changes later, the sweep finds */
			break;
		default:
			return;
	}
	notes = NIL;
	deltas = NIL;
	deltas_xid = InvalidTransactionId;
	pending_valid = false;
}

static void
state_subxact_callback(SubXactEvent event, SubTransactionId mySubid,
					   SubTransactionId parentSubid, void *arg)
{
	int			level = GetCurrentTransactionNestLevel();

	if (event == SUBXACT_EVENT_ABORT_SUB)
	{
		return_pending();
		end_level(level, false, false);
		end_deltas(level, false, false);
	}
	else if (event == SUBXACT_EVENT_COMMIT_SUB)
	{
		end_level(level, false, true);
		end_deltas(level, false, true);
	}
}

/* Called from _PG_init. */
void
MqStateInit(void)
{
	RegisterXactCallback(state_xact_callback, NULL);
	RegisterSubXactCallback(state_subxact_callback, NULL);
}
