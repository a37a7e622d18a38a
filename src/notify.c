/*-------------------------------------------------------------------------
 *
 * notify.c
 *	  LISTEN/NOTIFY wake-ups: a transaction that sends to a queue notifies
 *	  the channel "mq.<queue_name>" once, at commit, when someone listens.
 *
 * PostgreSQL delivers a NOTIFY only when its transaction commits, never on
 * rollback, and folds identical channel/payload pairs of one transaction
 * into one notification, so calling Async_Notify on every send coalesces to
 * one notification per queue per transaction.  The channel name is at most
 * 3 + 48 bytes, within the 63-byte identifier limit, and keeps the queue
 * name's case: mq.listen() LISTENs to it for you.
 *
 * NOTIFY takes a database-wide lock at commit that serializes committing
 * notifiers and defeats group commit (bench/: about a third of the plain
 * send rate with 8 producers).  So with mq preloaded, senders skip the
 * NOTIFY while nobody listens: mq.listen() counts listeners per wake slot
 * (queue_id modulo MQ_NOTIFY_SLOTS, so a collision only means an unneeded
 * NOTIFY) in shared memory, and the count drops with mq.unlisten() or when
 * the session ends.  A client that LISTENs by hand instead of through
 * mq.listen() is not counted and gets notifications only while someone
 * else listens to the same slot, or when mq is not preloaded (then every
 * send notifies).  A queue created with notify => false never notifies;
 * waiting readers inside the server (mq.read/mq.poll with wait) need no
 * NOTIFY at all.
 *
 * A listener that registers after a send checked the count misses that
 * send's notification: like any LISTEN client, read once after listening.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/async.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"

#include "notify.h"
#include "shmem.h"

PG_FUNCTION_INFO_V1(mq_listen);
PG_FUNCTION_INFO_V1(mq_unlisten);

#define MQ_NOTIFY_SLOTS 1024

typedef struct NotifyShared
{
	pg_atomic_uint32 listeners[MQ_NOTIFY_SLOTS];
} NotifyShared;

static NotifyShared *notify_shared = NULL;

/* slots this session counts itself in */
static uint64 my_slots[MQ_NOTIFY_SLOTS / 64];
static bool exit_callback_set = false;

void
MqNotifyShmemRequest(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(NotifyShared)));
}

void
MqNotifyShmemStartup(void)
{
	bool		found;

	notify_shared = ShmemInitStruct("mq notify", sizeof(NotifyShared), &found);
	if (!found)
		for (int i = 0; i < MQ_NOTIFY_SLOTS; i++)
			pg_atomic_init_u32(&notify_shared->listeners[i], 0);
}

static inline int
notify_slot(int64 queue_id)
{
	return (uint32) ((uint64) queue_id % MQ_NOTIFY_SLOTS);
}

void
MqNotifySend(MqQueue *q)
{
	if (!q->notify)
		return;
	if (notify_shared != NULL &&
		pg_atomic_read_u32(&notify_shared->listeners[notify_slot(q->queue_id)]) == 0)
		return;					/* nobody listens: skip the commit-time lock */
	Async_Notify(q->channel, "");
}

static bool
counted(int slot)
{
	return (my_slots[slot / 64] & ((uint64) 1 << (slot % 64))) != 0;
}

static void
set_counted(int slot, bool on)
{
	if (on)
		my_slots[slot / 64] |= (uint64) 1 << (slot % 64);
	else
		my_slots[slot / 64] &= ~((uint64) 1 << (slot % 64));
}

static void
notify_exit(int code, Datum arg)
{
	for (int slot = 0; slot < MQ_NOTIFY_SLOTS; slot++)
		if (counted(slot))
			pg_atomic_fetch_sub_u32(&notify_shared->listeners[slot], 1);
}

/* The channel and listener slot of the queue named by argument 0. */
static int
queue_channel(FunctionCallInfo fcinfo, char *channel)
{
	MqSession	session;
	MqQueue    *q;
	int			slot;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("queue_name must not be NULL")));
	q = MqQueueOpen(PG_GETARG_TEXT_PP(0), &session, MQ_RIGHT_CONSUME);
	strlcpy(channel, q->channel, NAMEDATALEN);
	slot = notify_slot(q->queue_id);
	MqQueueClose(&session);
	return slot;
}

/* mq.listen(queue_name text) RETURNS text: LISTEN to the queue's channel */
Datum
mq_listen(PG_FUNCTION_ARGS)
{
	char		channel[NAMEDATALEN];
	int			slot = queue_channel(fcinfo, channel);

	Async_Listen(channel);
	if (notify_shared != NULL && !counted(slot))
	{
		if (!exit_callback_set)
		{
			on_shmem_exit(notify_exit, (Datum) 0);
			exit_callback_set = true;
		}
		pg_atomic_fetch_add_u32(&notify_shared->listeners[slot], 1);
		set_counted(slot, true);
	}
	PG_RETURN_TEXT_P(cstring_to_text(channel));
}

/* mq.unlisten(queue_name text) RETURNS boolean */
Datum
mq_unlisten(PG_FUNCTION_ARGS)
{
	char		channel[NAMEDATALEN];
	int			slot = queue_channel(fcinfo, channel);
	bool		was = false;

	Async_Unlisten(channel);
	if (notify_shared != NULL && counted(slot))
	{
		pg_atomic_fetch_sub_u32(&notify_shared->listeners[slot], 1);
		set_counted(slot, false);
		was = true;
	}
	PG_RETURN_BOOL(was);
}
