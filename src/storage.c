/*-------------------------------------------------------------------------
 *
 * storage.c
 *	  Message storage and the claim path of work queues.
 *
 * Layout: one heap table per queue, mq.q_<queue_id>, whose only index is the
 * primary key on msg_id.  A claim (mq.read) changes vt, attempts and claimed,
 * none of them indexed, so with the table's fillfactor it is a HOT update
 * that adds no index entry; an ack deletes the row.  A reader walks the
 * primary key from the oldest msg_id and takes the first rows whose vt has
 * passed with FOR NO KEY UPDATE SKIP LOCKED, so concurrent readers never
 * wait on or receive one another's messages.
 *
 * The receipt of a delivery is its attempt number: every claim increments
 * attempts, so a receipt from an earlier delivery no longer matches.
 *
 * Messages that have used their last attempt are moved to the dead-letter
 * queue (or discarded) by whoever meets them first: a nack, a claim that
 * reaches them after their visibility timeout lapsed, or mq.maintain().
 *
 * Keyed ordering (ordering = 'key'): of the messages sharing a key, only the
 * oldest has blocked = false; a read takes only unblocked messages, through
 * a partial index on msg_id WHERE NOT blocked, so its cost does not grow with
 * the number of waiting messages or keys.  Whoever removes a keyed message
 * (ack, archive, dead-lettering) unblocks the key's new oldest message; a
 * send inserts blocked when its key already has a message.  Both take a
 * per-(queue, key) transaction lock first, so a send and a removal of the
 * same key serialize, and the statement after the lock reads with the
 * latest snapshot, so it sees the other's committed rows at any isolation
 * level (as PostgreSQL's own foreign-key checks do).  That lock also makes
 * msg_ids increase in send order within a key.  A nack or a lapsed visibility timeout leaves the
 * oldest message where it is, so the key stays blocked until it is acked or
 * dead-lettered.
 *
 * All statements are prepared once per queue and kept (SPI_keepplan) in the
 * queue's cache entry; they name objects schema-qualified and call only
 * pg_catalog functions and operators, so the caller's search_path cannot
 * redirect them.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "utils/builtins.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "storage/lock.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"

#include "consumer.h"
#include "notify.h"
#include "storage.h"
#include "wait.h"

typedef enum PlanKind
{
	PLAN_SEND,
	PLAN_SEND_BATCH,
	PLAN_CLAIM,
	PLAN_ACK,
	PLAN_ACK_BATCH,
	PLAN_ARCHIVE,
	PLAN_RELEASE,
	PLAN_EXTEND,
	PLAN_DEAD_LETTER,
	PLAN_COUNT_DEAD,
	PLAN_EXPIRED,
	PLAN_SEND_KEYED,
	PLAN_SEND_BATCH_KEYED,
	PLAN_UNBLOCK,
	PLAN_COUNT
}			PlanKind;

StaticAssertDecl(PLAN_COUNT <= MQ_PARTITION_PLAN_BASE, "too many plans per queue");

#define MAX_ARGS 8

typedef struct PlanDef
{
	const char *sql;			/* %1$d: queue id; %2$d: dead-letter queue id */
	int			nargs;
	Oid			argtypes[MAX_ARGS];
} PlanDef;

#define NOW "pg_catalog.clock_timestamp()"
#define RECEIPT_MATCHES "($2 IS NULL OR attempts " OP("=") " $2)"

static const PlanDef plan_defs[PLAN_COUNT] = {
	[PLAN_SEND] = {
		"INSERT INTO mq.q_%1$d (vt, key, payload, headers)"
		" VALUES (" NOW " " OP("+") " $4, $2, $1, $3) RETURNING msg_id",
		4, {JSONBOID, TEXTOID, JSONBOID, INTERVALOID}
	},
	[PLAN_SEND_BATCH] = {
		"INSERT INTO mq.q_%1$d (vt, key, payload, headers)"
		" SELECT " NOW " " OP("+") " $4, u.k, u.p, u.h"
		" FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
		" pg_catalog.unnest($3)) AS u(p, k, h) RETURNING msg_id",
		4, {JSONBARRAYOID, TEXTARRAYOID, JSONBARRAYOID, INTERVALOID}
	},

	/*
	 * The sub-select takes the oldest visible rows; the UPDATE claims those
	 * with attempts left and marks the exhausted ones (vt = -infinity,
	 * claimed false) for the caller to dead-letter while it still holds
	 * their locks.  "= ANY (ARRAY(...))" rather than a join keeps the
	 * generic plan an index scan whatever LIMIT $1 is, so the plan is made
	 * once and reused (a join's generic plan hashes the whole table, and
	 * the plan cache would then re-plan every call).
	 */
	[PLAN_CLAIM] = {
		"UPDATE mq.q_%1$d AS m SET"
		" vt = CASE WHEN m.attempts " OP("<") " $3 THEN " NOW " " OP("+") " $2"
		" ELSE '-infinity'::pg_catalog.timestamptz END,"
		" attempts = CASE WHEN m.attempts " OP("<") " $3"
		" THEN m.attempts " OP("+") " 1 ELSE m.attempts END,"
		" claimed = m.attempts " OP("<") " $3, consumer = $4"
		" WHERE m.msg_id " OP("=") " ANY (ARRAY("
		" SELECT msg_id FROM mq.q_%1$d WHERE vt " OP("<=") " " NOW
		" AND NOT blocked ORDER BY msg_id LIMIT $1 FOR NO KEY UPDATE SKIP LOCKED))"
		" RETURNING m.msg_id, m.attempts, m.key, m.payload, m.headers,"
		" m.enqueued_at, m.vt, m.last_error, m.dead_letter, m.claimed",
		4, {INT4OID, INTERVALOID, INT4OID, INT8OID}
	},
	[PLAN_ACK] = {
		"DELETE FROM mq.q_%1$d WHERE msg_id " OP("=") " $1 AND " RECEIPT_MATCHES
		" RETURNING key",
		2, {INT8OID, INT8OID}
	},
	[PLAN_ACK_BATCH] = {
		"DELETE FROM mq.q_%1$d WHERE msg_id " OP("=") " ANY ($1) RETURNING key",
		1, {INT8ARRAYOID}
	},
	[PLAN_ARCHIVE] = {
		"WITH d AS (DELETE FROM mq.q_%1$d WHERE msg_id " OP("=") " $1 AND "
		RECEIPT_MATCHES " RETURNING *)"
		" INSERT INTO mq.a_%1$d (msg_id, vt, enqueued_at, attempts, claimed,"
		" key, payload, headers, last_error, dead_letter, blocked)"
		" SELECT msg_id, vt, enqueued_at, attempts, claimed,"
		" key, payload, headers, last_error, dead_letter, blocked FROM d"
		" RETURNING key",
		2, {INT8OID, INT8OID}
	},

	/*
	 * Backoff in seconds: retry_delay * retry_backoff^(attempts-1), capped;
	 * the exponent is capped too so the power cannot overflow.
	 */
	[PLAN_RELEASE] = {
		"UPDATE mq.q_%1$d SET vt = " NOW " " OP("+") " COALESCE($3,"
		" pg_catalog.make_interval(secs => LEAST($5 " OP("*") " pg_catalog.power($6,"
		" LEAST(GREATEST(attempts " OP("-") " 1, 0), 100)::pg_catalog.float8), $7))),"
		" claimed = false, last_error = COALESCE($4, last_error)"
		" WHERE msg_id " OP("=") " $1 AND claimed AND " RECEIPT_MATCHES
		" AND attempts " OP("<") " $8",
		8, {INT8OID, INT8OID, INTERVALOID, TEXTOID, FLOAT8OID, FLOAT8OID, FLOAT8OID, INT4OID}
	},
	[PLAN_EXTEND] = {
		"UPDATE mq.q_%1$d SET vt = " NOW " " OP("+") " $3"
		" WHERE msg_id " OP("=") " $1 AND claimed AND " RECEIPT_MATCHES
		" RETURNING vt",
		3, {INT8OID, INT8OID, INTERVALOID}
	},
	/* SQL chosen in plan_sql(): with or without a dead-letter queue */
	[PLAN_DEAD_LETTER] = {
		NULL,
		7, {INT8ARRAYOID, INT8OID, INT4OID, TEXTOID, TEXTOID, TEXTOID, BOOLOID}
	},
	[PLAN_COUNT_DEAD] = {
		"UPDATE mq.queue SET dead_lettered = dead_lettered " OP("+") " $1"
		" WHERE queue_id " OP("=") " %1$d",
		1, {INT8OID}
	},
	/*
	 * Maintenance looks only at the oldest visible messages, as a reader
	 * would, so a pass costs the same on a queue of any length; readers
	 * dead-letter the exhausted messages further on as they reach them.
	 */
	[PLAN_EXPIRED] = {
		"SELECT msg_id FROM mq.q_%1$d WHERE msg_id " OP("=") " ANY (ARRAY("
		" SELECT msg_id FROM mq.q_%1$d WHERE vt " OP("<=") " " NOW " AND NOT blocked"
		" ORDER BY msg_id LIMIT 10000)) AND attempts " OP(">=") " $1"
		" FOR UPDATE SKIP LOCKED",
		1, {INT4OID}
	},
	[PLAN_SEND_KEYED] = {
		"INSERT INTO mq.q_%1$d (vt, key, payload, headers, blocked)"
		" VALUES (" NOW " " OP("+") " $4, $2, $1, $3,"
		" EXISTS (SELECT FROM mq.q_%1$d WHERE key " OP("=") " $2)) RETURNING msg_id",
		4, {JSONBOID, TEXTOID, JSONBOID, INTERVALOID}
	},
	/* a message is blocked by an older one in the table or in the batch */
	[PLAN_SEND_BATCH_KEYED] = {
		"INSERT INTO mq.q_%1$d (vt, key, payload, headers, blocked)"
		" SELECT " NOW " " OP("+") " $4, u.k, u.p, u.h,"
		" u.k IS NOT NULL AND (pg_catalog.row_number() OVER (PARTITION BY u.k ORDER BY u.n)"
		" " OP(">") " 1 OR EXISTS (SELECT FROM mq.q_%1$d x WHERE x.key " OP("=") " u.k))"
		" FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
		" pg_catalog.unnest($3)) WITH ORDINALITY AS u(p, k, h, n)"
		" ORDER BY u.n RETURNING msg_id",
		4, {JSONBARRAYOID, TEXTARRAYOID, JSONBARRAYOID, INTERVALOID}
	},
	[PLAN_UNBLOCK] = {
		"UPDATE mq.q_%1$d SET blocked = false WHERE msg_id " OP("=")
		" (SELECT msg_id FROM mq.q_%1$d WHERE key " OP("=") " $1"
		" ORDER BY msg_id LIMIT 1) AND blocked",
		1, {TEXTOID}
	},
};

/* $7: only claimed messages (a nack), else any (a claim or maintenance) */
#define DEAD_LETTER_WHERE \
	"msg_id " OP("=") " ANY ($1) AND " RECEIPT_MATCHES " AND attempts " OP(">=") " $3" \
	" AND (claimed OR NOT $7)"

static const char *dead_letter_move_sql =
"WITH d AS (DELETE FROM mq.q_%1$d WHERE " DEAD_LETTER_WHERE " RETURNING *)"
" INSERT INTO mq.q_%2$d (vt, key, payload, headers, dead_letter)"
" SELECT " NOW ", d.key, d.payload, d.headers,"
" pg_catalog.jsonb_build_object('queue', $4, 'msg_id', d.msg_id,"
" 'attempts', d.attempts, 'error', COALESCE($5, d.last_error), 'reason', $6,"
" 'enqueued_at', d.enqueued_at, 'dead_lettered_at', " NOW ")"
" FROM d ORDER BY d.msg_id RETURNING key";

static const char *dead_letter_discard_sql =
"DELETE FROM mq.q_%1$d WHERE " DEAD_LETTER_WHERE " RETURNING key";

static SPIPlanPtr
get_plan(MqQueue *q, PlanKind kind)
{
	const PlanDef *def = &plan_defs[kind];
	char	   *sql;

	if (q->plans[kind] != NULL)
		return q->plans[kind];
	if (kind != PLAN_DEAD_LETTER)
		sql = psprintf(def->sql, q->queue_id);
	else if (q->dlq_id != 0)
		sql = psprintf(dead_letter_move_sql, q->queue_id, q->dlq_id);
	else
		sql = psprintf(dead_letter_discard_sql, q->queue_id);
	return MqQueuePlan(q, kind, sql, def->nargs, def->argtypes);
}

static uint64
run_plan(MqQueue *q, PlanKind kind, Datum *values, const char *nulls, int expected)
{
	return MqQueueRun(q, get_plan(q, kind), values, nulls, expected);
}

/* As run_plan, reading with the latest snapshot (after a key lock). */
static uint64
run_plan_latest(MqQueue *q, PlanKind kind, Datum *values, const char *nulls, int expected)
{
	int			ret = SPI_execute_snapshot(get_plan(q, kind), values, nulls,
										   GetLatestSnapshot(), InvalidSnapshot,
										   false, false, 0);

	if (ret != expected)
		elog(ERROR, "statement %d on queue \"%s\" failed: %s",
			 (int) kind, q->name, SPI_result_code_string(ret));
	return SPI_processed;
}

static inline char
null_flag(bool isnull)
{
	return isnull ? 'n' : ' ';
}

static void
count_acked(MqQueue *q, uint64 n)
{
	for (uint64 i = 0; i < n; i++)
		(void) nextval_internal(q->acked_seq, false);
}

/*
 * Keys are serialized through MQ_KEY_LOCKS transaction locks per queue,
 * key k taking lock hash(k) mod MQ_KEY_LOCKS: a batch of any number of
 * distinct keys takes at most that many locks, so it cannot fill the
 * server's lock table for everyone (one lock per key did at about 16,000
 * keys).  Two keys sharing a lock only wait for each other.
 */
#define MQ_KEY_LOCKS 256

static uint32
key_lock_of(const char *key)
{
	return hash_bytes((const unsigned char *) key, strlen(key)) % MQ_KEY_LOCKS;
}

/*
 * Serialize sends and removals of a key of a keyed queue until the end of
 * the transaction.  An advisory lock tag with field4 = 'mq' keeps it apart
 * from user advisory locks (which use 1 and 2).
 */
static void
lock_key_lock(MqQueue *q, uint32 lock)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, (uint32) q->queue_id, lock, 0x6d71);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

static void
lock_key(MqQueue *q, const char *key)
{
	lock_key_lock(q, key_lock_of(key));
}

static int
cstring_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/*
 * Sort and deduplicate keys (returns how many are distinct) and take their
 * locks in ascending order, so that two batches cannot deadlock.
 */
static int
lock_keys(MqQueue *q, char **keys, int n)
{
	int			nunique = 0;
	bool		want[MQ_KEY_LOCKS] = {false};

	qsort(keys, n, sizeof(char *), cstring_cmp);
	for (int i = 0; i < n; i++)
	{
		if (nunique > 0 && strcmp(keys[nunique - 1], keys[i]) == 0)
			continue;
		keys[nunique++] = keys[i];
		want[key_lock_of(keys[i])] = true;
	}
	for (uint32 lock = 0; lock < MQ_KEY_LOCKS; lock++)
		if (want[lock])
			lock_key_lock(q, lock);
	return nunique;
}

/*
 * After a statement that removed messages and returned their keys: unblock
 * the new oldest message of each key.  A no-op for unkeyed queues.
 */
static void
unblock_removed_keys(MqQueue *q)
{
	char	  **keys;
	int			n = 0;

	if (!q->keyed || SPI_processed == 0)
		return;
	keys = palloc(sizeof(char *) * SPI_processed);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *key = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);

		if (key != NULL)
			keys[n++] = key;
	}
	n = lock_keys(q, keys, n);
	for (int i = 0; i < n; i++)
	{
		Datum		value = CStringGetTextDatum(keys[i]);

		if (run_plan_latest(q, PLAN_UNBLOCK, &value, " ", SPI_OK_UPDATE) > 0)
			MqWaitNoteSend(q->queue_id);
	}
}

/* Move (or discard) exhausted messages among ids; returns how many. */
static uint64
dead_letter(MqQueue *q, ArrayType *ids, MqNullable receipt, MqNullable error,
			const char *reason, bool only_claimed)
{
	Datum		values[7];
	char		nulls[7] = {' ', null_flag(receipt.isnull), ' ', ' ',
	null_flag(error.isnull), ' ', ' '};
	uint64		n;

	values[0] = PointerGetDatum(ids);
	values[1] = receipt.value;
	values[2] = Int32GetDatum(q->max_attempts);
	values[3] = CStringGetTextDatum(q->name);
	values[4] = error.value;
	values[5] = CStringGetTextDatum(reason);
	values[6] = BoolGetDatum(only_claimed);
	n = run_plan(q, PLAN_DEAD_LETTER, values, nulls,
				 q->dlq_id != 0 ? SPI_OK_INSERT_RETURNING : SPI_OK_DELETE_RETURNING);
	unblock_removed_keys(q);
	if (n > 0 && q->dlq_id != 0)
		MqWaitNoteSend(q->dlq_id);
	if (n > 0)
	{
		Datum		count = Int64GetDatum((int64) n);

		run_plan(q, PLAN_COUNT_DEAD, &count, " ", SPI_OK_UPDATE);
	}
	return n;
}

static ArrayType *
int8_array(int64 *ids, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		elems[i] = Int64GetDatum(ids[i]);
	return construct_array_builtin(elems, n, INT8OID);
}

int64
MqStorageSend(MqQueue *q, Datum payload, MqNullable key, MqNullable headers,
			  Interval *delay)
{
	Datum		values[4] = {payload, key.value, headers.value, PointerGetDatum(delay)};
	char		nulls[4] = {' ', null_flag(key.isnull), null_flag(headers.isnull), ' '};
	bool		isnull;

	if (q->keyed && !key.isnull)
	{
		lock_key(q, TextDatumGetCString(key.value));
		run_plan_latest(q, PLAN_SEND_KEYED, values, nulls, SPI_OK_INSERT_RETURNING);
	}
	else
		run_plan(q, PLAN_SEND, values, nulls, SPI_OK_INSERT_RETURNING);
	MqWaitNoteSend(q->queue_id);
	MqNotifySend(q);
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[0],
									   SPI_tuptable->tupdesc, 1, &isnull));
}

void
MqStorageSendBatch(MqQueue *q, ArrayType *payloads, ArrayType *keys,
				   ArrayType *headers, Interval *delay, ReturnSetInfo *rsinfo)
{
	Datum		values[4] = {PointerGetDatum(payloads), PointerGetDatum(keys),
	PointerGetDatum(headers), PointerGetDatum(delay)};
	char		nulls[4] = {' ', null_flag(keys == NULL), null_flag(headers == NULL), ' '};
	uint64		n;

	if (q->keyed && keys != NULL)
	{
		Datum	   *elems;
		bool	   *elem_nulls;
		char	  **strs;
		int			nelems,
					nkeys = 0;

		deconstruct_array_builtin(keys, TEXTOID, &elems, &elem_nulls, &nelems);
		strs = palloc(sizeof(char *) * Max(nelems, 1));
		for (int i = 0; i < nelems; i++)
			if (!elem_nulls[i])
				strs[nkeys++] = TextDatumGetCString(elems[i]);
		lock_keys(q, strs, nkeys);
		n = run_plan_latest(q, PLAN_SEND_BATCH_KEYED, values, nulls, SPI_OK_INSERT_RETURNING);
	}
	else
		n = run_plan(q, PLAN_SEND_BATCH, values, nulls, SPI_OK_INSERT_RETURNING);
	MqWaitNoteSend(q->queue_id);
	MqNotifySend(q);
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		Datum		id = SPI_getbinval(SPI_tuptable->vals[i],
									   SPI_tuptable->tupdesc, 1, &isnull);

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &id, &isnull);
	}
}

/* Claimed rows, sorted by msg_id so the caller gets oldest first. */
typedef struct ClaimedRow
{
	int64		msg_id;
	HeapTuple	tuple;
}			ClaimedRow;

static int
claimed_row_cmp(const void *a, const void *b)
{
	int64		x = ((const ClaimedRow *) a)->msg_id;
	int64		y = ((const ClaimedRow *) b)->msg_id;

	return (x > y) - (x < y);
}

/* Columns of PLAN_CLAIM's RETURNING list. */
enum
{
	C_MSG_ID = 1, C_ATTEMPTS, C_KEY, C_PAYLOAD, C_HEADERS, C_ENQUEUED_AT,
	C_VT, C_LAST_ERROR, C_DEAD_LETTER, C_CLAIMED
};

/* Emit one claimed row as an mq.message. */
static void
put_message(ReturnSetInfo *rsinfo, HeapTuple tup, TupleDesc desc)
{
	static const int from[10] = {C_MSG_ID, C_ATTEMPTS, C_KEY, C_PAYLOAD, C_HEADERS,
	C_ATTEMPTS, C_ENQUEUED_AT, C_VT, C_LAST_ERROR, C_DEAD_LETTER};
	Datum		values[10];
	bool		nulls[10];

	for (int i = 0; i < 10; i++)
		values[i] = SPI_getbinval(tup, desc, from[i], &nulls[i]);
	/* the receipt is the attempt number, as bigint */
	values[1] = Int64GetDatum((int64) DatumGetInt32(values[1]));
	tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
}

/*
 * Claim up to qty messages into rsinfo's tuplestore; returns how many.
 * Exhausted messages met on the way are dead-lettered and the claim is
 * repeated for the shortfall, so they never hide live messages.
 */
uint64
MqStorageClaim(MqQueue *q, int qty, Interval *vt, ReturnSetInfo *rsinfo)
{
	uint64		total = 0;
	int64		token = 0;
	bool		registered = MqConsumerToken(&token);

	/* a registered consumer's claims are released as soon as it dies */
	if (registered)
		MqConsumerSawQueue(q->queue_id);
	while (total < (uint64) qty)
	{
		Datum		values[4] = {Int32GetDatum(qty - (int) total), PointerGetDatum(vt),
		Int32GetDatum(q->max_attempts), Int64GetDatum(token)};
		uint64		n = run_plan(q, PLAN_CLAIM, values, registered ? "    " : "   n",
								 SPI_OK_UPDATE_RETURNING);
		TupleDesc	desc = SPI_tuptable->tupdesc;
		ClaimedRow *rows = palloc(sizeof(ClaimedRow) * Max(n, 1));
		int64	   *exhausted = palloc(sizeof(int64) * Max(n, 1));
		int			nrows = 0,
					nexhausted = 0;

		for (uint64 i = 0; i < n; i++)
		{
			HeapTuple	tup = SPI_tuptable->vals[i];
			bool		isnull;
			int64		id = DatumGetInt64(SPI_getbinval(tup, desc, C_MSG_ID, &isnull));

			if (DatumGetBool(SPI_getbinval(tup, desc, C_CLAIMED, &isnull)))
			{
				rows[nrows].msg_id = id;
				rows[nrows++].tuple = tup;
			}
			else
				exhausted[nexhausted++] = id;
		}
		qsort(rows, nrows, sizeof(ClaimedRow), claimed_row_cmp);
		for (int i = 0; i < nrows; i++)
			put_message(rsinfo, rows[i].tuple, desc);
		total += nrows;

		if (nexhausted == 0)
			break;				/* a short claim means nothing else is visible */
		{
			MqNullable	none = {(Datum) 0, true};

			dead_letter(q, int8_array(exhausted, nexhausted), none, none,
						"visibility timeout lapsed on the last attempt", false);
		}
	}
	return total;
}

bool
MqStorageAck(MqQueue *q, int64 msg_id, MqNullable receipt, bool archive)
{
	Datum		values[2] = {Int64GetDatum(msg_id), receipt.value};
	char		nulls[2] = {' ', null_flag(receipt.isnull)};
	uint64		n;

	if (archive)
		n = run_plan(q, PLAN_ARCHIVE, values, nulls, SPI_OK_INSERT_RETURNING);
	else
		n = run_plan(q, PLAN_ACK, values, nulls, SPI_OK_DELETE_RETURNING);
	unblock_removed_keys(q);
	count_acked(q, n);
	return n > 0;
}

int64
MqStorageAckBatch(MqQueue *q, ArrayType *msg_ids)
{
	Datum		value = PointerGetDatum(msg_ids);
	uint64		n = run_plan(q, PLAN_ACK_BATCH, &value, " ", SPI_OK_DELETE_RETURNING);

	unblock_removed_keys(q);
	count_acked(q, n);
	return (int64) n;
}

/*
 * Release a message for another attempt after delay (NULL: the queue's
 * backoff); at its last attempt, dead-letter it instead.  False when there
 * is no such message or the receipt is stale.
 */
bool
MqStorageRelease(MqQueue *q, int64 msg_id, MqNullable receipt, Interval *delay,
				 MqNullable error)
{
	Datum		values[8] = {
		Int64GetDatum(msg_id), receipt.value, PointerGetDatum(delay), error.value,
		Float8GetDatum(MqIntervalSeconds(&q->retry_delay)),
		Float8GetDatum(q->retry_backoff),
		Float8GetDatum(MqIntervalSeconds(&q->retry_delay_max)),
		Int32GetDatum(q->max_attempts)
	};
	char		nulls[8] = {' ', null_flag(receipt.isnull), null_flag(delay == NULL),
	null_flag(error.isnull), ' ', ' ', ' ', ' '};

	if (run_plan(q, PLAN_RELEASE, values, nulls, SPI_OK_UPDATE) > 0)
	{
		MqWaitNoteSend(q->queue_id);
		return true;
	}
	return dead_letter(q, int8_array(&msg_id, 1), receipt, error,
					   "nack on the last attempt", true) > 0;
}

bool
MqStorageExtend(MqQueue *q, int64 msg_id, MqNullable receipt, Interval *vt,
				TimestampTz *visible_at)
{
	Datum		values[3] = {Int64GetDatum(msg_id), receipt.value, PointerGetDatum(vt)};
	char		nulls[3] = {' ', null_flag(receipt.isnull), ' '};
	bool		isnull;

	if (run_plan(q, PLAN_EXTEND, values, nulls, SPI_OK_UPDATE_RETURNING) == 0)
		return false;
	*visible_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
													SPI_tuptable->tupdesc, 1, &isnull));
	return true;
}

/*
 * Maintenance of one queue: dead-letter the messages among the oldest
 * visible ones whose last attempt's visibility lapsed.
 */
int64
MqStorageMaintain(MqQueue *q)
{
	int64		total = 0;
	MqNullable	none = {(Datum) 0, true};

	for (;;)
	{
		Datum		max_attempts = Int32GetDatum(q->max_attempts);
		uint64		n = run_plan(q, PLAN_EXPIRED, &max_attempts, " ", SPI_OK_SELECT);
		int64	   *ids;

		if (n == 0)
			break;
		ids = palloc(sizeof(int64) * n);
		for (uint64 i = 0; i < n; i++)
		{
			bool		isnull;

			ids[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i],
												 SPI_tuptable->tupdesc, 1, &isnull));
		}
		total += dead_letter(q, int8_array(ids, (int) n), none, none,
							 "visibility timeout lapsed on the last attempt", false);
		if (n < 1000)
			break;
	}
	return total;
}
