/*-------------------------------------------------------------------------
 *
 * wait.c
 *	  Long polling: a waiting mq.read sleeps until a transaction that made
 *	  a message of its queue visible commits, or its wait runs out.
 *
 * With shared_preload_libraries = 'mq', shared memory holds, per wake slot
 * (queue_id modulo MQ_WAIT_SLOTS), a counter of commits that made messages
 * visible and a condition variable.  A backend that sends (or nacks, or
 * unblocks a key, or dead-letters into a queue) marks the slot in a
 * backend-local bitmap; at XACT_EVENT_COMMIT, which runs after the
 * transaction became visible to others, it bumps the counters and
 * broadcasts.  A reader samples the counter before its claim statement
 * takes its snapshot, so a commit it could not see changes the counter and
 * it does not sleep.  Slots are shared by queues that collide modulo the
 * slot count: a wake-up for another queue only costs a retry.
 *
 * Messages also become claimable by the passing of time (a delay, a retry
 * backoff, a lapsed visibility timeout) with no commit to announce them: a
 * waiting read of a work queue sleeps at most until the next such moment
 * its queue's hints know of (state.c), and otherwise re-checks every
 * MQ_WAIT_RECHECK_MS.
 *
 * A drop_queue ends the waits of its queue's readers, which would hold it
 * up for their whole wait (the queue lock, queue.c): before it waits for
 * the lock it marks its backend's drop mark with the queue and counts
 * itself in the slot's drops, then broadcasts.  A reader that finds a drop
 * of its queue marked returns what it has (nothing), and its transaction,
 * when it ends, lets the drop go on.  The mark goes once the drop holds
 * the lock (later callers wait for the lock, then find the queue gone),
 * when its wait fails, or when its transaction ends (a FATAL error).
 *
 * Locking: the counters and marks are atomics and the condition variables
 * need no lock; a backend writes only its own mark; the bitmap is
 * backend-local.
 *
 * Without preloading there is no shared memory: a waiting read re-checks
 * after a latch sleep of 10 ms, doubling up to MQ_WAIT_FALLBACK_MAX_MS.
 *
 * A waiting read checks every MQ_WAIT_CLIENT_CHECK_MS that its client is
 * still connected, and ends its session (FATAL, as
 * client_connection_check_interval does) when it is not.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "libpq/libpq.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/backendid.h"
#include "storage/condition_variable.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/inval.h"
#include "utils/wait_event.h"

#include "ratelimit.h"
#include "shmem.h"
#include "storage.h"
#include "wait.h"

#define MQ_WAIT_SLOTS 1024
#define MQ_WAIT_RECHECK_MS 250

/*
 * How often a waiting read looks at its client's socket.  A running
 * statement reads nothing from the client, so PostgreSQL notices a client
 * that died only when the statement ends (or every
 * client_connection_check_interval, off by default); a long poll would
 * keep the session, and so the claims it made earlier (released when the
 * session ends, consumer.c), for its whole wait.
 */
#define MQ_WAIT_CLIENT_CHECK_MS 250
#define MQ_WAIT_FALLBACK_MIN_MS 10
#define MQ_WAIT_FALLBACK_MAX_MS 200

typedef struct MqWaitShared
{
	pg_atomic_uint64 commits[MQ_WAIT_SLOTS];
	pg_atomic_uint32 drops[MQ_WAIT_SLOTS];	/* marked drops of the slot's queues */
	ConditionVariable cv[MQ_WAIT_SLOTS];
	pg_atomic_uint64 drop_marks[FLEXIBLE_ARRAY_MEMBER];	/* per backend */
} MqWaitShared;

static MqWaitShared *wait_shared = NULL;

/* the slot of this backend's marked drop, -1 when none */
static int	my_drop_slot = -1;

/* slots this transaction must wake at commit */
static uint64 pending[MQ_WAIT_SLOTS / 64];
static bool any_pending = false;

static inline int
wait_slot(int64 queue_id)
{
	return (uint32) ((uint64) queue_id % MQ_WAIT_SLOTS);
}

static Size
wait_shared_size(void)
{
	return add_size(offsetof(MqWaitShared, drop_marks),
					mul_size(MaxBackends, sizeof(pg_atomic_uint64)));
}

void
MqWaitShmemRequest(void)
{
	RequestAddinShmemSpace(MAXALIGN(wait_shared_size()));
}

void
MqWaitShmemStartup(void)
{
	bool		found;

	wait_shared = ShmemInitStruct("mq wait", wait_shared_size(), &found);
	if (!found)
	{
		for (int i = 0; i < MQ_WAIT_SLOTS; i++)
		{
			pg_atomic_init_u64(&wait_shared->commits[i], 0);
			pg_atomic_init_u32(&wait_shared->drops[i], 0);
			ConditionVariableInit(&wait_shared->cv[i]);
		}
		for (int b = 0; b < MaxBackends; b++)
			pg_atomic_init_u64(&wait_shared->drop_marks[b], 0);
	}
}

/*
 * A drop mark: the queue of this database, in one atomic word, so with the
 * id's low 32 bits only.  Queues whose ids differ by a multiple of 2^32
 * share a mark: a drop of one then ends a wait on the other early, and
 * that wait returns nothing, as a long poll may always do.
 */
static uint64
drop_mark(int64 queue_id)
{
	return ((uint64) MyDatabaseId << 32) | (uint32) queue_id;
}

/*
 * drop_queue of queue_id is about to wait for the queue lock: end the
 * waits of its readers (see the banner).
 */
void
MqWaitDropBegin(int64 queue_id)
{
	int			slot = wait_slot(queue_id);

	if (wait_shared == NULL || my_drop_slot >= 0 || MyBackendId == InvalidBackendId)
		return;
	pg_atomic_write_u64(&wait_shared->drop_marks[MyBackendId - 1], drop_mark(queue_id));
	my_drop_slot = slot;
	/* a full barrier: the mark before the count, both before the wake-up */
	pg_atomic_fetch_add_u32(&wait_shared->drops[slot], 1);
	ConditionVariableBroadcast(&wait_shared->cv[slot]);
}

/* The drop holds the queue lock, or its transaction ended: unmark. */
void
MqWaitDropEnd(void)
{
	if (my_drop_slot < 0)
		return;
	pg_atomic_fetch_sub_u32(&wait_shared->drops[my_drop_slot], 1);
	pg_atomic_write_u64(&wait_shared->drop_marks[MyBackendId - 1], 0);
	my_drop_slot = -1;
}

/* Whether a drop_queue of queue_id waits for its readers (see the banner). */
static bool
drop_pending(int64 queue_id)
{
	uint64		mark = drop_mark(queue_id);

	if (wait_shared == NULL ||
		pg_atomic_read_u32(&wait_shared->drops[wait_slot(queue_id)]) == 0)
		return false;
	for (int b = 0; b < MaxBackends; b++)
		if (pg_atomic_read_u64(&wait_shared->drop_marks[b]) == mark)
			return true;
	return false;
}

static void
wait_xact_callback(XactEvent event, void *arg)
{
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE)
		MqWaitDropEnd();
	if (!any_pending)
		return;
	if (event == XACT_EVENT_COMMIT && wait_shared != NULL)
	{
		for (int w = 0; w < MQ_WAIT_SLOTS / 64; w++)
		{
			for (int b = 0; pending[w] != 0 && b < 64; b++)
			{
				if (pending[w] & ((uint64) 1 << b))
				{
					pg_atomic_fetch_add_u64(&wait_shared->commits[w * 64 + b], 1);
					ConditionVariableBroadcast(&wait_shared->cv[w * 64 + b]);
				}
			}
		}
	}

	/*
	 * Forget the marks when the transaction ends any way.  A prepared
	 * transaction wakes nobody when it is committed later: its readers
	 * notice at their next re-check.
	 */
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_PARALLEL_ABORT)
	{
		memset(pending, 0, sizeof(pending));
		any_pending = false;
	}
}

/* Called from _PG_init. */
void
MqWaitInit(void)
{
	RegisterXactCallback(wait_xact_callback, NULL);
}

/* SQS long polls for at most 20 s; a server-side wait holds a backend. */
#define MQ_WAIT_MAX_SECS (15 * SECS_PER_MINUTE)

/* When a wait of the given length, checked to be 0 to 15 minutes, ends. */
TimestampTz
MqWaitDeadline(Interval *wait)
{
	double		secs = MqIntervalSeconds(wait);

	if (secs < 0 || secs > MQ_WAIT_MAX_SECS)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("wait must be between 0 and %d seconds", MQ_WAIT_MAX_SECS)));
	return TimestampTzPlusMilliseconds(GetCurrentTimestamp(), (int64) (secs * 1000.0));
}

/* This transaction made messages of queue_id visible (once it commits). */
void
MqWaitNoteSend(int64 queue_id)
{
	int			slot = wait_slot(queue_id);

	if (wait_shared == NULL)
		return;
	pending[slot / 64] |= (uint64) 1 << (slot % 64);
	any_pending = true;
}

/* Wake the waiting readers of queue_id now (an abort made messages claimable). */
void
MqWaitWake(int64 queue_id)
{
	int			slot = wait_slot(queue_id);

	if (wait_shared == NULL)
		return;
	pg_atomic_fetch_add_u64(&wait_shared->commits[slot], 1);
	ConditionVariableBroadcast(&wait_shared->cv[slot]);
}

/* Sample before a claim; pass to MqWaitForSend after an empty one. */
uint64
MqWaitSendCount(int64 queue_id)
{
	if (wait_shared == NULL)
		return 0;
	return pg_atomic_read_u64(&wait_shared->commits[wait_slot(queue_id)]);
}

static long
ms_until(TimestampTz deadline)
{
	return TimestampDifferenceMilliseconds(GetCurrentTimestamp(), deadline);
}

/*
 * End the session if its client went away (the socket reports closed), the
 * way ProcessInterrupts does for client_connection_check_interval.  A
 * process without a client (a background worker) has nothing to check.
 */
static void
check_client(void)
{
	if (MyProcPort != NULL && !pq_check_connection())
	{
		ClientConnectionLost = true;
		InterruptPending = true;
	}
	CHECK_FOR_INTERRUPTS();
}

/*
 * The loop of mq.read and mq.poll: open the queue, take rate-limit tokens,
 * fetch, give back the tokens not used; until something was fetched, the
 * deadline passed or a drop_queue of the queue waits for it, sleep until a send commits (or the next token is due)
 * and try again.  Each try is a new statement with a new snapshot.
 */
void
MqWaitLoop(text *queue_name, bool partitioned, int want, TimestampTz deadline,
		   MqFetchFn fetch, void *arg)
{
	int			fallback_ms = 0;

	for (;;)
	{
		MqSession	session;
		MqQueue    *q;
		int64		queue_id;
		uint64		seen;
		TimestampTz due = 0;
		TimestampTz next = 0;
		int			granted;
		uint64		n = 0;

		/* a revoke or a dropped queue takes effect during a wait too */
		AcceptInvalidationMessages();
		q = MqQueueOpen(queue_name, &session, MQ_RIGHT_CONSUME);
		queue_id = q->queue_id;
		seen = MqWaitSendCount(queue_id);
		if (partitioned)
			MqRequirePartitioned(q);
		else
			MqRequireWorkQueue(q);
		/* a rate limit may allow fewer messages than asked, or none yet */
		granted = MqRateTake(q, want, &due);
		if (granted > 0)
			n = fetch(q, granted, arg);
		MqRateRefund(q, granted - (int) n);
		if (n == 0 && !partitioned)
			next = MqStorageNextTimedEvent(q);
		MqQueueClose(&session);
		if (n > 0 || GetCurrentTimestamp() >= deadline || drop_pending(queue_id))
			break;
		if (granted == 0)
			MqWaitUntil(Min(due, deadline));
		else
			MqWaitForSend(queue_id, seen, deadline, next, &fallback_ms);
	}
}

/* Sleep until a time (a rate limit's next token); interruptible. */
void
MqWaitUntil(TimestampTz until)
{
	long		timeout = Min(ms_until(until), MQ_WAIT_CLIENT_CHECK_MS);

	if (timeout > 0)
	{
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 timeout, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
	}
	check_client();
}

/*
 * Sleep until a commit that made messages of queue_id visible (counter moved
 * past seen), a drop of the queue, the next timed event (0: unknown, then
 * the re-check interval), or the deadline.  Query cancel and statement_timeout
 * interrupt the sleep with an error as usual.
 */
void
MqWaitForSend(int64 queue_id, uint64 seen, TimestampTz deadline, TimestampTz next,
			  int *fallback_ms)
{
	if (wait_shared != NULL)
	{
		int			slot = wait_slot(queue_id);
		ConditionVariable *cv = &wait_shared->cv[slot];
		TimestampTz recheck = next != 0 ? next :
			TimestampTzPlusMilliseconds(GetCurrentTimestamp(), MQ_WAIT_RECHECK_MS);

		if (recheck < deadline)
			deadline = recheck;
		ConditionVariablePrepareToSleep(cv);
		for (;;)
		{
			long		timeout;

			/* first, so that a broadcast after the test still wakes us */
			check_client();
			if (pg_atomic_read_u64(&wait_shared->commits[slot]) != seen ||
				drop_pending(queue_id))
				break;
			timeout = ms_until(deadline);
			if (timeout <= 0)
				break;
			/* timed out: not woken, so look again (client included) */
			(void) ConditionVariableTimedSleep(cv, Min(timeout, MQ_WAIT_CLIENT_CHECK_MS),
											   PG_WAIT_EXTENSION);
		}
		ConditionVariableCancelSleep();
	}
	else
	{
		long		timeout;

		*fallback_ms = Max(*fallback_ms, MQ_WAIT_FALLBACK_MIN_MS);
		timeout = Min(ms_until(deadline), *fallback_ms);

		if (timeout > 0)
		{
			(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
							 timeout, PG_WAIT_EXTENSION);
			ResetLatch(MyLatch);
		}
		*fallback_ms = Min(*fallback_ms * 2, MQ_WAIT_FALLBACK_MAX_MS);
	}
	check_client();
}
