/*-------------------------------------------------------------------------
 *
 * message.c
 *	  SQL entry points for messages: send and send_batch (both kinds of
 *	  queue), and for work queues read, ack, nack, extend, archive and the
 *	  per-queue part of maintenance.
 *
 * Each entry point checks its arguments (22004 for a NULL that makes no
 * sense, 22023 for a value out of range) before touching anything, then
 * opens the queue (queue.c) and calls the storage layer (storage.c, or
 * partition.c for partitioned queues).  mq.read applies the queue's rate
 * limit (ratelimit.c) and, with a wait, long-polls (wait.c).  The SQL
 * reference with units and SQLSTATEs is docs/reference.md.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "queue.h"
#include "partition.h"
#include "ratelimit.h"
#include "segment.h"
#include "keylocks.h"
#include "storage.h"
#include "wait.h"

PG_FUNCTION_INFO_V1(mq_send);
PG_FUNCTION_INFO_V1(mq_send_batch);
PG_FUNCTION_INFO_V1(mq_read);
PG_FUNCTION_INFO_V1(mq_ack);
PG_FUNCTION_INFO_V1(mq_ack_batch);
PG_FUNCTION_INFO_V1(mq_nack);
PG_FUNCTION_INFO_V1(mq_extend);
PG_FUNCTION_INFO_V1(mq_archive);
PG_FUNCTION_INFO_V1(mq_archive_batch);
PG_FUNCTION_INFO_V1(mq_maintain_queue);
PG_FUNCTION_INFO_V1(mq_purge_messages);

#define MAX_READ_QTY 10000
#define MAX_BATCH 100000
/* SQS caps visibility timeouts at 12 hours; delays here may reach a year. */
#define MAX_VT_SECS (12.0 * SECS_PER_HOUR)
#define MAX_DELAY_SECS (365.0 * SECS_PER_DAY)

static void
require_arg(FunctionCallInfo fcinfo, int argno, const char *name)
{
	if (PG_ARGISNULL(argno))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not be NULL", name)));
}

static MqNullable
optional_arg(FunctionCallInfo fcinfo, int argno)
{
	MqNullable	v;

	v.isnull = PG_ARGISNULL(argno);
	v.value = v.isnull ? (Datum) 0 : PG_GETARG_DATUM(argno);
	return v;
}

/* A partitioned queue keeps offset order: no message may wait. */
static void
require_no_delay(MqQueue *q, Interval *delay)
{
	if (delay->time != 0 || delay->day != 0 || delay->month != 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("queue \"%s\" is a partitioned queue and takes no delay", q->name)));
}

/* Interval argument checked against [0, max_secs]. */
static Interval *
interval_arg(FunctionCallInfo fcinfo, int argno, const char *name, double max_secs)
{
	Interval   *iv;
	double		secs;

	require_arg(fcinfo, argno, name);
	iv = PG_GETARG_INTERVAL_P(argno);
	secs = MqIntervalSeconds(iv);
	if (secs < 0 || secs > max_secs)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be between 0 and %.0f seconds", name, max_secs),
				 errdetail("The value given was %s.",
						   DatumGetCString(DirectFunctionCall1(interval_out,
															   IntervalPGetDatum(iv))))));
	return iv;
}

/* A one-dimensional array argument; NULL elements rejected when asked. */
static ArrayType *
array_arg(FunctionCallInfo fcinfo, int argno, const char *name, bool no_nulls)
{
	ArrayType  *arr = PG_GETARG_ARRAYTYPE_P(argno);

	if (ARR_NDIM(arr) > 1)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("%s must be a one-dimensional array", name)));
	if (no_nulls && array_contains_nulls(arr))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("%s must not contain NULL elements", name)));
	return arr;
}

static int
array_length_1d(ArrayType *arr)
{
	return ARR_NDIM(arr) == 0 ? 0 : ARR_DIMS(arr)[0];
}

/*
 * mq.send(queue_name text, payload jsonb, key text, headers jsonb,
 *		   delay interval) RETURNS bigint
 */
Datum
mq_send(PG_FUNCTION_ARGS)
{
	MqSession	session;
	MqQueue    *q;
	Interval   *delay;
	int64		msg_id;

	require_arg(fcinfo, 0, "queue_name");
	require_arg(fcinfo, 1, "payload");
	delay = interval_arg(fcinfo, 4, "delay", MAX_DELAY_SECS);

	q = MqQueueOpen(PG_GETARG_TEXT_PP(0), &session, MQ_RIGHT_SEND);
	if (q->partitions > 0)
	{
		require_no_delay(q, delay);
		msg_id = MqPartitionSend(q, PG_GETARG_DATUM(1), optional_arg(fcinfo, 2),
								 optional_arg(fcinfo, 3));
	}
	else
		msg_id = MqStorageSend(q, PG_GETARG_DATUM(1), optional_arg(fcinfo, 2),
							   optional_arg(fcinfo, 3), delay);
	MqQueueClose(&session);
	PG_RETURN_INT64(msg_id);
}

/*
 * mq.send_batch(queue_name text, payloads jsonb[], keys text[],
 *				 headers jsonb[], delay interval) RETURNS SETOF bigint
 */
Datum
mq_send_batch(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	MqSession	session;
	MqQueue    *q;
	ArrayType  *payloads;
	ArrayType  *keys = NULL;
	ArrayType  *headers = NULL;
	Interval   *delay;
	int			n;

	require_arg(fcinfo, 0, "queue_name");
	require_arg(fcinfo, 1, "payloads");
	payloads = array_arg(fcinfo, 1, "payloads", true);
	n = array_length_1d(payloads);
	if (n > MAX_BATCH)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("cannot send more than %d messages in one batch", MAX_BATCH)));
	if (!PG_ARGISNULL(2))
		keys = array_arg(fcinfo, 2, "keys", false);
	if (!PG_ARGISNULL(3))
		headers = array_arg(fcinfo, 3, "headers", false);
	if ((keys && array_length_1d(keys) != n) ||
		(headers && array_length_1d(headers) != n))
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("keys and headers must have as many elements as payloads"),
				 errdetail("payloads has %d elements, keys %d, headers %d.", n,
						   keys ? array_length_1d(keys) : n,
						   headers ? array_length_1d(headers) : n)));
	delay = interval_arg(fcinfo, 4, "delay", MAX_DELAY_SECS);

	InitMaterializedSRF(fcinfo, MAT_SRF_USE_EXPECTED_DESC);
	q = MqQueueOpen(PG_GETARG_TEXT_PP(0), &session, MQ_RIGHT_SEND);
	if (q->partitions > 0)
		require_no_delay(q, delay);
	if (n > 0 && q->partitions > 0)
		MqPartitionSendBatch(q, payloads, keys, headers, rsinfo);
	else if (n > 0)
		MqStorageSendBatch(q, payloads, keys, headers, delay, rsinfo);
	MqQueueClose(&session);
	return (Datum) 0;
}

typedef struct ReadArgs
{
	Interval   *vt;				/* NULL: the queue's default */
	ReturnSetInfo *rsinfo;
}			ReadArgs;

static uint64
claim_fetch(MqQueue *q, int granted, void *arg)
{
	ReadArgs   *read = (ReadArgs *) arg;

	return MqStorageClaim(q, granted, read->vt ? read->vt : &q->visibility_timeout,
						  read->rsinfo);
}

/*
 * mq.read(queue_name text, qty integer, visibility_timeout interval,
 *		   wait interval) RETURNS SETOF mq.message
 *
 * With a wait, an empty claim sleeps (wait.c) and tries again until it gets
 * a message or the wait has passed, as SQS ReceiveMessage long polling.
 * Each try is a new statement with a new snapshot, so it sees messages
 * committed after the read began (under READ COMMITTED).
 */
Datum
mq_read(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Interval   *vt = NULL;
	TimestampTz deadline;
	int32		qty;
	ReadArgs	read;

	require_arg(fcinfo, 0, "queue_name");
	require_arg(fcinfo, 1, "qty");
	qty = PG_GETARG_INT32(1);
	if (qty < 1 || qty > MAX_READ_QTY)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("qty must be between 1 and %d", MAX_READ_QTY),
				 errdetail("The value given was %d.", qty)));
	if (!PG_ARGISNULL(2))
		vt = interval_arg(fcinfo, 2, "visibility_timeout", MAX_VT_SECS);
	require_arg(fcinfo, 3, "wait");
	deadline = MqWaitDeadline(PG_GETARG_INTERVAL_P(3));

	InitMaterializedSRF(fcinfo, 0);
	read.vt = vt;
	read.rsinfo = rsinfo;
	MqWaitLoop(PG_GETARG_TEXT_PP(0), false, qty, deadline, claim_fetch, &read);
	return (Datum) 0;
}

static bool
ack_common(FunctionCallInfo fcinfo, bool archive)
{
	MqSession	session;
	MqQueue    *q;
	bool		done;

	require_arg(fcinfo, 0, "queue_name");
	require_arg(fcinfo, 1, "msg_id");
	q = MqQueueOpen(PG_GETARG_TEXT_PP(0), &session, MQ_RIGHT_CONSUME);
	MqRequireWorkQueue(q);
	done = MqStorageAck(q, PG_GETARG_INT64(1), optional_arg(fcinfo, 2), archive);
	MqQueueClose(&session);
	return done;
}

/* mq.ack(queue_name text, msg_id bigint, receipt bigint) RETURNS boolean */
Datum
mq_ack(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(ack_common(fcinfo, false));
}

/* mq.archive(queue_name text, msg_id bigint, receipt bigint) RETURNS boolean */
Datum
mq_archive(PG_FUNCTION_ARGS)
{
	PG_RETURN_BOOL(ack_common(fcinfo, true));
}

/* Ack or archive the messages of msg_ids; returns how many there were. */
static int64
ack_batch_common(FunctionCallInfo fcinfo, bool archive)
{
	MqSession	session;
	MqQueue    *q;
	ArrayType  *ids;
	int64		n;

	require_arg(fcinfo, 0, "queue_name");
	require_arg(fcinfo, 1, "msg_ids");
	ids = array_arg(fcinfo, 1, "msg_ids", true);
	q = MqQueueOpen(PG_GETARG_TEXT_PP(0), &session, MQ_RIGHT_CONSUME);
	MqRequireWorkQueue(q);
	n = array_length_1d(ids) > 0 ? MqStorageAckBatch(q, ids, archive) : 0;
	MqQueueClose(&session);
	return n;
}

/* mq.ack(queue_name text, msg_ids bigint[]) RETURNS bigint */
Datum
mq_ack_batch(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(ack_batch_common(fcinfo, false));
}

/* mq.archive(queue_name text, msg_ids bigint[]) RETURNS bigint */
Datum
mq_archive_batch(PG_FUNCTION_ARGS)
{
	PG_RETURN_INT64(ack_batch_common(fcinfo, true));
}

/*
 * mq.nack(queue_name text, msg_id bigint, receipt bigint, delay interval,
 *		   error text) RETURNS boolean
 */
Datum
mq_nack(PG_FUNCTION_ARGS)
{
	MqSession	session;
	MqQueue    *q;
	Interval   *delay = NULL;
	bool		done;

	require_arg(fcinfo, 0, "queue_name");
	require_arg(fcinfo, 1, "msg_id");
	if (!PG_ARGISNULL(3))
		delay = interval_arg(fcinfo, 3, "delay", MAX_DELAY_SECS);
	q = MqQueueOpen(PG_GETARG_TEXT_PP(0), &session, MQ_RIGHT_CONSUME);
	MqRequireWorkQueue(q);
	done = MqStorageRelease(q, PG_GETARG_INT64(1), optional_arg(fcinfo, 2), delay,
							optional_arg(fcinfo, 4));
	MqQueueClose(&session);
	PG_RETURN_BOOL(done);
}

/*
 * mq.extend(queue_name text, msg_id bigint, visibility_timeout interval,
 *			 receipt bigint) RETURNS timestamptz
 */
Datum
mq_extend(PG_FUNCTION_ARGS)
{
	MqSession	session;
	MqQueue    *q;
	Interval   *vt;
	TimestampTz visible_at;
	bool		done;

	require_arg(fcinfo, 0, "queue_name");
	require_arg(fcinfo, 1, "msg_id");
	vt = interval_arg(fcinfo, 2, "visibility_timeout", MAX_VT_SECS);
	q = MqQueueOpen(PG_GETARG_TEXT_PP(0), &session, MQ_RIGHT_CONSUME);
	MqRequireWorkQueue(q);
	done = MqStorageExtend(q, PG_GETARG_INT64(1), optional_arg(fcinfo, 3), vt,
						   &visible_at);
	MqQueueClose(&session);
	if (!done)
		PG_RETURN_NULL();
	PG_RETURN_TIMESTAMPTZ(visible_at);
}

/*
 * mq._maintain_queue(queue_name text) RETURNS bigint
 *	  The upkeep of one queue (mq.maintain calls it for each): segments
 *	  emptied and reused, retention of a partitioned queue, and for a work
 *	  queue the sweep and the dead-lettering of lapsed last attempts.
 *	  Returns how many messages it removed or moved.
 */
Datum
mq_maintain_queue(PG_FUNCTION_ARGS)
{
	MqSession	session;
	MqQueue    *q;
	int64		n;

	require_arg(fcinfo, 0, "queue_name");
	q = MqQueueOpen(PG_GETARG_TEXT_PP(0), &session, MQ_RIGHT_ADMIN);
	n = q->partitions > 0 ? MqSegmentMaintain(q) : MqStorageMaintain(q);
	MqQueueClose(&session);
	PG_RETURN_INT64(n);
}

/*
 * mq._purge_messages(queue_name text) RETURNS bigint
 *	  The messages of a work queue deleted, with every key locked first
 *	  (mq.purge); returns how many.
 */
Datum
mq_purge_messages(PG_FUNCTION_ARGS)
{
	MqSession	session;
	MqQueue    *q;
	int64		n;

	require_arg(fcinfo, 0, "queue_name");
	q = MqQueueOpen(PG_GETARG_TEXT_PP(0), &session, MQ_RIGHT_ADMIN);
	n = MqStoragePurge(q);
	MqQueueClose(&session);
	PG_RETURN_INT64(n);
}
