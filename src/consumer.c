/*-------------------------------------------------------------------------
 *
 * consumer.c
 *	  Liveness: the claims of a session are released when it ends (exit,
 *	  crash, dropped connection), whether or not it registered; a session
 *	  that calls mq.register_consumer() is also released when it stops
 *	  heartbeating for longer than its timeout, and is listed, by name, in
 *	  mq.consumers.  Released messages are visible again at once and the
 *	  session's partition leases are freed, instead of waiting out
 *	  visibility timeouts and session timeouts.
 *
 * Claims record their owner: with mq preloaded, a session stamps the
 * messages it reads (column consumer) and the group members it polls as
 * (group_member.session) with its token, (backend start in ms << 22) | pid,
 * unique among the sessions of one server run and ordered by start time.
 * A session that is not registered stamps nothing while
 * mq.release_on_session_end is off: its claims then keep plain
 * visibility-timeout semantics (a claim handed to another process, or read
 * through a transaction pooler whose server connections come and go).
 * The stamp is the claim's owner, not the reader's process: a program that
 * reads on one connection and acks on another (mq-worker) loses its claims
 * when the reading connection ends, and only then.
 *
 * Shared state: a slot per backend, indexed by its backend id, taken by
 * the session's first stamp or registration, and MQ_ENDED_RECORDS records
 * of sessions that ended.  When a session ends, its exit callback frees its
 * slot and leaves a record (its database, token and queues) for the
 * maintenance of its database, and asks the maintenance launcher (its
 * latch) for a pass there at once; that pass releases the claims and
 * removes the record.  A crash restart empties shared memory, and records
 * may run out (sessions that come and go in a database nobody maintains),
 * so a database can also be swept: every claim and lease whose token is no
 * live session's is released.  Liveness is read from the slots after the
 * stamps were read, so a stamp seen belongs to a session that had its slot
 * by then: it is either still there (alive) or gone for good (dead).  Every
 * database sweeps once per server run (claims from before a restart), and
 * when the records are full the database that has the most gives them all
 * up for a sweep of its own (MQ_SWEEP_MARKS marks say which databases must
 * sweep; when they are full too, every database sweeps once).  So no
 * release is lost: a record or a sweep covers every session that ended.
 * A heartbeat that lapsed releases the slot's claims once; the slot revives
 * at its next heartbeat.
 *
 * Locking: one LWLock guards all slots' lifecycle fields, the records and
 * the marks; a session updates its own heartbeat time without it (an
 * aligned 8-byte store).
 *
 * Needs shared_preload_libraries = 'mq' (registration raises 55000
 * otherwise; without it claims are never stamped).  Maintenance is
 * mq._release_consumers(), run by mq.maintain() and so by the background
 * worker every mq.maintenance_interval, and on its own at once after a
 * session ended (worker.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "consumer.h"
#include "pooler.h"
#include "keylocks.h"
#include "queue.h"
#include "segment.h"
#include "shmem.h"
#include "state.h"
#include "wait.h"

PG_FUNCTION_INFO_V1(mq_register_consumer);
PG_FUNCTION_INFO_V1(mq_unregister_consumer);
PG_FUNCTION_INFO_V1(mq_consumer_heartbeat);
PG_FUNCTION_INFO_V1(mq_consumers);
PG_FUNCTION_INFO_V1(mq_release_consumers);
PG_FUNCTION_INFO_V1(mq_consumer_in_flight);

#define MQ_ENDED_RECORDS 1024
#define MQ_CONSUMER_QUEUES 32
#define MQ_SWEEP_MARKS 1024
#define MQ_RELEASE_REQUESTS 64
#define CONSUMER_ID_LEN 128

bool		MqReleaseOnSessionEnd = true;

typedef enum SlotState
{
	SLOT_FREE = 0,
	SLOT_STAMPING,				/* session stamps its claims, not registered */
	SLOT_ALIVE,					/* session registered and heartbeating */
	SLOT_LAPSED,				/* heartbeat timed out, claims released */
	SLOT_DEAD					/* session ended, claims to release (records) */
} SlotState;

typedef struct ConsumerSlot
{
	SlotState	state;
	bool		registered;		/* listed in mq.consumers */
	int			pid;
	Oid			database;
	int64		token;
	char		consumer_id[CONSUMER_ID_LEN];
	TimestampTz registered_at;
	TimestampTz last_heartbeat;
	int64		timeout_ms;
	int			nqueues;		/* -1: too many to list, sweep all */
	int64		queues[MQ_CONSUMER_QUEUES];
} ConsumerSlot;

/*
 * A database must sweep while swept is below the larger of wanted and
 * sweep_all; one without a mark sweeps at every pass.
 */
typedef struct SweepMark
{
	Oid			database;
	uint64		wanted;			/* epoch of its last request, 0: none */
	uint64		swept;			/* epoch its last sweep covered */
} SweepMark;

typedef struct ConsumerShared
{
	LWLock	   *lock;
	Latch	   *maintainer;		/* the maintenance launcher's, or NULL */
	uint64		epoch;			/* sweep requests so far */
	uint64		sweep_all;		/* every database sweeps up to this epoch */
	int			nmarks;
	SweepMark	marks[MQ_SWEEP_MARKS];
	/* databases where a session ended since the launcher last looked */
	int			nrequests;		/* > MQ_RELEASE_REQUESTS: all of them */
	Oid			requests[MQ_RELEASE_REQUESTS];
	/* sessions that ended, state SLOT_DEAD, until maintenance released them */
	ConsumerSlot ended[MQ_ENDED_RECORDS];
	int			nslots;			/* MaxBackends, one per backend id */
	ConsumerSlot slots[FLEXIBLE_ARRAY_MEMBER];
} ConsumerShared;

static ConsumerShared *shared = NULL;
static ConsumerSlot *my_slot = NULL;
static bool exit_callback_set = false;

static Size
shared_size(void)
{
	return add_size(offsetof(ConsumerShared, slots),
					mul_size(MaxBackends, sizeof(ConsumerSlot)));
}

/* Slot i of all slots then all records, for loops over both. */
static ConsumerSlot *
slot_at(int i)
{
	return i < shared->nslots ? &shared->slots[i] : &shared->ended[i - shared->nslots];
}

static int
all_slots(void)
{
	return shared->nslots + MQ_ENDED_RECORDS;
}

/* Called from _PG_init: the setting whose rule lives here. */
void
MqConsumerInit(void)
{
	DefineCustomBoolVariable("mq.release_on_session_end",
							 "Whether the messages this session claims, and the partitions it polls, are released when the session ends.",
							 "Off: a session that did not call mq.register_consumer stamps nothing, and its claims last their visibility timeout, as for a claim handed to another process.",
							 &MqReleaseOnSessionEnd, true, PGC_USERSET, 0,
							 NULL, NULL, NULL);
}

void
MqConsumerShmemRequest(void)
{
	RequestAddinShmemSpace(MAXALIGN(shared_size()));
	RequestNamedLWLockTranche("mq consumers", 1);
}

void
MqConsumerShmemStartup(void)
{
	bool		found;

	shared = ShmemInitStruct("mq consumers", shared_size(), &found);
	if (!found)
	{
		memset(shared, 0, shared_size());
		shared->nslots = MaxBackends;
		shared->lock = &(GetNamedLWLockTranche("mq consumers"))->lock;
		/* a new run: every database sweeps the claims from before it */
		shared->epoch = 1;
		shared->sweep_all = 1;
	}
}

static void
require_shared(void)
{
	MqRequirePreload("registered consumers");
}

/* milliseconds since 2000 (40 bits for centuries) and the pid (22 bits) */
static int64
token_of(TimestampTz start, int pid)
{
	return ((int64) (start / 1000) << 22) | (pid & 0x3FFFFF);
}

/* This database's sweep mark; with add, made if there is room.  Locked. */
static SweepMark *
mark_of(Oid database, bool add)
{
	for (int i = 0; i < shared->nmarks; i++)
		if (shared->marks[i].database == database)
			return &shared->marks[i];
	if (!add || shared->nmarks >= MQ_SWEEP_MARKS)
		return NULL;
	shared->marks[shared->nmarks].database = database;
	shared->marks[shared->nmarks].wanted = 0;
	shared->marks[shared->nmarks].swept = 0;
	return &shared->marks[shared->nmarks++];
}

/*
 * The records are full: the database with the most records gives them all
 * up and sweeps instead, so that sessions ending in a database nobody
 * maintains cost the others nothing.  Locked exclusively.
 */
static void
records_to_sweep(void)
{
	Oid			crowded = InvalidOid;
	int			most = 0;
	SweepMark  *mark;

	for (int i = 0; i < MQ_ENDED_RECORDS; i++)
	{
		int			n = 0;

		for (int j = 0; j < MQ_ENDED_RECORDS; j++)
			n += shared->ended[j].database == shared->ended[i].database;
		if (n > most)
		{
			most = n;
			crowded = shared->ended[i].database;
		}
	}
	for (int i = 0; i < MQ_ENDED_RECORDS; i++)
		if (shared->ended[i].database == crowded)
			shared->ended[i].state = SLOT_FREE;
	mark = mark_of(crowded, true);
	if (mark != NULL)
		mark->wanted = ++shared->epoch;
	else
		shared->sweep_all = ++shared->epoch;
}

/* Ask the launcher for a release pass in this database.  Locked. */
static void
request_release(Oid database)
{
	bool		known = false;

	for (int i = 0; i < Min(shared->nrequests, MQ_RELEASE_REQUESTS); i++)
		known |= shared->requests[i] == database;
	if (!known && shared->nrequests < MQ_RELEASE_REQUESTS)
		shared->requests[shared->nrequests] = database;
	if (!known && shared->nrequests <= MQ_RELEASE_REQUESTS)
		shared->nrequests++;
	if (shared->maintainer != NULL)
		SetLatch(shared->maintainer);
}

/*
 * When this session ends, however it ends short of a crash (which
 * restarts the server): free its slot, leave a record for the maintenance
 * of its database and wake the launcher.  Runs after the session's
 * transaction was aborted (ShutdownPostgres is an earlier callback), so
 * every claim the record covers has committed.
 */
static void
consumer_exit(int code, Datum arg)
{
	ConsumerSlot *record = NULL;

	if (my_slot == NULL)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int pass = 0; pass < 2 && record == NULL; pass++)
	{
		if (pass == 1)
			records_to_sweep();
		for (int i = 0; i < MQ_ENDED_RECORDS && record == NULL; i++)
			if (shared->ended[i].state == SLOT_FREE)
				record = &shared->ended[i];
	}
	memcpy(record, my_slot, sizeof(ConsumerSlot));
	record->state = SLOT_DEAD;
	record->last_heartbeat = GetCurrentTimestamp();
	my_slot->state = SLOT_FREE;
	request_release(MyDatabaseId);
	LWLockRelease(shared->lock);
	my_slot = NULL;
}

/*
 * Take this backend's slot (its backend id's), with the exit callback that
 * gives it back.  False for a process without a backend id.
 */
static bool
take_slot(void)
{
	ConsumerSlot *slot;

	if (MyBackendId < 1 || MyBackendId > shared->nslots)
		return false;
	slot = &shared->slots[MyBackendId - 1];
	if (!exit_callback_set)
	{
		on_shmem_exit(consumer_exit, (Datum) 0);
		exit_callback_set = true;
	}
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	memset(slot, 0, sizeof(ConsumerSlot));
	slot->state = SLOT_STAMPING;
	slot->pid = MyProcPid;
	slot->database = MyDatabaseId;
	slot->token = token_of(MyStartTimestamp, MyProcPid);
	LWLockRelease(shared->lock);
	my_slot = slot;
	return true;
}

/*
 * The token to stamp this session's claims and leases with; false: stamp
 * nothing.  A registered session always stamps (and heartbeats here); an
 * unregistered one while mq.release_on_session_end is on and mq.pool_mode
 * is not transaction.  The first stamp
 * takes the session's slot, before the claim it is for: the rule the sweep
 * relies on.
 */
bool
MqConsumerToken(int64 *token)
{
	/* a transaction-pooled session outlives its clients (pooler.c) */
	bool		release = MqReleaseOnSessionEnd && !MqTransactionPooled();

	if (my_slot == NULL)
	{
		if (shared == NULL || !release || !take_slot())
			return false;
	}
	else if (my_slot->registered)
	{
		my_slot->last_heartbeat = GetCurrentTimestamp();
		if (my_slot->state == SLOT_LAPSED)
		{
			LWLockAcquire(shared->lock, LW_EXCLUSIVE);
			my_slot->state = SLOT_ALIVE;
			LWLockRelease(shared->lock);
		}
	}
	else if (!release)
		return false;
	*token = my_slot->token;
	return true;
}

/* Remember that this session holds claims in queue_id. */
void
MqConsumerSawQueue(int64 queue_id)
{
	if (my_slot == NULL || my_slot->nqueues < 0)
		return;
	for (int i = 0; i < my_slot->nqueues; i++)
		if (my_slot->queues[i] == queue_id)
			return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (my_slot->nqueues < MQ_CONSUMER_QUEUES)
		my_slot->queues[my_slot->nqueues++] = queue_id;
	else
		my_slot->nqueues = -1;
	LWLockRelease(shared->lock);
}

/* The launcher's latch, set when a session leaves a record (NULL: none). */
void
MqConsumerSetMaintainer(Latch *latch)
{
	if (shared == NULL)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	shared->maintainer = latch;
	LWLockRelease(shared->lock);
}

/*
 * For the launcher: the databases where a session ended since its last
 * call, into dbs (room for max); returns how many, or -1 for "all".
 */
int
MqConsumerTakeRequests(Oid *dbs, int max)
{
	int			n;

	if (shared == NULL)
		return 0;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	n = shared->nrequests > Min(max, MQ_RELEASE_REQUESTS) ? -1 : shared->nrequests;
	for (int i = 0; i < n; i++)
		dbs[i] = shared->requests[i];
	shared->nrequests = 0;
	LWLockRelease(shared->lock);
	return n;
}

/*
 * mq.register_consumer(consumer_id text, heartbeat_timeout interval)
 *		RETURNS void
 */
Datum
mq_register_consumer(PG_FUNCTION_ARGS)
{
	text	   *id;
	Interval   *timeout;
	double		timeout_ms;

	require_shared();
	if (PG_ARGISNULL(0) || PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("consumer_id and heartbeat_timeout must not be NULL")));
	MqRequireOwnSession("mq.register_consumer",
						"Register on a direct connection; through the pool, claims lapse with their visibility timeouts.");
	MqRequireSomeConsumeRight("register a consumer");
	id = PG_GETARG_TEXT_PP(0);
	timeout = PG_GETARG_INTERVAL_P(1);
	timeout_ms = MqIntervalSeconds(timeout) * 1000.0;
	if (VARSIZE_ANY_EXHDR(id) < 1 || VARSIZE_ANY_EXHDR(id) >= CONSUMER_ID_LEN)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("consumer_id must be 1 to %d bytes long", CONSUMER_ID_LEN - 1)));
	if (timeout_ms < 1000 || timeout_ms > 3600 * 1000.0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("heartbeat_timeout must be between 1 second and 1 hour")));
	if (my_slot == NULL && !take_slot())
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many registered consumers"),
				 errdetail("This process has no backend slot.")));

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (!my_slot->registered)
		my_slot->registered_at = GetCurrentTimestamp();
	text_to_cstring_buffer(id, my_slot->consumer_id, CONSUMER_ID_LEN);
	my_slot->timeout_ms = (int64) timeout_ms;
	my_slot->last_heartbeat = GetCurrentTimestamp();
	my_slot->registered = true;
	my_slot->state = SLOT_ALIVE;
	LWLockRelease(shared->lock);
	PG_RETURN_VOID();
}

/* mq.unregister_consumer() RETURNS boolean: stop tracking this session */
Datum
mq_unregister_consumer(PG_FUNCTION_ARGS)
{
	require_shared();
	if (my_slot == NULL || !my_slot->registered)
		PG_RETURN_BOOL(false);
	/* its stamped claims stay stamped: released when the session ends */
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	my_slot->registered = false;
	my_slot->state = SLOT_STAMPING;
	LWLockRelease(shared->lock);
	PG_RETURN_BOOL(true);
}

/* mq.consumer_heartbeat() RETURNS boolean: false when not registered */
Datum
mq_consumer_heartbeat(PG_FUNCTION_ARGS)
{
	int64		token;

	require_shared();
	if (my_slot == NULL || !my_slot->registered)
		PG_RETURN_BOOL(false);
	PG_RETURN_BOOL(MqConsumerToken(&token));
}

/*
 * mq._consumers() RETURNS TABLE (consumer_id, pid, token, registered_at,
 *		last_heartbeat, heartbeat_timeout_ms, state, queue_ids)
 *	  The registered consumers of this database (sessions that did not
 *	  register are not listed); mq.consumers adds names and in-flight
 *	  counts.
 */
Datum
mq_consumers(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	static const char *const states[] = {"free", "stamping", "alive", "lapsed", "dead"};

	ConsumerSlot *copies;
	int			ncopies = 0;
	bool		all = false;

	require_shared();
	InitMaterializedSRF(fcinfo, 0);
	copies = palloc(sizeof(ConsumerSlot) * all_slots());
	LWLockAcquire(shared->lock, LW_SHARED);
	for (int i = 0; i < all_slots(); i++)
		if (slot_at(i)->state != SLOT_FREE && slot_at(i)->registered &&
			slot_at(i)->database == MyDatabaseId)
			copies[ncopies++] = *slot_at(i);
	LWLockRelease(shared->lock);
	/* mq_monitor watches every queue's consumers as mq_consumer may */
	all = MqHasRole(GetUserId(), "mq_consumer") || MqHasRole(GetUserId(), "mq_monitor");

	for (int i = 0; i < ncopies; i++)
	{
		ConsumerSlot *s = &copies[i];
		Datum		values[8];
		bool		nulls[8] = {false};
		Datum	   *queues;
		bool		visible = all || s->pid == MyProcPid;

		/* others' consumers show to those who may monitor their queues */
		for (int q = 0; q < s->nqueues && !visible; q++)
			visible = MqQueueIdHasRight(s->queues[q], MQ_RIGHT_MONITOR);
		if (!visible)
			continue;
		values[0] = CStringGetTextDatum(s->consumer_id);
		values[1] = Int32GetDatum(s->pid);
		values[2] = Int64GetDatum(s->token);
		values[3] = TimestampTzGetDatum(s->registered_at);
		values[4] = TimestampTzGetDatum(s->last_heartbeat);
		values[5] = Int64GetDatum(s->timeout_ms);
		values[6] = CStringGetTextDatum(states[s->state]);
		queues = palloc(sizeof(Datum) * Max(s->nqueues, 1));
		for (int q = 0; q < s->nqueues; q++)
			queues[q] = Int64GetDatum(s->queues[q]);
		if (s->nqueues < 0)
			nulls[7] = true;	/* too many to list */
		else
			values[7] = PointerGetDatum(construct_array_builtin(queues, s->nqueues, INT8OID));
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	return (Datum) 0;
}

/* A session whose claims maintenance must release, copied out of the lock. */
typedef struct Release
{
	int			slot;
	int64		token;
	int			nqueues;		/* -1: every work queue */
	int64		queues[MQ_CONSUMER_QUEUES];
} Release;

/* The name of a queue by id, for a log line; NULL if it is gone. */
static char *
queue_name_of(int64 queue_id)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(queue_id)};

	if (SPI_execute_with_args("SELECT queue_name FROM mq.queue WHERE queue_id " OP("=") " $1",
							  1, argtypes, values, NULL, true, 1) != SPI_OK_SELECT ||
		SPI_processed == 0)
		return NULL;
	return SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
}

static int
token_cmp(const void *a, const void *b)
{
	int64		x = *(const int64 *) a;
	int64		y = *(const int64 *) b;

	return (x > y) - (x < y);
}

static Datum
token_array(int64 *tokens, int n)
{
	Datum	   *elems = palloc(sizeof(Datum) * Max(n, 1));

	for (int i = 0; i < n; i++)
		elems[i] = Int64GetDatum(tokens[i]);
	return PointerGetDatum(construct_array_builtin(elems, n, INT8OID));
}

/* The first column of SPI's result as tokens (NULLs skipped). */
static int
result_tokens(int64 **tokens)
{
	int			n = 0;

	*tokens = palloc(sizeof(int64) * Max(SPI_processed, 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;
		Datum		d = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

		if (!isnull)
			(*tokens)[n++] = DatumGetInt64(d);
	}
	return n;
}

/*
 * Keep, of tokens read from stamps, those of sessions that ended: no slot
 * holds them.  Called after the stamps were read, so a session that
 * stamped one had its slot by then (MqConsumerToken) and, if it still
 * lives, has it now; tokens are never reused.
 */
static int
dead_tokens(int64 *tokens, int n)
{
	int64	   *live = palloc(sizeof(int64) * shared->nslots);
	int			nlive = 0;
	int			kept = 0;

	LWLockAcquire(shared->lock, LW_SHARED);
	for (int i = 0; i < shared->nslots; i++)
		if (shared->slots[i].state != SLOT_FREE)
			live[nlive++] = shared->slots[i].token;
	LWLockRelease(shared->lock);
	qsort(live, nlive, sizeof(int64), token_cmp);
	for (int i = 0; i < n; i++)
		if (bsearch(&tokens[i], live, nlive, sizeof(int64), token_cmp) == NULL)
			tokens[kept++] = tokens[i];
	pfree(live);
	return kept;
}

/*
 * Make the claims of ended (or lapsed) sessions in one work queue
 * claimable again, in every table of the queue; its next read sweeps them
 * onto its ring.  tokens NULL: a sweep, for the stamps of every session
 * that ended, found in the queue first.
 */
static uint64
release_queue(int64 queue_id, int64 *tokens, int ntokens)
{
	Oid			argtypes[2] = {INT8ARRAYOID, TIMESTAMPTZOID};
	Datum		values[2];
	/*
	 * The time is a parameter: Citus refuses clock_timestamp() in an UPDATE
	 * of a distributed work queue (storage.c).
	 */
	TimestampTz now = GetCurrentTimestamp();
	uint64		released = 0;

	/* a queue dropped since the consumer used it has nothing to release */
	if (!MqQueueLockById(queue_id))
		return 0;
	if (tokens == NULL)
	{
		StringInfoData sql;

		initStringInfo(&sql);
		for (int t = 0; t <= MQ_DELAYED_SEGMENT; t++)
			appendStringInfo(&sql, "%sSELECT consumer FROM mq.%s WHERE claimed"
							 " AND vt " OP(">") " $1",
							 t > 0 ? " UNION " : "", MqWorkTable(queue_id, t));
		values[0] = TimestampTzGetDatum(now);
		if (SPI_execute_with_args(sql.data, 1, &argtypes[1], values, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read the stamps of claims");
		ntokens = result_tokens(&tokens);
		ntokens = dead_tokens(tokens, ntokens);
	}
	if (ntokens == 0)
		return 0;
	values[0] = token_array(tokens, ntokens);
	values[1] = TimestampTzGetDatum(now);
	for (int t = 0; t <= MQ_DELAYED_SEGMENT; t++)
	{
		char	   *sql = psprintf("UPDATE mq.%s SET vt = $2, claimed = false"
								   " WHERE claimed AND consumer " OP("=") " ANY ($1)"
								   " AND vt " OP(">") " $2",
								   MqWorkTable(queue_id, t));
		int			ret = SPI_execute_with_args(sql, 2, argtypes, values, NULL, false, 0);

		if (ret != SPI_OK_UPDATE)
			elog(ERROR, "could not release claims: %s", SPI_result_code_string(ret));
		MqStateCount(queue_id, MQ_COUNT_IN_FLIGHT, -(int64) SPI_processed);
		MqStateCount(queue_id, t == MQ_DELAYED_SEGMENT ? MQ_COUNT_DELAYED : MQ_COUNT_READY,
					 (int64) SPI_processed);
		released += SPI_processed;
	}
	if (released > 0)
	{
		MqStateSweepSoon(queue_id);
		MqStateNoteDue(queue_id, 0);
		MqWaitNoteSend(queue_id);
	}
	return released;
}

/*
 * release_queue in a subtransaction of its own, as PL/pgSQL runs a block
 * with an exception handler: a queue whose release fails (a broken table,
 * a trigger a superuser put there) is logged with its name and skipped, so
 * that it holds up no other queue's release and no later pass.  A cancel
 * is passed on, as PL/pgSQL's OTHERS does.
 */
static uint64
release_queue_guarded(int64 queue_id, int64 *tokens, int ntokens)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile uint64 released = 0;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		released = release_queue(queue_id, tokens, ntokens);
		ReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
	}
	PG_CATCH();
	{
		ErrorData  *edata;
		char	   *name;

		MemoryContextSwitchTo(cxt);
		edata = CopyErrorData();
		FlushErrorState();
		RollbackAndReleaseCurrentSubTransaction();
		MemoryContextSwitchTo(cxt);
		CurrentResourceOwner = owner;
		if (edata->sqlerrcode == ERRCODE_QUERY_CANCELED)
			ReThrowError(edata);
		name = queue_name_of(queue_id);
		ereport(WARNING,
				(errcode(edata->sqlerrcode),
				 errmsg("skipping the release of dead consumers' claims in queue \"%s\": %s",
						name ? name : "?", edata->message)));
		FreeErrorData(edata);
		released = 0;
	}
	PG_END_TRY();
	return released;
}

/*
 * Free the partition leases of group members polling as ended sessions,
 * each queue's under its queue lock, taken first (the order drop_queue
 * takes them in), in queue id order.  tokens NULL: a sweep, for every
 * session that ended.
 */
static void
release_leases(int64 *tokens, int ntokens)
{
	static const char *find = "SELECT DISTINCT queue_id FROM mq.group_member"
		" WHERE session " OP("=") " ANY ($1) ORDER BY 1";
	static const char *sql = "WITH gone AS (DELETE FROM mq.group_member"
		" WHERE session " OP("=") " ANY ($1)"
		" AND queue_id " OP("=") " ANY ($2)"
		" RETURNING queue_id, consumer_group, member)"
		" UPDATE mq.group_partition g SET member = NULL, lease_until = NULL"
		" FROM gone"
		" WHERE g.queue_id " OP("=") " gone.queue_id"
		" AND g.consumer_group " OP("=") " gone.consumer_group"
		" AND g.member " OP("=") " gone.member";
	Oid			argtypes[2] = {INT8ARRAYOID, INT8ARRAYOID};
	Datum		values[2];

	if (tokens == NULL)
	{
		if (SPI_execute("SELECT DISTINCT session FROM mq.group_member", true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not read the stamps of group members");
		ntokens = result_tokens(&tokens);
		ntokens = dead_tokens(tokens, ntokens);
	}
	if (ntokens == 0)
		return;
	values[0] = token_array(tokens, ntokens);
	if (SPI_execute_with_args(find, 1, argtypes, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not find partition leases");
	if (SPI_processed == 0)
		return;
	values[1] = MqQueueLockIds();
	if (SPI_execute_with_args(sql, 2, argtypes, values, NULL, false, 0) != SPI_OK_UPDATE)
		elog(ERROR, "could not release partition leases");
}

/* The release's lock in this database, until the transaction ends. */
static bool
try_release_lock(void)
{
	LOCKTAG		tag;

	SET_LOCKTAG_ADVISORY(tag, MyDatabaseId, 0, 0, MQ_RELEASE_LOCK_FIELD4);
	return LockAcquire(&tag, ExclusiveLock, false, true) != LOCKACQUIRE_NOT_AVAIL;
}

/* Work queues of this database, for a release that must visit them all. */
static int
all_work_queues(int64 **ids)
{
	if (SPI_execute("SELECT queue_id FROM mq.queue WHERE partitions IS NULL ORDER BY 1", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not list queues");
	return result_tokens(ids);
}

/*
 * Of the queue ids listed, the work queues that exist, each once, in id
 * order: an id can be gone, or be another queue's after DROP EXTENSION and
 * CREATE EXTENSION started the ids again.
 */
static int
work_queues_among(int64 **ids, int n)
{
	Oid			argtypes[1] = {INT8ARRAYOID};
	Datum		values[1] = {token_array(*ids, n)};

	if (SPI_execute_with_args("SELECT queue_id FROM mq.queue WHERE partitions IS NULL"
							  " AND queue_id " OP("=") " ANY ($1) ORDER BY 1",
							  1, argtypes, values, NULL, true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not list queues");
	return result_tokens(ids);
}

/*
 * Release the claims and leases of the sessions in todo: one statement per
 * queue and table for all the sessions that used the queue, so that many
 * sessions ending at once cost one pass over each queue.
 */
static uint64
release_sessions(Release *todo, int ntodo)
{
	int64	   *all = NULL;
	int			nall = -1;
	int64	   *queues = palloc(sizeof(int64) * Max(ntodo * MQ_CONSUMER_QUEUES, 1));
	int			nqueues = 0;
	int64	   *tokens = palloc(sizeof(int64) * Max(ntodo, 1));
	uint64		released = 0;

	if (ntodo == 0)
		return 0;
	/* the queues to visit: those listed, every work queue for an unlisted one */
	for (int t = 0; t < ntodo; t++)
	{
		tokens[t] = todo[t].token;
		if (todo[t].nqueues < 0 && nall < 0)
			nall = all_work_queues(&all);
		for (int q = 0; q < todo[t].nqueues; q++)
			queues[nqueues++] = todo[t].queues[q];
	}
	if (nall >= 0)
	{
		queues = all;
		nqueues = nall;
	}
	else
		nqueues = work_queues_among(&queues, nqueues);
	for (int q = 0; q < nqueues; q++)
	{
		int			n = 0;

		for (int t = 0; t < ntodo; t++)
		{
			bool		used = todo[t].nqueues < 0;

			for (int i = 0; i < todo[t].nqueues && !used; i++)
				used = todo[t].queues[i] == queues[q];
			if (used)
				tokens[n++] = todo[t].token;
		}
		released += release_queue_guarded(queues[q], tokens, n);
	}
	for (int t = 0; t < ntodo; t++)
		tokens[t] = todo[t].token;
	release_leases(tokens, ntodo);
	return released;
}

/* A sweep: the claims and leases of every session that ended. */
static uint64
release_swept(void)
{
	int64	   *queues;
	int			nqueues = all_work_queues(&queues);
	uint64		released = 0;

	for (int q = 0; q < nqueues; q++)
		released += release_queue_guarded(queues[q], NULL, 0);
	release_leases(NULL, 0);
	return released;
}

/*
 * mq._release_consumers() RETURNS bigint
 *	  Makes the claims of ended sessions (registered or not) and of lapsed
 *	  registered consumers of this database visible again and frees their
 *	  partition leases; when the database must sweep (its first call of a
 *	  server run, or records given up when they were full), those of every
 *	  session that ended.  Returns the number of messages released.  Runs
 *	  as the owner (mq.maintain is SECURITY DEFINER).  One pass per
 *	  database at a time: two passes releasing the same claims updated them
 *	  in different orders (synchronized seq scans of a large segment start
 *	  where the other scan is) and deadlocked, so a pass that finds another
 *	  one running returns 0 and leaves the work to it.
 */
Datum
mq_release_consumers(PG_FUNCTION_ARGS)
{
	MqSession	session;
	Release    *todo;
	int			ntodo = 0;
	SweepMark  *mark;
	uint64		target;
	bool		sweep;
	uint64		released = 0;
	TimestampTz now = GetCurrentTimestamp();

	if (shared == NULL)
		PG_RETURN_INT64(0);		/* nothing is tracked without preloading */
	if (!try_release_lock())
		PG_RETURN_INT64(0);

	todo = palloc(sizeof(Release) * all_slots());
	LWLockAcquire(shared->lock, LW_SHARED);
	for (int i = 0; i < all_slots(); i++)
	{
		ConsumerSlot *s = slot_at(i);
		bool		lapsed = s->state == SLOT_ALIVE &&
			now > TimestampTzPlusMilliseconds(s->last_heartbeat, s->timeout_ms);

		if (s->database != MyDatabaseId || (s->state != SLOT_DEAD && !lapsed))
			continue;
		todo[ntodo].slot = i;
		todo[ntodo].token = s->token;
		todo[ntodo].nqueues = s->nqueues;
		memcpy(todo[ntodo].queues, s->queues, sizeof(s->queues));
		ntodo++;
	}
	mark = mark_of(MyDatabaseId, false);
	target = Max(shared->sweep_all, mark ? mark->wanted : 0);
	sweep = mark == NULL || mark->swept < target;
	LWLockRelease(shared->lock);

	MqOwnerBegin(&session);
	released += release_sessions(todo, ntodo);
	if (sweep)
		released += release_swept();
	MqOwnerEnd(&session);

	/* records are done; lapsed slots wait for a heartbeat to revive */
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int t = 0; t < ntodo; t++)
	{
		ConsumerSlot *s = slot_at(todo[t].slot);

		if (s->token != todo[t].token)
			continue;
		if (s->state == SLOT_DEAD)
			s->state = SLOT_FREE;
		else if (s->state == SLOT_ALIVE)
			s->state = SLOT_LAPSED;
	}
	if (sweep && (mark = mark_of(MyDatabaseId, true)) != NULL)
		mark->swept = Max(mark->swept, target);
	LWLockRelease(shared->lock);
	PG_RETURN_INT64((int64) released);
}

/*
 * mq._consumer_in_flight(token bigint, queue_ids bigint[])
 *		RETURNS TABLE (queue_name text, in_flight bigint)
 *	  For the view mq.consumers: how many messages the registered consumer
 *	  with this token holds (claimed, within their visibility timeout) in
 *	  each work queue of queue_ids (NULL: every work queue) that the caller
 *	  may monitor (consume includes it).  The caller's rights are checked
 *	  before mq switches to the owner, so the view shows nothing of other
 *	  queues.
 */
Datum
mq_consumer_in_flight(PG_FUNCTION_ARGS)
{
	static const Oid argtypes[1] = {INT8ARRAYOID};
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	Oid			caller = GetUserId();
	Datum		ids = PG_ARGISNULL(1) ? (Datum) 0 : PG_GETARG_DATUM(1);
	int64		token;
	MqSession	session;
	uint64		nqueues;
	int64	   *queue_ids;
	char	  **names;

	InitMaterializedSRF(fcinfo, 0);
	if (PG_ARGISNULL(0))
		return (Datum) 0;
	token = PG_GETARG_INT64(0);
	MqOwnerBegin(&session);
	if (SPI_execute_with_args("SELECT queue_id, queue_name, c.oid FROM mq.queue q"
							  " LEFT JOIN pg_catalog.pg_class c"
							  " ON c.relnamespace OPERATOR(pg_catalog.=) 'mq'::pg_catalog.regnamespace"
							  " AND c.relname OPERATOR(pg_catalog.=) ('q_' OPERATOR(pg_catalog.||) q.queue_id"
							  " OPERATOR(pg_catalog.||) '_rights')"
							  " WHERE partitions IS NULL"
							  " AND ($1 IS NULL OR queue_id " OP("=") " ANY ($1))"
							  " ORDER BY queue_id",
							  1, (Oid *) argtypes, &ids, PG_ARGISNULL(1) ? "n" : " ",
							  true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read mq.queue");
	nqueues = SPI_processed;
	queue_ids = palloc(sizeof(int64) * Max(nqueues, 1));
	names = palloc(sizeof(char *) * Max(nqueues, 1));
	for (uint64 i = 0; i < nqueues; i++)
	{
		HeapTuple	tup = SPI_tuptable->vals[i];
		TupleDesc	desc = SPI_tuptable->tupdesc;
		bool		isnull;
		bool		no_rights;
		Datum		rights = SPI_getbinval(tup, desc, 3, &no_rights);

		queue_ids[i] = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
		names[i] = MqHasRight(caller, no_rights ? InvalidOid : DatumGetObjectId(rights),
							  MQ_RIGHT_MONITOR) ? SPI_getvalue(tup, desc, 2) : NULL;
	}
	for (uint64 i = 0; i < nqueues; i++)
	{
		static const Oid count_types[1] = {INT8OID};
		Datum		count_args[1] = {Int64GetDatum(token)};
		Datum		values[2];
		bool		nulls[2] = {false, false};
		bool		isnull;
		StringInfoData sql;

		if (names[i] == NULL)
			continue;
		initStringInfo(&sql);
		appendStringInfoString(&sql, "SELECT pg_catalog.count(*) FROM (");
		for (int t = 0; t <= MQ_DELAYED_SEGMENT; t++)
			appendStringInfo(&sql, "%sSELECT FROM mq.%s WHERE consumer " OP("=") " $1 AND claimed"
							 " AND vt " OP(">") " pg_catalog.clock_timestamp()",
							 t > 0 ? " UNION ALL " : "", MqWorkTable(queue_ids[i], t));
		appendStringInfoString(&sql, ") c");
		if (SPI_execute_with_args(sql.data,
								  1, (Oid *) count_types, count_args, NULL, true, 0) != SPI_OK_SELECT)
			elog(ERROR, "could not count claims");
		values[0] = CStringGetTextDatum(names[i]);
		values[1] = SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	MqOwnerEnd(&session);
	return (Datum) 0;
}
