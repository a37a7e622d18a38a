/*-------------------------------------------------------------------------
 *
 * notify.c
 *	  LISTEN/NOTIFY wake-ups: a transaction that sends to a queue gets the
 *	  channel "mq.<queue_name>" notified once, after it commits.
 *
 * With mq preloaded the producer does not NOTIFY: a send notes the queue's
 * relay slot in a backend-local bitmap, and at XACT_EVENT_COMMIT, once the
 * transaction is visible to others, the marks go to shared memory, where
 * this database's relay worker (relay.c) picks them up and NOTIFYs, one
 * notification per queue however many commits it covers.  So no producer
 * takes the lock that NOTIFY holds through its commit (it serialized
 * committing producers: 0.39-0.41x of their rate with 8 of them), and
 * since the relay notifies every marked queue, a plain
 * LISTEN "mq.<queue_name>" works as well as mq.listen().  A rollback marks
 * nothing.  A rolled-back savepoint does not unmark its sends: their queue
 * may get a notification it did not need, which only costs a read.  A
 * prepared transaction marks nothing (COMMIT PREPARED runs elsewhere):
 * its sends notify nobody.
 *
 * Without preloading, or when the relay table has no entry for this
 * database (relay.c), the producer calls Async_Notify as before: PostgreSQL
 * delivers it only at commit, never on rollback, and folds identical
 * notifications of one transaction into one.
 *
 * The channel name is at most 3 + 48 bytes, within the 63-byte identifier
 * limit, and keeps the queue name's case: mq.listen() LISTENs to it for
 * you.  A queue created with notify => false never notifies; waiting
 * readers inside the server (mq.read/mq.poll with wait, wait.c) need no
 * NOTIFY at all.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/async.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "utils/builtins.h"

#include "notify.h"
#include "pooler.h"
#include "relay.h"

PG_FUNCTION_INFO_V1(mq_listen);
PG_FUNCTION_INFO_V1(mq_unlisten);

/* the relay slots this transaction sent to, and its database's entry */
static uint64 pending[MQ_RELAY_WORDS];
static int	pending_entry = -1;

static void
notify_xact_callback(XactEvent event, void *arg)
{
	if (pending_entry < 0)
		return;
	if (event == XACT_EVENT_COMMIT)
		MqRelayMark(pending_entry, pending);
	if (event == XACT_EVENT_COMMIT || event == XACT_EVENT_ABORT ||
		event == XACT_EVENT_PREPARE || event == XACT_EVENT_PARALLEL_COMMIT ||
		event == XACT_EVENT_PARALLEL_ABORT)
	{
		memset(pending, 0, sizeof(pending));
		pending_entry = -1;
	}
}

/* Called from _PG_init. */
void
MqNotifyInit(void)
{
	RegisterXactCallback(notify_xact_callback, NULL);
}

/* This transaction sent to q: get its channel notified after the commit. */
void
MqNotifySend(MqQueue *q)
{
	int			entry;
	int			slot;

	if (!q->notify)
		return;
	entry = MqRelayReserve();
	if (entry < 0)
	{
		Async_Notify(q->channel, "");
		return;
	}
	slot = MqRelaySlot(q->queue_id);
	pending[slot / 64] |= (uint64) 1 << (slot % 64);
	pending_entry = entry;
}

/* The channel of the queue named by argument 0, checking the consume right. */
static void
queue_channel(FunctionCallInfo fcinfo, char *channel)
{
	MqSession	session;
	MqQueue    *q;

	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("queue_name must not be NULL")));
	q = MqQueueOpen(PG_GETARG_TEXT_PP(0), &session, MQ_RIGHT_CONSUME);
	strlcpy(channel, q->channel, NAMEDATALEN);
	MqQueueClose(&session);
}

/*
 * mq.listen(queue_name text) RETURNS text
 *	  LISTEN "mq.<queue_name>" (at commit, as LISTEN does); returns the
 *	  channel name.  Errors: 22004, 42704, 42501 (see queue_channel).
 */
Datum
mq_listen(PG_FUNCTION_ARGS)
{
	char		channel[NAMEDATALEN];

	MqRequireOwnSession("mq.listen",
						"LISTEN on a direct connection, or long-poll with mq.read's wait through the pool.");
	queue_channel(fcinfo, channel);
	Async_Listen(channel);
	PG_RETURN_TEXT_P(cstring_to_text(channel));
}

/* Whether this session listens to channel (committed LISTENs only). */
static bool
listening_on(const char *channel)
{
	Oid			types[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(channel)};
	bool		isnull;
	bool		result;

	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
	if (SPI_execute_with_args("SELECT $1 OPERATOR(pg_catalog.=) ANY"
							  " (SELECT pg_catalog.pg_listening_channels())",
							  1, types, values, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed != 1)
		elog(ERROR, "could not read pg_listening_channels()");
	result = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	SPI_finish();
	return !isnull && result;
}

/*
 * mq.unlisten(queue_name text) RETURNS boolean
 *	  UNLISTEN "mq.<queue_name>" (at commit, as UNLISTEN does); returns
 *	  whether this session was listening to it, as pg_listening_channels()
 *	  says (a LISTEN of the current transaction is not yet listening).
 *	  Errors: 22004, 42704, 42501.
 */
Datum
mq_unlisten(PG_FUNCTION_ARGS)
{
	char		channel[NAMEDATALEN];
	bool		was;

	queue_channel(fcinfo, channel);
	was = listening_on(channel);
	Async_Unlisten(channel);
	PG_RETURN_BOOL(was);
}
