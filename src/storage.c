/*-------------------------------------------------------------------------
 *
 * storage.c
 *	  Messages of work queues: send, claim, ack, nack, extend, archive,
 *	  dead-lettering, keyed ordering and the sweep.
 *
 * Layout (docs/concepts.md#storage): segment tables mq.q_<id>_0..3 of which
 * one takes new messages (segment.c), a delayed table mq.q_<id>_d for
 * messages that are not due yet, the archive mq.a_<id>.  Every table has a
 * primary key on msg_id; the delayed table also indexes vt.  A claim
 * changes vt, attempts, claimed and consumer, none indexed in a segment,
 * so with the tables' fillfactor it is a HOT update that adds no index
 * entry; an ack deletes the row.
 *
 * Where a read claims (MqStorageClaim), with mq preloaded:
 *   1. due messages of the delayed table, oldest due first, when
 *      state.c says one may be due;
 *   2. messages on the queue's ring (claims undone by an abort, keys
 *      unblocked, lapses found by the sweep);
 *   3. in each segment, oldest first, the msg_ids of the tickets it takes
 *      (state.c): a range of the primary key that no other reader looks
 *      at.  A read never steps over messages in flight, delayed, or acked
 *      (and dead until the segment is emptied), and concurrent readers
 *      never skip over each other's locked rows.  A send that commits
 *      after the tickets passed its ids puts them on the ring.
 * Every claim locks its rows FOR NO KEY UPDATE SKIP LOCKED, so two readers
 * never hold one message, whatever the hints say.  The sweep looks behind
 * a segment's ticket for claims whose visibility timeout lapsed, and for
 * anything else a hint missed.  Without preloading there are no hints: a
 * read scans each segment from its first msg_id and the delayed table.
 * Reads use the latest snapshot, as foreign-key checks do, so that a read
 * in a REPEATABLE READ or SERIALIZABLE transaction sees what committed
 * after its transaction began and never passes it.
 *
 * The receipt of a delivery is its attempt number: every claim increments
 * attempts, so a receipt from an earlier delivery no longer matches.
 * Messages that have used their last attempt are moved to the dead-letter
 * queue's delayed table (or discarded) by whoever meets them first: a
 * nack, a claim, the sweep or maintenance.  A nack moves its message to
 * the delayed table, due after the backoff.
 *
 * Keyed ordering (ordering = 'key'): of the messages sharing a key, only
 * the oldest has blocked = false.  Whoever removes a keyed message (ack,
 * archive, dead-lettering) unblocks the key's new oldest message and puts
 * it on the ring when its transaction commits; a send inserts blocked when
 * its key already has a message.  Both take the key's lock first
 * (keylocks.c), so a send and a removal of the same key
 * serialize, and the statement after the lock reads with the latest
 * snapshot, so it sees the other's committed rows at any isolation level.
 * The lock also makes msg_ids increase in send order within a key.
 *
 * Statements are prepared once per queue and table and kept (SPI_keepplan)
 * in the queue's cache entry; they name objects schema-qualified and spell
 * out every operator, and run with search_path pinned (queue.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/sequence.h"
#include "miscadmin.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"

#include "consumer.h"
#include "health.h"
#include "keylocks.h"
#include "notify.h"
#include "offsets.h"
#include "segment.h"
#include "shmem.h"
#include "state.h"
#include "storage.h"
#include "wait.h"

/* the tables of a work queue: its segments, then the delayed table */
#define NTABLES (MQ_WORK_SEGMENTS + 1)
#define DELAYED MQ_DELAYED_SEGMENT

typedef enum PlanKind
{
	PLAN_INSERT,
	PLAN_INSERT_BATCH,
	PLAN_CLAIM_RANGE,
	PLAN_CLAIM_SCAN,
	PLAN_CLAIM_DUE,
	PLAN_ACK,
	PLAN_ACK_BATCH,
	PLAN_ARCHIVE,
	PLAN_ARCHIVE_BATCH,
	PLAN_KEYS_OF,
	PLAN_RELEASE,
	PLAN_EXTEND,
	PLAN_DEAD_LETTER,
	PLAN_DEAD_LETTER_SKIP,
	PLAN_UNBLOCK,
	PLAN_SWEEP,
	PLAN_NEXT_LAPSE,
	PLAN_EXHAUSTED,
	PLAN_PURGE,
	PLAN_PER_TABLE,				/* the kinds above have a plan per table */
	PLAN_KEY_EXISTS = PLAN_PER_TABLE,
	PLAN_KEY_HEAD,
	PLAN_DUE_MIN,
	PLAN_TALLY_DEAD,
	PLAN_FOLD_DEAD,
	PLAN_KINDS
}			PlanKind;

#define PLAN_SLOT(kind, table) \
	((kind) < PLAN_PER_TABLE ? (kind) * NTABLES + (table) : \
	 PLAN_PER_TABLE * NTABLES + (kind) - PLAN_PER_TABLE)

StaticAssertDecl(PLAN_PER_TABLE * NTABLES + PLAN_KINDS - PLAN_PER_TABLE <= MQ_METRICS_PLAN_BASE,
				 "too many plans per queue");

#define MAX_ARGS 9

typedef struct PlanDef
{
	const char *sql;			/* %1$s: the table, %2$ld: the queue id, an
								 * int64 (the kinds after PLAN_PER_TABLE:
								 * %1$ld); written with INT64_MODIFIER */
	int			nargs;
	Oid			argtypes[MAX_ARGS];
	bool		own_table_only;	/* updates or deletes in its table and uses
								 * no other relation: its one lock is
								 * RowExclusiveLock on the table */
	bool		not_routable;	/* an INSERT ... SELECT or a data-modifying
								 * WITH, which Citus plans only with its
								 * parameters' values (see get_plan) */
} PlanDef;

/*
 * An insert's vt: Citus evaluates a volatile function in an INSERT on the
 * coordinator, so sends keep it in the statement.
 */
#define NOW "pg_catalog.clock_timestamp()"
/*
 * Otherwise no statement on a queue's tables computes the current time:
 * the caller passes it (GetCurrentTimestamp(), or a time derived from it)
 * as a parameter.  Citus refuses volatile functions in UPDATE and DELETE
 * on distributed tables, and stable ones that take a column (timestamptz
 * + interval) or sit in a CASE or COALESCE (docs/scale-out.md); a
 * parameter is a constant to it, and the statement stays one it routes
 * with its generic plan.  On one server the only difference is that the
 * time is taken just before the statement rather than inside it.
 */
#define RECEIPT_MATCHES "($2 IS NULL OR attempts " OP("=") " $2)"
/*
 * The rows of a batch ($1), locked in msg_id order: LockRows runs above the
 * sort, so two batches lock their common rows in the same order whatever
 * plan each gets (a bitmap scan would go in physical order).
 */
#define LOCKED_IN_ORDER \
	"msg_id " OP("=") " ANY (ARRAY(SELECT msg_id FROM mq.%1$s WHERE msg_id " OP("=") " ANY ($1)" \
	" ORDER BY msg_id FOR UPDATE))"
#define MESSAGE_COLUMNS "msg_id, vt, enqueued_at, attempts, claimed, key, payload," \
	" headers, last_error, dead_letter, blocked, consumer, lapsed"

/*
 * A claim: the sub-select takes the rows, the UPDATE claims those with
 * attempts left and marks the exhausted ones (vt = -infinity, claimed
 * false) for the caller to dead-letter while it still holds their locks.
 * "= ANY (ARRAY(...))" rather than a join keeps the generic plan an index
 * scan whatever LIMIT $1 is, so the plan is made once and reused.  The
 * sub-select returns the ctids of the versions it locked, and the UPDATE
 * fetches them by TID rather than through the primary key a second time
 * (3.5 % of the instructions of a read + ack); nobody can change a version
 * we hold locked.  A version that committed after our snapshot (an unblock
 * met at the lock) is invisible to the TID scan and stays unclaimed: its
 * unblock puts it on the ring.  $5 is
 * when the read began: it takes what was visible before then, so the
 * statements of one read never claim a message twice, whatever its
 * visibility timeout (0 makes a claim visible again at once).
 */
#define CLAIM(where, order) \
	"UPDATE mq.%1$s AS m SET" \
	" vt = CASE WHEN m.attempts " OP("<") " $3 THEN $2" \
	" ELSE '-infinity'::pg_catalog.timestamptz END," \
	" attempts = CASE WHEN m.attempts " OP("<") " $3" \
	" THEN m.attempts " OP("+") " 1 ELSE m.attempts END," \
	" claimed = m.attempts " OP("<") " $3, consumer = $4, lapsed = m.claimed" \
	" WHERE m.ctid " OP("=") " ANY (ARRAY(" \
	" SELECT ctid FROM mq.%1$s WHERE " where " AND vt " OP("<") " $5" \
	" AND NOT blocked ORDER BY " order " LIMIT $1 FOR NO KEY UPDATE SKIP LOCKED))" \
	" RETURNING m.msg_id, m.attempts, m.key, m.payload, m.headers," \
	" m.enqueued_at, m.vt, m.last_error, m.dead_letter, m.claimed, m.lapsed"
#define CLAIM_ARGS INT4OID, TIMESTAMPTZOID, INT4OID, INT8OID, TIMESTAMPTZOID

/*
 * Backoff in seconds: retry_delay * retry_backoff^(attempts-1) capped at
 * retry_delay_max; the exponent is capped too so the power cannot overflow.
 * BACKOFF_UNTIL adds it to $9, the current time as a timestamp in UTC:
 * timestamp + interval and timezone('UTC', ...) are immutable, where
 * timestamptz + interval is not (Citus refuses that with a column in it),
 * and for an interval of seconds both give the same time.
 */
#define BACKOFF \
	"pg_catalog.make_interval(secs => CASE WHEN b.s " OP(">") " $7 THEN $7 ELSE b.s END)"
#define BACKOFF_UNTIL \
	"pg_catalog.timezone('UTC', $9 " OP("+") " " BACKOFF ")"
#define BACKOFF_SECONDS \
	"(SELECT $5 " OP("*") " pg_catalog.power($6, (CASE WHEN attempts " OP(">") " 101 THEN 100" \
	" WHEN attempts " OP("<") " 1 THEN 0 ELSE attempts " OP("-") " 1 END)::pg_catalog.float8) AS s) b"

static const PlanDef plan_defs[PLAN_KINDS] = {
	[PLAN_INSERT] = {
		"INSERT INTO mq.%1$s (msg_id, vt, key, payload, headers, blocked)"
		" VALUES ($1, " NOW " " OP("+") " $5, $2, $3, $4, $6)",
		6, {INT8OID, TEXTOID, JSONBOID, JSONBOID, INTERVALOID, BOOLOID}
	},
	/* SQL made in plan_sql(): with or without keys */
	[PLAN_INSERT_BATCH] = {
		NULL,					/* returns msg_id, blocked */
		5, {JSONBARRAYOID, TEXTARRAYOID, JSONBARRAYOID, INTERVALOID, INT8ARRAYOID}, false, true
	},
	[PLAN_CLAIM_RANGE] = {
		CLAIM("msg_id " OP(">=") " $6 AND msg_id " OP("<") " $7", "msg_id"),
		7, {CLAIM_ARGS, INT8OID, INT8OID}, true
	},
	[PLAN_CLAIM_SCAN] = {
		CLAIM("msg_id " OP(">=") " $6", "msg_id"),
		6, {CLAIM_ARGS, INT8OID}, true
	},
	[PLAN_CLAIM_DUE] = {
		CLAIM("true", "vt"),
		5, {CLAIM_ARGS}, true
	},
	[PLAN_ACK] = {
		"DELETE FROM mq.%1$s WHERE msg_id " OP("=") " $1 AND " RECEIPT_MATCHES
		" RETURNING msg_id, key, claimed, blocked",
		2, {INT8OID, INT8OID}, true
	},
	[PLAN_ACK_BATCH] = {
		"DELETE FROM mq.%1$s WHERE " LOCKED_IN_ORDER
		" RETURNING msg_id, key, claimed, blocked",
		1, {INT8ARRAYOID}
	},
	[PLAN_ARCHIVE] = {
		"WITH d AS (DELETE FROM mq.%1$s WHERE msg_id " OP("=") " $1 AND "
		RECEIPT_MATCHES " RETURNING *)"
		" INSERT INTO mq.a_%2$" INT64_MODIFIER "d (" MESSAGE_COLUMNS ")"
		" SELECT " MESSAGE_COLUMNS " FROM d RETURNING msg_id, key, claimed, blocked",
		2, {INT8OID, INT8OID}, false, true
	},
	[PLAN_ARCHIVE_BATCH] = {
		"WITH d AS (DELETE FROM mq.%1$s WHERE " LOCKED_IN_ORDER " RETURNING *)"
		" INSERT INTO mq.a_%2$" INT64_MODIFIER "d (" MESSAGE_COLUMNS ")"
		" SELECT " MESSAGE_COLUMNS " FROM d RETURNING msg_id, key, claimed, blocked",
		1, {INT8ARRAYOID}, false, true
	},
	/* a batch's keys, to lock before its rows (keys never change) */
	[PLAN_KEYS_OF] = {
		"SELECT DISTINCT key FROM mq.%1$s WHERE msg_id " OP("=") " ANY ($1) AND key IS NOT NULL",
		1, {INT8ARRAYOID}
	},
	/* SQL made in plan_sql(): from a segment, or in the delayed table */
	[PLAN_RELEASE] = {
		NULL,
		9, {INT8OID, INT8OID, TIMESTAMPTZOID, TEXTOID, FLOAT8OID, FLOAT8OID, FLOAT8OID, INT4OID,
		TIMESTAMPOID}, false, true
	},
	[PLAN_EXTEND] = {
		"UPDATE mq.%1$s SET vt = $4,"
		" claimed = $3 " OP(">") " '0'::pg_catalog.interval"
		" WHERE msg_id " OP("=") " $1 AND claimed AND " RECEIPT_MATCHES
		" RETURNING vt",
		4, {INT8OID, INT8OID, INTERVALOID, TIMESTAMPTZOID}, true
	},
	/* SQL made in plan_sql(): with or without a dead-letter queue */
	[PLAN_DEAD_LETTER] = {
		NULL,
		7, {INT8ARRAYOID, INT8OID, INT4OID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID}, false, true
	},
	[PLAN_DEAD_LETTER_SKIP] = {
		NULL,
		7, {INT8ARRAYOID, INT8OID, INT4OID, TEXTOID, TEXTOID, TEXTOID, TIMESTAMPTZOID}, false, true
	},
	[PLAN_UNBLOCK] = {
		"UPDATE mq.%1$s SET blocked = false WHERE msg_id " OP("=") " $1 AND blocked"
		" RETURNING vt",
		1, {INT8OID}, true
	},
	/* behind the ticket: lapsed claims, and anything a hint missed */
	[PLAN_SWEEP] = {
		"SELECT msg_id, attempts, claimed FROM mq.%1$s WHERE msg_id " OP("<") " $1"
		" AND vt " OP("<=") " $2 AND NOT blocked ORDER BY msg_id LIMIT 10000",
		2, {INT8OID, TIMESTAMPTZOID}
	},
	[PLAN_NEXT_LAPSE] = {
		"SELECT pg_catalog.min(vt) FROM mq.%1$s WHERE msg_id " OP("<") " $1"
		" AND claimed AND vt " OP(">") " $2",
		2, {INT8OID, TIMESTAMPTZOID}
	},
	/* maintenance: due messages of the delayed table at their last attempt */
	[PLAN_EXHAUSTED] = {
		"SELECT msg_id FROM mq.%1$s WHERE vt " OP("<=") " $2"
		" AND attempts " OP(">=") " $1 AND NOT blocked ORDER BY vt LIMIT 10000",
		2, {INT4OID, TIMESTAMPTZOID}
	},
	[PLAN_PURGE] = {"DELETE FROM mq.%1$s", 0, {0}},
	/* SQL made in plan_sql(): over every table of the queue */
	[PLAN_KEY_EXISTS] = {NULL, 1, {TEXTOID}},
	[PLAN_KEY_HEAD] = {NULL, 1, {TEXTOID}},
	[PLAN_DUE_MIN] = {
		"SELECT pg_catalog.min(vt) FROM mq.q_%1$" INT64_MODIFIER "d_d WHERE NOT blocked",
		0, {0}
	},
	/*
	 * Dead letters are counted by inserting a row, not by updating the
	 * queue's: a row lock taken in the middle of a transaction, in any order
	 * against message rows, deadlocked nacks against maintenance, and made
	 * every dead-lettering transaction of a queue wait for the one before.
	 * Maintenance folds the rows into mq.queue.dead_lettered.
	 */
	[PLAN_TALLY_DEAD] = {
		"INSERT INTO mq.dead_letter_tally (queue_id, dead_lettered) VALUES (%1$" INT64_MODIFIER "d, $1)",
		1, {INT8OID}
	},
	[PLAN_FOLD_DEAD] = {
		"WITH f AS (DELETE FROM mq.dead_letter_tally WHERE queue_id " OP("=") " %1$" INT64_MODIFIER "d"
		" RETURNING dead_lettered)"
		" UPDATE mq.queue SET dead_lettered = dead_lettered " OP("+") " s.n"
		" FROM (SELECT pg_catalog.sum(f.dead_lettered)::pg_catalog.int8 AS n FROM f) AS s"
		" WHERE queue_id " OP("=") " %1$" INT64_MODIFIER "d AND s.n IS NOT NULL",
		0, {0}
	},
};

/*
 * The messages among $1 at their last attempt.  %2$s: a nack's (claimed
 * ones; waits for a row another transaction holds, as any nack), or SKIP
 * LOCKED for a claim's and maintenance's (any; maintenance never waits for
 * a consumer: a row somebody holds is theirs to ack, nack or claim, and the
 * next pass looks again).  %1$s: the table.
 */
#define DEAD_LETTER_WHERE \
	"msg_id " OP("=") " ANY (SELECT msg_id FROM mq.%1$s WHERE msg_id " OP("=") " ANY ($1)" \
	" AND " RECEIPT_MATCHES " AND attempts " OP(">=") " $3 %2$s)"

#define DEAD_LETTER_NACK "AND claimed FOR UPDATE"
#define DEAD_LETTER_SKIP "FOR UPDATE SKIP LOCKED"

/* both return the removed messages' key, claimed and blocked; %3$ld: the DLQ id */
static const char *dead_letter_move_sql =
"WITH d AS (DELETE FROM mq.%1$s WHERE " DEAD_LETTER_WHERE " RETURNING *),"
" i AS (INSERT INTO mq.q_%3$" INT64_MODIFIER "d_d (msg_id, vt, key, payload, headers, dead_letter)"
" SELECT pg_catalog.nextval('mq.q_%3$" INT64_MODIFIER "d_seq'::pg_catalog.regclass), $7,"
" d.key, d.payload, d.headers,"
" pg_catalog.jsonb_build_object('queue', $4, 'msg_id', d.msg_id,"
" 'attempts', d.attempts, 'error', COALESCE($5, d.last_error), 'reason', $6,"
" 'enqueued_at', d.enqueued_at, 'dead_lettered_at', $7)"
" FROM d ORDER BY d.msg_id)"
" SELECT key, claimed, blocked FROM d";

static const char *dead_letter_discard_sql =
"DELETE FROM mq.%1$s WHERE " DEAD_LETTER_WHERE " RETURNING key, claimed, blocked";

/* a nack: to the delayed table, due at $3 or after the backoff */
static const char *release_move_sql =
"WITH d AS (DELETE FROM mq.%1$s WHERE msg_id " OP("=") " $1 AND claimed AND "
RECEIPT_MATCHES " AND attempts " OP("<") " $8 RETURNING *)"
" INSERT INTO mq.q_%2$" INT64_MODIFIER "d_d (" MESSAGE_COLUMNS ")"
" SELECT msg_id, COALESCE($3, " BACKOFF_UNTIL "), enqueued_at, attempts,"
" false, key, payload, headers, COALESCE($4, last_error), dead_letter, blocked, NULL, false"
" FROM d, LATERAL " BACKOFF_SECONDS " RETURNING vt";

static const char *release_delayed_sql =
"UPDATE mq.%1$s AS m SET vt = COALESCE($3, " BACKOFF_UNTIL "),"
" claimed = false, last_error = COALESCE($4, m.last_error)"
" FROM (SELECT msg_id, attempts FROM mq.%1$s WHERE msg_id " OP("=") " $1) AS r,"
" LATERAL (SELECT $5 " OP("*") " pg_catalog.power($6, (CASE WHEN r.attempts " OP(">") " 101 THEN 100"
" WHEN r.attempts " OP("<") " 1 THEN 0 ELSE r.attempts " OP("-") " 1 END)::pg_catalog.float8) AS s) b"
" WHERE m.msg_id " OP("=") " r.msg_id AND m.claimed AND ($2 IS NULL OR m.attempts " OP("=") " $2)"
" AND m.attempts " OP("<") " $8 RETURNING m.vt";

/*
 * The msg_ids come in $5, taken from the sequence by the caller: on a
 * cluster the statement may run whole on the queue's worker (a keyed one's
 * sub-selects make it a router query), where the sequence is not.
 */
static const char *insert_batch_sql =
"INSERT INTO mq.%1$s (msg_id, vt, key, payload, headers, blocked)"
" SELECT u.i, " NOW " " OP("+") " $4, u.k, u.p, u.h, %2$s"
" FROM ROWS FROM (pg_catalog.unnest($1), pg_catalog.unnest($2),"
" pg_catalog.unnest($3), pg_catalog.unnest($5)) WITH ORDINALITY AS u(p, k, h, i, n)"
" ORDER BY u.n RETURNING msg_id, blocked";

/* ---- plans ---------------------------------------------------------------- */

static const char *
table_name(MqQueue *q, int table)
{
	return MqSegmentTable(q, table);
}

/* "EXISTS (... key = <k>) OR ...": a message of key <k> in any table */
static char *
key_anywhere(MqQueue *q, const char *k)
{
	StringInfoData buf;

	initStringInfo(&buf);
	for (int t = 0; t < NTABLES; t++)
		appendStringInfo(&buf, "%sEXISTS (SELECT FROM mq.%s x WHERE x.key " OP("=") " %s)",
						 t > 0 ? " OR " : "", table_name(q, t), k);
	return buf.data;
}

static char *
plan_sql(MqQueue *q, PlanKind kind, int table)
{
	const char *t = table_name(q, table);
	StringInfoData buf;

	switch (kind)
	{
		case PLAN_INSERT_BATCH:
			return psprintf(insert_batch_sql, t,
							q->keyed ? psprintf("u.k IS NOT NULL AND (pg_catalog.row_number()"
												" OVER (PARTITION BY u.k ORDER BY u.n) " OP(">") " 1"
												" OR %s)", key_anywhere(q, "u.k")) : "false");
		case PLAN_RELEASE:
			return psprintf(table == DELAYED ? release_delayed_sql : release_move_sql,
							t, q->queue_id);
		case PLAN_DEAD_LETTER:
		case PLAN_DEAD_LETTER_SKIP:
			return psprintf(q->dlq_id != 0 ? dead_letter_move_sql : dead_letter_discard_sql,
							t, kind == PLAN_DEAD_LETTER ? DEAD_LETTER_NACK : DEAD_LETTER_SKIP,
							q->dlq_id);
		case PLAN_DUE_MIN:
		case PLAN_TALLY_DEAD:
		case PLAN_FOLD_DEAD:
			return psprintf(plan_defs[kind].sql, q->queue_id);
		case PLAN_KEY_EXISTS:
			return psprintf("SELECT %s", key_anywhere(q, "$1"));
		case PLAN_KEY_HEAD:
			/* the key's oldest message: which table, msg_id, blocked */
			initStringInfo(&buf);
			for (int i = 0; i < NTABLES; i++)
				appendStringInfo(&buf, "%s(SELECT %d AS t, msg_id, blocked FROM mq.%s"
								 " WHERE key " OP("=") " $1 ORDER BY msg_id LIMIT 1)",
								 i > 0 ? " UNION ALL " : "", i, table_name(q, i));
			appendStringInfoString(&buf, " ORDER BY msg_id LIMIT 1");
			return buf.data;
		default:
			return psprintf(plan_defs[kind].sql, t, q->queue_id);
	}
}

/*
 * The kept plan of a statement, generic (MqQueuePlan).  On a queue
 * distributed by Citus, a statement Citus cannot route with a generic plan
 * ("could not create distributed plan": an INSERT ... SELECT, a DELETE in
 * a WITH feeding an INSERT) is planned for each call with its parameters'
 * values instead; none of them is a read, an ack or a single send
 * (docs/scale-out.md, work queues).
 */
static SPIPlanPtr
get_plan(MqQueue *q, PlanKind kind, int table)
{
	int			slot = PLAN_SLOT(kind, table);
	const PlanDef *def = &plan_defs[kind];

	if (q->plans[slot] != NULL)
		return q->plans[slot];
	return MqQueuePlanWith(q, slot, plan_sql(q, kind, table), def->nargs, def->argtypes,
						   q->distributed && def->not_routable ?
						   CURSOR_OPT_CUSTOM_PLAN : CURSOR_OPT_GENERIC_PLAN);
}

/*
 * Whether the statement's only lock before its snapshot may be its table's:
 * on a distributed queue also for one planned per call, whose plan cannot
 * be looked up without parameters; its other tables are locked when it
 * runs, and the workers take their own snapshots after the coordinator's
 * locks anyway.
 */
static bool
locks_own_table(MqQueue *q, PlanKind kind)
{
	return plan_defs[kind].own_table_only || (q->distributed && plan_defs[kind].not_routable);
}

static Oid
table_relid(MqQueue *q, int table)
{
	return table == DELAYED ? q->delayed_relid : q->segments[table].relid;
}

/*
 * Run a kept plan with the latest snapshot, taken after its locks
 * (MqQueueLatestSnapshot): statements after a key lock must see what
 * committed before it, and reads must see what committed after a
 * REPEATABLE READ transaction began.
 */
static uint64
run(MqQueue *q, PlanKind kind, int table, Datum *values, const char *nulls, int expected)
{
	SPIPlanPtr	plan = get_plan(q, kind, table);
	Snapshot	snapshot = locks_own_table(q, kind) ?
		MqQueueLatestSnapshotOf(table_relid(q, table), RowExclusiveLock) :
		MqQueueLatestSnapshot(plan);
	int			ret = SPI_execute_snapshot(plan, values, nulls, snapshot,
										   InvalidSnapshot, false, true, 0);

	if (ret != expected)
		elog(ERROR, "statement %d on queue \"%s\" failed: %s",
			 (int) kind, q->name, SPI_result_code_string(ret));
	return SPI_processed;
}

/* now + interval, as timestamptz + interval does it (the session's time zone) */
static TimestampTz
plus_interval(TimestampTz t, Interval *i)
{
	return DatumGetTimestampTz(DirectFunctionCall2(timestamptz_pl_interval,
												   TimestampTzGetDatum(t), IntervalPGetDatum(i)));
}

static inline char
null_flag(bool isnull)
{
	return isnull ? 'n' : ' ';
}

static int64
int8_col(int row, int col, bool *isnull)
{
	return DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[row], SPI_tuptable->tupdesc, col, isnull));
}

static ArrayType *
int8_array(int64 *ids, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		elems[i] = Int64GetDatum(ids[i]);
	return construct_array_builtin(elems, n, INT8OID);
}

/*
 * The tables where a msg_id may be, most likely first: the segment it was
 * sent to, the delayed table, then the other segments (a message moved out
 * of a segment that was emptied, or sent with a stale view).
 */
static int
tables_for(MqQueue *q, int64 msg_id, int *out)
{
	int			natural = MqSegmentOf(q, msg_id);
	int			n = 0;

	if (natural >= 0)
		out[n++] = natural;
	out[n++] = DELAYED;
	for (int i = 0; i < q->nsegments; i++)
		if (i != natural && q->segments[i].state != MQ_SEG_FREE)
			out[n++] = i;
	return n;
}

/* ---- counts (state.c, for mq.metrics) ------------------------------------ */

/* Where an unclaimed, unblocked message of table is counted. */
static MqCount
count_of(int table)
{
	return table == DELAYED ? MQ_COUNT_DELAYED : MQ_COUNT_READY;
}

/*
 * Count out the messages a statement removed from table; its result has
 * their claimed and blocked flags in columns claimed_col and
 * claimed_col + 1.
 */
static void
count_removed(MqQueue *q, int table, int claimed_col)
{
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		bool		claimed = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
														 claimed_col, &isnull));
		bool		blocked = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc,
														 claimed_col + 1, &isnull));

		MqStateCount(q->queue_id, claimed ? MQ_COUNT_IN_FLIGHT :
					 blocked ? MQ_COUNT_BLOCKED : count_of(table), -1);
	}
}

/* ---- isolation on a cluster ------------------------------------------------ */

/*
 * mq's statements read with the latest snapshot (run), at every isolation
 * level.  Citus runs a distributed queue's statements on its worker in a
 * transaction of the caller's level, whose snapshot under REPEATABLE READ
 * and SERIALIZABLE is its first statement's: a claim there would not see
 * what committed since, so the ranges its tickets take would pass over
 * such messages until the sweep finds them, and in a keyed queue a send
 * or removal after the key's lock would not see the other's committed
 * rows (a message blocked behind a head already gone).  So these refuse
 * those levels on a distributed queue: every read, and on a keyed queue
 * everything that takes a key's lock.  0A000.
 */
static void
require_read_committed(MqQueue *q, const char *what)
{
	if (q->distributed && IsolationUsesXactSnapshot())
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("cannot %s distributed queue \"%s\" in a REPEATABLE READ or SERIALIZABLE transaction",
						what, q->name),
				 errdetail("On a Citus cluster the queue's worker would read with the transaction's first snapshot, not the latest one."),
				 errhint("Use READ COMMITTED.")));
}

static void
require_read_committed_keyed(MqQueue *q, const char *what)
{
	if (q->keyed)
		require_read_committed(q, what);
}

/* ---- keys ------------------------------------------------------------------ */

/* Unblock the key's oldest message if it is blocked. */
static void
unblock_key(MqQueue *q, const char *key)
{
	Datum		value = CStringGetTextDatum(key);
	bool		isnull;
	int			table;
	int64		msg_id;
	Datum		id;

	if (run(q, PLAN_KEY_HEAD, 0, &value, " ", SPI_OK_SELECT) == 0)
		return;
	if (DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 3, &isnull)) == false)
		return;					/* its head is unblocked already */
	table = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	msg_id = int8_col(0, 2, &isnull);
	id = Int64GetDatum(msg_id);
	if (run(q, PLAN_UNBLOCK, table, &id, " ", SPI_OK_UPDATE_RETURNING) == 0)
		return;
	MqStateCount(q->queue_id, MQ_COUNT_BLOCKED, -1);
	MqStateCount(q->queue_id, count_of(table), 1);
	if (table == DELAYED)
		MqStateNoteDue(q->queue_id, DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
																	  SPI_tuptable->tupdesc, 1, &isnull)));
	else
		MqStateRingAtCommit(q, table, msg_id);
	MqWaitNoteSend(q->queue_id);
}

/*
 * After a statement that removed messages and returned their keys in
 * column col: unblock the new oldest message of each key.  A no-op for
 * unkeyed queues.
 */
static void
unblock_removed_keys(MqQueue *q, int col)
{
	char	  **keys;
	int			n = 0;

	if (!q->keyed || SPI_processed == 0)
		return;
	keys = palloc(sizeof(char *) * SPI_processed);
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		char	   *key = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, col);

		if (key != NULL)
			keys[n++] = key;
	}
	n = MqKeyLockMany(q, keys, n);
	for (int i = 0; i < n; i++)
		unblock_key(q, keys[i]);
}

/* ---- dead letters ------------------------------------------------------------ */

/*
 * Move (or discard) exhausted messages of a table among ids; returns how
 * many.  A nack's (nack) waits for their rows, a claim's or maintenance's
 * skips rows another transaction holds.
 */
static uint64
dead_letter(MqQueue *q, int table, ArrayType *ids, MqNullable receipt, MqNullable error,
			const char *reason, bool nack)
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
	values[6] = TimestampTzGetDatum(GetCurrentTimestamp());
	n = run(q, nack ? PLAN_DEAD_LETTER : PLAN_DEAD_LETTER_SKIP, table, values, nulls,
			q->dlq_id != 0 ? SPI_OK_SELECT : SPI_OK_DELETE_RETURNING);
	count_removed(q, table, 2);
	unblock_removed_keys(q, 1);
	if (n > 0 && q->dlq_id != 0)
	{
		MqStateCount(q->dlq_id, MQ_COUNT_DELAYED, (int64) n);
		MqStateNoteDue(q->dlq_id, 0);
		MqWaitNoteSend(q->dlq_id);
	}
	if (n > 0)
	{
		Datum		count = Int64GetDatum((int64) n);

		run(q, PLAN_TALLY_DEAD, 0, &count, " ", SPI_OK_INSERT);
	}
	return n;
}

static uint64
dead_letter_lapsed(MqQueue *q, int table, int64 *ids, int n)
{
	MqNullable	none = {(Datum) 0, true};

	if (n == 0)
		return 0;
	return dead_letter(q, table, int8_array(ids, n), none, none,
					   "visibility timeout lapsed on the last attempt", false);
}

/* ---- send -------------------------------------------------------------------- */

static bool
has_delay(Interval *delay)
{
	return delay->time != 0 || delay->day != 0 || delay->month != 0;
}

/*
 * The table a send goes to: the delayed table when it has a delay, else the
 * current segment, locked first so that maintenance cannot empty it
 * meanwhile, and checked again after the lock, which takes in any change
 * of segments that committed before (an emptied segment is never current).
 *
 * With mq preloaded, the send records its hold on the segment (offsets.c)
 * before it checks: maintenance closes a sealed segment only when no
 * running sender holds it, so either it sees this hold, or it looked
 * before the hold was recorded, after the seal committed, and the check
 * below sees the seal.  The check processes invalidations itself: when
 * this transaction already holds the lock (it claimed from the segment, or
 * sent to it before), taking it again processes nothing, and a send after
 * a rotation and the close of the old segment would put its message past
 * the closed segment's end, where no read looks
 * (t/008_stale_segment_cache.pl).
 */
static int
send_table(MqQueue *q, Interval *delay)
{
	int			table;
	bool		hold;

	if (has_delay(delay))
		return DELAYED;
	hold = MqStateAttach(q);
	for (;;)
	{
		uint64		version = q->segments_version;

		table = q->current;
		LockRelationOid(q->segments[table].relid, RowExclusiveLock);
		if (hold)
			MqHold(q->queue_id, 0, table, q->msg_seq, false);
		AcceptInvalidationMessages();
		MqQueueRefreshSegments(q);
		if (q->segments_version == version && q->current == table)
			break;
	}
	return table;
}

/* After a send to table: wake-ups, and the due time of a delayed message. */
static void
sent(MqQueue *q, int table, Interval *delay)
{
	if (table == DELAYED)
		MqStateNoteDue(q->queue_id, plus_interval(GetCurrentTimestamp(), delay));
	MqWaitNoteSend(q->queue_id);
	MqNotifySend(q);
}

int64
MqStorageSend(MqQueue *q, Datum payload, MqNullable key, MqNullable headers,
			  Interval *delay)
{
	Datum		values[6];
	char		nulls[6] = {' ', null_flag(key.isnull), ' ', null_flag(headers.isnull), ' ', ' '};
	bool		blocked = false;
	int			table;
	int64		msg_id;

	require_read_committed_keyed(q, "send to");
	if (q->keyed && !key.isnull)
	{
		bool		isnull;

		MqKeyLock(q, TextDatumGetCString(key.value));
		run(q, PLAN_KEY_EXISTS, 0, &key.value, " ", SPI_OK_SELECT);
		blocked = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
	}
	table = send_table(q, delay);
	msg_id = MqNextId(q->msg_seq);
	values[0] = Int64GetDatum(msg_id);
	values[1] = key.value;
	values[2] = payload;
	values[3] = headers.value;
	values[4] = PointerGetDatum(delay);
	values[5] = BoolGetDatum(blocked);
	run(q, PLAN_INSERT, table, values, nulls, SPI_OK_INSERT);
	MqStateCount(q->queue_id, blocked ? MQ_COUNT_BLOCKED : count_of(table), 1);
	if (table != DELAYED)
		MqStateNoteSent(q, table, msg_id, msg_id + 1);
	sent(q, table, delay);
	return msg_id;
}

void
MqStorageSendBatch(MqQueue *q, ArrayType *payloads, ArrayType *keys,
				   ArrayType *headers, Interval *delay, ReturnSetInfo *rsinfo)
{
	Datum		values[5] = {PointerGetDatum(payloads), PointerGetDatum(keys),
	PointerGetDatum(headers), PointerGetDatum(delay), 0};
	char		nulls[5] = {' ', null_flag(keys == NULL), null_flag(headers == NULL), ' ', ' '};
	int			table;
	int			nids = ArrayGetNItems(ARR_NDIM(payloads), ARR_DIMS(payloads));
	int64	   *ids;
	uint64		n;

	require_read_committed_keyed(q, "send to");
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
		MqKeyLockMany(q, strs, nkeys);
	}
	table = send_table(q, delay);
	ids = palloc(sizeof(int64) * Max(nids, 1));
	for (int i = 0; i < nids; i++)
		ids[i] = MqNextId(q->msg_seq);
	values[4] = PointerGetDatum(int8_array(ids, nids));
	n = run(q, PLAN_INSERT_BATCH, table, values, nulls, SPI_OK_INSERT_RETURNING);
	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		Datum		id = SPI_getbinval(SPI_tuptable->vals[i],
									   SPI_tuptable->tupdesc, 1, &isnull);
		bool		blocked = DatumGetBool(SPI_getbinval(SPI_tuptable->vals[i],
														 SPI_tuptable->tupdesc, 2, &isnull));

		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, &id, &isnull);
		MqStateCount(q->queue_id, blocked ? MQ_COUNT_BLOCKED : count_of(table), 1);
	}
	/* the ids are consecutive but for other senders' interleaved ones */
	if (n > 0 && table != DELAYED)
	{
		bool		isnull;

		MqStateNoteSent(q, table, int8_col(0, 1, &isnull), int8_col(n - 1, 1, &isnull) + 1);
	}
	sent(q, table, delay);
}

/* ---- claim --------------------------------------------------------------------- */

/* Columns of the claim's RETURNING list. */
enum
{
	C_MSG_ID = 1, C_ATTEMPTS, C_KEY, C_PAYLOAD, C_HEADERS, C_ENQUEUED_AT,
	C_VT, C_LAST_ERROR, C_DEAD_LETTER, C_CLAIMED, C_LAPSED
};

/*
 * A claimed row.  The tuple and its descriptor belong to the claim
 * statement's SPI_tuptable, which lasts until SPI_finish.
 */
typedef struct ClaimedRow
{
	int64		msg_id;
	HeapTuple	tuple;
	TupleDesc	desc;
}			ClaimedRow;

/*
 * One call's claim: what it asks for and what it got.  The rows are kept
 * until the end and emitted sorted by msg_id, so the caller gets the oldest
 * first whichever way each was found (delayed table, ring, tickets).
 */
typedef struct Claim
{
	MqQueue    *q;
	Interval   *vt;
	TimestampTz began;			/* claims what was visible before this */
	int64		token;
	bool		stamped;		/* token is this session's, else NULL */
	int			want;
	int			got;
	ReturnSetInfo *rsinfo;
	ClaimedRow *rows;			/* got of them, room for want */
} Claim;

static int
claimed_row_cmp(const void *a, const void *b)
{
	int64		x = ((const ClaimedRow *) a)->msg_id;
	int64		y = ((const ClaimedRow *) b)->msg_id;

	return (x > y) - (x < y);
}

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
 * Run one claim statement of a table (values from $6 on in extra) and emit
 * what it claimed; exhausted messages it met are dead-lettered.  Returns
 * how many rows the statement returned (claimed or exhausted), and the
 * highest msg_id among them in *last.
 */
static uint64
claim_with(Claim *c, PlanKind kind, int table, Datum *extra, int nextra, int64 *last)
{
	MqQueue    *q = c->q;
	Datum		values[7] = {Int32GetDatum(c->want - c->got),
		TimestampTzGetDatum(plus_interval(GetCurrentTimestamp(), c->vt)),
		Int32GetDatum(q->max_attempts), Int64GetDatum(c->token),
	TimestampTzGetDatum(c->began)};
	char		nulls[8] = "       ";
	uint64		n;
	TupleDesc	desc;
	int64	   *exhausted;
	int			nrows = 0,
				nexhausted = 0;

	if (!c->stamped)
		nulls[3] = 'n';
	for (int i = 0; i < nextra; i++)
		values[5 + i] = extra[i];
	nulls[5 + nextra] = '\0';
	n = run(q, kind, table, values, nulls, SPI_OK_UPDATE_RETURNING);
	desc = SPI_tuptable->tupdesc;
	exhausted = palloc(sizeof(int64) * Max(n, 1));
	*last = PG_INT64_MIN;
	for (uint64 i = 0; i < n; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		bool		isnull;
		int64		id = DatumGetInt64(SPI_getbinval(tup, desc, C_MSG_ID, &isnull));

		bool		lapsed = DatumGetBool(SPI_getbinval(tup, desc, C_LAPSED, &isnull));

		if (id > *last)
			*last = id;
		if (DatumGetBool(SPI_getbinval(tup, desc, C_CLAIMED, &isnull)))
		{
			Assert(c->got + nrows < c->want);
			c->rows[c->got + nrows].msg_id = id;
			c->rows[c->got + nrows].tuple = tup;
			c->rows[c->got + nrows].desc = desc;
			nrows++;
			MqStateNoteClaim(q, table, id);
			/* a claim that took over a lapsed one was in flight already */
			if (!lapsed)
			{
				MqStateCount(q->queue_id, count_of(table), -1);
				MqStateCount(q->queue_id, MQ_COUNT_IN_FLIGHT, 1);
			}
		}
		else
		{
			exhausted[nexhausted++] = id;
			/* marked unclaimed for dead_letter, which counts it out */
			if (lapsed)
			{
				MqStateCount(q->queue_id, MQ_COUNT_IN_FLIGHT, -1);
				MqStateCount(q->queue_id, count_of(table), 1);
			}
		}
	}
	c->got += nrows;
	if (nrows > 0 && table != DELAYED)
		MqStateNoteLapse(q, table, TimestampTzPlusMilliseconds(GetCurrentTimestamp(),
															  (int64) (MqIntervalSeconds(c->vt) * 1000.0)));
	(void) dead_letter_lapsed(q, table, exhausted, nexhausted);
	return n;
}

/* Due messages of the delayed table. */
static void
claim_due(Claim *c, bool hints)
{
	uint64		changes = 0;
	int64		last;
	bool		isnull;
	Datum		d;

	if (hints && MqStateEarliestDue(c->q, &changes) > GetCurrentTimestamp())
		return;
	while (c->got < c->want &&
		   claim_with(c, PLAN_CLAIM_DUE, DELAYED, NULL, 0, &last) > 0)
		;
	if (!hints || c->got >= c->want)
		return;
	/* nothing else is due: learn when the next one is */
	run(c->q, PLAN_DUE_MIN, 0, NULL, NULL, SPI_OK_SELECT);
	d = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	MqStateSetEarliestDue(c->q, isnull ? DT_NOEND : DatumGetTimestampTz(d), changes);
}

/*
 * Messages on the ring.  What this read does not need, or a range holds
 * beyond what it claimed, goes back on the ring.
 */
static void
claim_ring(Claim *c)
{
	MqRingEntry entries[16];
	int			n = MqStatePopRing(c->q, entries, Min(c->want - c->got, 16));

	for (int i = 0; i < n; i++)
	{
		MqRingEntry *e = &entries[i];
		Datum		extra[2] = {Int64GetDatum(e->from), Int64GetDatum(e->to)};
		int			before = c->got;
		int64		last;
		uint64		got;

		if (e->epoch != c->q->segments[e->segment].epoch)
			continue;			/* its segment was emptied since */
		if (c->got >= c->want)
		{
			(void) MqStatePushRing(c->q, e);
			continue;
		}
		got = claim_with(c, PLAN_CLAIM_RANGE, e->segment, extra, 2, &last);
		if (got > 0 && got >= (uint64) (c->want - before) && last + 1 < e->to)
		{
			e->from = last + 1;
			(void) MqStatePushRing(c->q, e);
		}
	}
}

/* Segments to read, oldest (lowest first msg_id) first. */
static int
segments_by_age(MqQueue *q, int *out)
{
	int			n = 0;

	for (int i = 0; i < q->nsegments; i++)
	{
		int			j;

		if (q->segments[i].state == MQ_SEG_FREE)
			continue;
		for (j = n; j > 0 && q->segments[out[j - 1]].lo > q->segments[i].lo; j--)
			out[j] = out[j - 1];
		out[j] = i;
		n++;
	}
	return n;
}

/*
 * The sweep of a segment: behind its ticket, claims whose visibility
 * timeout lapsed and anything else claimable go on the ring (at their last
 * attempt, to the dead-letter queue); then it learns when the next claim
 * there lapses.  Read-only but for dead letters; returns how many.
 */
static uint64
sweep(MqQueue *q, int segment, int64 behind)
{
	Datum		args[2] = {Int64GetDatum(behind), TimestampTzGetDatum(GetCurrentTimestamp())};
	uint64		n = run(q, PLAN_SWEEP, segment, args, "  ", SPI_OK_SELECT);
	int64	   *exhausted = palloc(sizeof(int64) * Max(n, 1));
	int			nexhausted = 0;
	bool		isnull;
	Datum		next;
	uint64		dead;

	for (uint64 i = 0; i < n; i++)
	{
		int64		id = int8_col(i, 1, &isnull);
		int32		attempts = DatumGetInt32(SPI_getbinval(SPI_tuptable->vals[i],
														   SPI_tuptable->tupdesc, 2, &isnull));
		MqRingEntry e = {segment, q->segments[segment].epoch, id, id + 1};

		if (attempts >= q->max_attempts)
			exhausted[nexhausted++] = id;
		else
			(void) MqStatePushRing(q, &e);
	}
	dead = dead_letter_lapsed(q, segment, exhausted, nexhausted);
	args[1] = TimestampTzGetDatum(GetCurrentTimestamp());
	run(q, PLAN_NEXT_LAPSE, segment, args, "  ", SPI_OK_SELECT);
	next = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
	MqStateSweepDone(q, segment, isnull ? 0 : DatumGetTimestampTz(next));
	if (n > dead)
		MqWaitWake(q->queue_id);
	return dead;
}

/* Sweep the segments that are due. */
static void
sweep_due(MqQueue *q)
{
	TimestampTz now = GetCurrentTimestamp();

	for (int i = 0; i < q->nsegments; i++)
		if (q->segments[i].state != MQ_SEG_FREE && MqStateSweepDue(q, i, now))
			(void) sweep(q, i, MqStateTicket(q, i));
}

/* How far a reader may take tickets in a segment. */
static int64
ticket_bound(MqQueue *q, int segment, int64 visible_end)
{
	int64		max_id;

	if (q->segments[segment].state == MQ_SEG_SEALED &&
		MqStateSegmentClosed(q, segment, &max_id) && max_id < visible_end)
		return max_id + 1;
	return visible_end;
}

/*
 * Claim through tickets in one segment.  A range with no claimable message
 * (ids taken by rolled-back or delayed sends, messages already gone) makes
 * the next one four times larger, so that a stretch of any length costs a
 * few range scans; what a range had beyond what was asked is given back.
 */
static void
claim_tickets(Claim *c, int segment, int64 visible_end)
{
	int64		bound = ticket_bound(c->q, segment, visible_end);
	int64		size = c->want - c->got;

	while (c->got < c->want)
	{
		MqTickets	t;
		Datum		extra[2];
		int64		last;
		int			before = c->got;
		uint64		n;

		if (!MqStateTakeTickets(c->q, segment, bound, size, &t))
			break;
		MqStateNotePending(c->q, &t);
		extra[0] = Int64GetDatum(t.from);
		extra[1] = Int64GetDatum(t.to);
		n = claim_with(c, PLAN_CLAIM_RANGE, segment, extra, 2, &last);
		MqStateClearPending();
		if (n > 0 && n >= (uint64) (c->want - before) && last + 1 < t.to)
			MqStateReturnTickets(c->q, segment, t.epoch, last + 1);
		/*
		 * No cap on the growth: a range costs its index range scan, whatever
		 * its width, so a gap of any size (a sequence moved by setval, ids
		 * taken by a flood of rolled-back sends) costs a few dozen ranges.
		 */
		size = n == 0 ? Min(size, PG_INT64_MAX / 4) * 4 : c->want - c->got;
	}
}

/*
 * Claim up to qty messages into rsinfo's tuplestore; returns how many.
 * Exhausted messages met on the way are dead-lettered and the claim goes
 * on for the shortfall, so they never hide live messages.
 */
uint64
MqStorageClaim(MqQueue *q, int qty, Interval *vt, ReturnSetInfo *rsinfo)
{
	Claim		c = {q, vt, GetCurrentTimestamp(), 0, false, qty, 0, rsinfo, NULL};
	bool		hints = MqStateAttach(q);
	int			order[MQ_MAX_SEGMENTS];
	int			nsegments = segments_by_age(q, order);

	require_read_committed(q, "read");
	c.rows = palloc(sizeof(ClaimedRow) * Max(qty, 1));
	c.stamped = MqConsumerToken(&c.token);
	/* stamped claims are released as soon as the session ends */
	if (c.stamped)
		MqConsumerSawQueue(q->queue_id);

	claim_due(&c, hints);
	if (hints)
	{
		int64		visible_end;

		sweep_due(q);
		if (c.got < c.want)
			claim_ring(&c);
		/* every id below it was handed out; senders ring what commits late */
		visible_end = MqSequenceEnd(q->msg_seq);
		for (int i = 0; i < nsegments && c.got < c.want; i++)
			claim_tickets(&c, order[i], visible_end);
	}
	else
	{
		for (int i = 0; i < nsegments && c.got < c.want; i++)
		{
			Datum		lo = Int64GetDatum(q->segments[order[i]].lo);
			int64		last;

			while (c.got < c.want &&
				   claim_with(&c, PLAN_CLAIM_SCAN, order[i], &lo, 1, &last) > 0)
				;
		}
	}
	qsort(c.rows, c.got, sizeof(ClaimedRow), claimed_row_cmp);
	for (int i = 0; i < c.got; i++)
		put_message(rsinfo, c.rows[i].tuple, c.rows[i].desc);
	/* the rows stay locked past their timeout if the transaction does */
	if (c.got > 0)
		MqHealthNoteClaim(q->queue_id, plus_interval(c.began, vt));
	return c.got;
}

/* When a waiting read should look again though nothing was sent (0: poll). */
TimestampTz
MqStorageNextTimedEvent(MqQueue *q)
{
	return MqStateAttach(q) ? MqStateNextTimedEvent(q) : 0;
}

/* ---- ack, archive, nack, extend ------------------------------------------ */

static void
count_acked(MqQueue *q, uint64 n)
{
	for (uint64 i = 0; i < n; i++)
		(void) nextval_internal(q->acked_seq, false);
}

bool
MqStorageAck(MqQueue *q, int64 msg_id, MqNullable receipt, bool archive)
{
	Datum		values[2] = {Int64GetDatum(msg_id), receipt.value};
	char		nulls[2] = {' ', null_flag(receipt.isnull)};
	int			tables[NTABLES];
	int			ntables = tables_for(q, msg_id, tables);

	require_read_committed_keyed(q, archive ? "archive in" : "ack in");
	for (int i = 0; i < ntables; i++)
	{
		uint64		n = archive ?
			run(q, PLAN_ARCHIVE, tables[i], values, nulls, SPI_OK_INSERT_RETURNING) :
			run(q, PLAN_ACK, tables[i], values, nulls, SPI_OK_DELETE_RETURNING);

		if (n > 0)
		{
			count_removed(q, tables[i], 3);
			unblock_removed_keys(q, 2);
			count_acked(q, n);
			return true;
		}
	}
	return false;
}

static int
int64_cmp(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
}

/*
 * Lock the keys of the messages among ids (any table), before any of their
 * rows: a batch that locked its rows first and then its keys deadlocked
 * against another that did the same with the rows of the other's keys
 * (keyed_batch.spec).  A key's lock always comes before the rows of its
 * messages in a removal, and a message's key never changes, so reading
 * the keys without locks is enough.
 */
static void
lock_keys_of(MqQueue *q, ArrayType *ids, const int *tables, int ntables)
{
	Datum		value = PointerGetDatum(ids);
	char	  **keys = NULL;
	int			n = 0,
				size = 0;

	for (int t = 0; t < ntables; t++)
	{
		run(q, PLAN_KEYS_OF, tables[t], &value, " ", SPI_OK_SELECT);
		if (n + (int) SPI_processed > size)
		{
			size = Max(2 * size, n + (int) SPI_processed);
			keys = keys ? repalloc(keys, sizeof(char *) * size) : palloc(sizeof(char *) * size);
		}
		for (uint64 i = 0; i < SPI_processed; i++)
			keys[n++] = SPI_getvalue(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1);
	}
	if (n > 0)
		(void) MqKeyLockMany(q, keys, n);
}

/*
 * Ack or archive many (mq.ack and mq.archive with bigint[]); returns how
 * many were removed.  Locks come in one order in every batch, so that two
 * batches never deadlock whatever order their ids are given in: the keys
 * (keylocks.c, by hash), then the rows table by table, segments oldest
 * first and then the delayed table, in msg_id order within each; each
 * table gets the ids not found yet.
 */
int64
MqStorageAckBatch(MqQueue *q, ArrayType *msg_ids, bool archive)
{
	Datum	   *elems;
	bool	   *elem_nulls;
	int			nelems;
	int			tables[NTABLES];
	int			ntables;
	int64	   *left;
	int			nleft = 0;
	int64		acked = 0;

	require_read_committed_keyed(q, archive ? "archive in" : "ack in");
	deconstruct_array(msg_ids, INT8OID, sizeof(int64), FLOAT8PASSBYVAL, TYPALIGN_DOUBLE,
					  &elems, &elem_nulls, &nelems);
	if (nelems == 0)
		return 0;
	left = palloc(sizeof(int64) * nelems);
	for (int i = 0; i < nelems; i++)
		left[i] = DatumGetInt64(elems[i]);
	qsort(left, nelems, sizeof(int64), int64_cmp);
	for (int i = 0; i < nelems; i++)
		if (nleft == 0 || left[nleft - 1] != left[i])
			left[nleft++] = left[i];
	ntables = segments_by_age(q, tables);
	tables[ntables++] = DELAYED;
	if (q->keyed)
		lock_keys_of(q, int8_array(left, nleft), tables, ntables);
	for (int t = 0; t < ntables && nleft > 0; t++)
	{
		Datum		value = PointerGetDatum(int8_array(left, nleft));
		uint64		n = archive ?
			run(q, PLAN_ARCHIVE_BATCH, tables[t], &value, " ", SPI_OK_INSERT_RETURNING) :
			run(q, PLAN_ACK_BATCH, tables[t], &value, " ", SPI_OK_DELETE_RETURNING);
		int64	   *found;
		int			kept = 0;
		uint64		r = 0;

		if (n == 0)
			continue;
		acked += n;
		count_acked(q, n);
		count_removed(q, tables[t], 3);
		/* drop what this table had from the ids left (both sorted) */
		found = palloc(sizeof(int64) * n);
		for (uint64 i = 0; i < n; i++)
		{
			bool		isnull;

			found[i] = int8_col(i, 1, &isnull);
		}
		qsort(found, n, sizeof(int64), int64_cmp);
		for (int i = 0; i < nleft; i++)
		{
			while (r < n && found[r] < left[i])
				r++;
			if (r >= n || found[r] != left[i])
				left[kept++] = left[i];
		}
		nleft = kept;
		unblock_removed_keys(q, 2);
	}
	return acked;
}

/*
 * Release a message for another attempt after delay (NULL: the queue's
 * backoff), into the delayed table; at its last attempt, dead-letter it
 * instead.  False when there is no such message or the receipt is stale.
 */
bool
MqStorageRelease(MqQueue *q, int64 msg_id, MqNullable receipt, Interval *delay,
				 MqNullable error)
{
	TimestampTz now = GetCurrentTimestamp();

	/* $9 is now as a timestamp in UTC: a timestamptz's value is just that */
	Datum		values[9] = {
		Int64GetDatum(msg_id), receipt.value,
		delay == NULL ? (Datum) 0 : TimestampTzGetDatum(plus_interval(now, delay)), error.value,
		Float8GetDatum(MqIntervalSeconds(&q->retry_delay)),
		Float8GetDatum(q->retry_backoff),
		Float8GetDatum(MqIntervalSeconds(&q->retry_delay_max)),
		Int32GetDatum(q->max_attempts), TimestampGetDatum((Timestamp) now)
	};
	char		nulls[9] = {' ', null_flag(receipt.isnull), null_flag(delay == NULL),
	null_flag(error.isnull), ' ', ' ', ' ', ' ', ' '};
	int			tables[NTABLES];
	int			ntables = tables_for(q, msg_id, tables);

	require_read_committed_keyed(q, "nack in");
	for (int i = 0; i < ntables; i++)
	{
		int			expected = tables[i] == DELAYED ? SPI_OK_UPDATE_RETURNING : SPI_OK_INSERT_RETURNING;

		if (run(q, PLAN_RELEASE, tables[i], values, nulls, expected) > 0)
		{
			bool		isnull;

			MqStateCount(q->queue_id, MQ_COUNT_IN_FLIGHT, -1);
			MqStateCount(q->queue_id, MQ_COUNT_DELAYED, 1);
			MqStateNoteDue(q->queue_id, DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
																		  SPI_tuptable->tupdesc, 1, &isnull)));
			MqWaitNoteSend(q->queue_id);
			return true;
		}
	}
	for (int i = 0; i < ntables; i++)
		if (dead_letter(q, tables[i], int8_array(&msg_id, 1), receipt, error,
						"nack on the last attempt", true) > 0)
			return true;
	return false;
}

bool
MqStorageExtend(MqQueue *q, int64 msg_id, MqNullable receipt, Interval *vt,
				TimestampTz *visible_at)
{
	Datum		values[4] = {Int64GetDatum(msg_id), receipt.value, PointerGetDatum(vt),
		TimestampTzGetDatum(plus_interval(GetCurrentTimestamp(), vt))};
	char		nulls[4] = {' ', null_flag(receipt.isnull), ' ', ' '};
	int			tables[NTABLES];
	int			ntables = tables_for(q, msg_id, tables);

	for (int i = 0; i < ntables; i++)
	{
		if (run(q, PLAN_EXTEND, tables[i], values, nulls, SPI_OK_UPDATE_RETURNING) > 0)
		{
			bool		isnull;

			*visible_at = DatumGetTimestampTz(SPI_getbinval(SPI_tuptable->vals[0],
															SPI_tuptable->tupdesc, 1, &isnull));
			/* extending by 0 releases the claim (as SQS's 0 visibility) */
			if (MqIntervalSeconds(vt) == 0)
			{
				MqStateCount(q->queue_id, MQ_COUNT_IN_FLIGHT, -1);
				MqStateCount(q->queue_id, count_of(tables[i]), 1);
			}
			if (tables[i] == DELAYED)
				MqStateNoteDue(q->queue_id, *visible_at);
			else
				MqStateNoteLapse(q, tables[i], *visible_at);
			return true;
		}
	}
	return false;
}

/*
 * Delete every message of the queue (mq.purge); returns how many.  A keyed
 * queue's keys are all locked first, and the deletes read with the latest
 * snapshot, taken after that lock: a keyed send that was running saw its
 * key's head and inserted its message blocked, and deleting by an older
 * snapshot (REPEATABLE READ) would remove the head but leave that message,
 * blocked with nothing ahead of it to unblock it (keyed_purge.spec).
 */
int64
MqStoragePurge(MqQueue *q)
{
	int64		n = 0;

	require_read_committed_keyed(q, "purge");
	if (q->keyed)
		MqKeyLockAll(q);
	for (int t = 0; t < NTABLES; t++)
		n += run(q, PLAN_PURGE, t, NULL, NULL, SPI_OK_DELETE);
	return n;
}

/*
 * Maintenance of one work queue: the segments (segment.c), a sweep of each
 * (with preloading), in the delayed table the due messages whose last
 * attempt lapsed, and the dead-letter count folded into mq.queue.  Returns how many messages were dead-lettered or moved.
 */
int64
MqStorageMaintain(MqQueue *q)
{
	int64		total = MqSegmentMaintain(q);
	Datum		args[2] = {Int32GetDatum(q->max_attempts), 0};
	uint64		n;

	/* without hints, the whole of each segment is looked at */
	bool		hints = MqStateAttach(q);

	for (int i = 0; i < q->nsegments; i++)
		if (q->segments[i].state != MQ_SEG_FREE)
			total += sweep(q, i, hints ? MqStateTicket(q, i) : PG_INT64_MAX);
	args[1] = TimestampTzGetDatum(GetCurrentTimestamp());
	n = run(q, PLAN_EXHAUSTED, DELAYED, args, "  ", SPI_OK_SELECT);
	if (n > 0)
	{
		int64	   *ids = palloc(sizeof(int64) * n);
		bool		isnull;

		for (uint64 i = 0; i < n; i++)
			ids[i] = int8_col(i, 1, &isnull);
		total += dead_letter_lapsed(q, DELAYED, ids, (int) n);
	}
	run(q, PLAN_FOLD_DEAD, 0, NULL, NULL, SPI_OK_UPDATE);
	return total;
}
