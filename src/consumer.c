/*-------------------------------------------------------------------------
 *
 * consumer.c
 *	  Registered consumers and liveness: a session that calls
 *	  mq.register_consumer() is tracked; when it ends (exit, crash, dropped
 *	  connection) or stops heartbeating for longer than its timeout, the
 *	  messages it holds become visible again at once and its partition
 *	  leases are freed, instead of waiting out visibility timeouts.
 *
 * Claims record their owner: a registered session stamps the messages it
 * reads (column consumer) and the group members it polls as (group_member.
 * session) with its token, (backend start in ms << 22) | pid, unique among
 * the sessions of one server run and ordered by start time.  Unregistered sessions stamp nothing and
 * keep plain visibility-timeout semantics (a worker that reads on one
 * connection and acks on another must not register).
 *
 * Shared state: a slot per backend (so registering never runs out), each
 * owned by one registered session, and MQ_ENDED_RECORDS records of
 * sessions that ended.  When a session ends, its exit callback frees its
 * slot at once and leaves a record (its database, token and queues) for the
 * maintenance of its database, which releases the claims and removes the
 * record.  When the records are full, the oldest record of the database
 * that has the most is overwritten (its claims then lapse with their
 * visibility timeouts instead), so sessions that come and go in one
 * database without maintenance cannot take the records of the others.  A slot whose
 * heartbeat lapsed is released once and revives at its next heartbeat.  A
 * crash restart empties shared memory, so maintenance also sweeps, once per
 * database and server run, every claim whose token predates the run.
 *
 * Locking: one LWLock guards all slots' lifecycle fields and the records;
 * a session updates its own heartbeat time without it (an aligned 8-byte
 * store).
 *
 * Needs shared_preload_libraries = 'mq' (55000 otherwise).  Maintenance is
 * mq._release_consumers(), run by mq.maintain() and so by the background
 * worker every mq.maintenance_interval.
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
#include "storage/lock.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "utils/builtins.h"
#include "utils/memutils.h"
#include "utils/resowner.h"
#include "utils/timestamp.h"

#include "consumer.h"
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
#define MQ_SWEPT_DATABASES 64
#define CONSUMER_ID_LEN 128

typedef enum SlotState
{
	SLOT_FREE = 0,
	SLOT_ALIVE,					/* session registered and heartbeating */
	SLOT_LAPSED,				/* heartbeat timed out, claims released */
	SLOT_DEAD					/* session ended, claims to release (records) */
} SlotState;

typedef struct ConsumerSlot
{
	SlotState	state;
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

typedef struct ConsumerShared
{
	LWLock	   *lock;
	TimestampTz run_start;		/* this server run's shared memory init */
	int			nswept;
	Oid			swept[MQ_SWEPT_DATABASES];
	/* sessions that ended, state SLOT_DEAD, until maintenance released them */
	ConsumerSlot ended[MQ_ENDED_RECORDS];
	int			nslots;			/* MaxBackends */
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
		shared->run_start = GetCurrentTimestamp();
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

/*
 * When this session ends, however it ends short of a crash: free its slot
 * and leave a record for the maintenance of its database, in a free record
 * or over the oldest one.
 */
static void
consumer_exit(int code, Datum arg)
{
	ConsumerSlot *record = NULL;
	Oid			crowded = InvalidOid;
	int			most = 0;

	if (my_slot == NULL)
		return;
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	for (int i = 0; i < MQ_ENDED_RECORDS && record == NULL; i++)
		if (shared->ended[i].state == SLOT_FREE)
			record = &shared->ended[i];
	/* full: the database with the most records gives up its oldest */
	for (int i = 0; i < MQ_ENDED_RECORDS && record == NULL; i++)
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
	for (int i = 0; i < MQ_ENDED_RECORDS && OidIsValid(crowded); i++)
	{
		ConsumerSlot *r = &shared->ended[i];

		if (r->database == crowded &&
			(record == NULL || r->last_heartbeat < record->last_heartbeat))
			record = r;
	}
	memcpy(record, my_slot, sizeof(ConsumerSlot));
	record->state = SLOT_DEAD;
	record->last_heartbeat = GetCurrentTimestamp();
	my_slot->state = SLOT_FREE;
	LWLockRelease(shared->lock);
	my_slot = NULL;
}

/* This session's token, if it is a registered consumer. */
bool
MqConsumerToken(int64 *token)
{
	if (my_slot == NULL)
		return false;
	my_slot->last_heartbeat = GetCurrentTimestamp();
	if (my_slot->state == SLOT_LAPSED)
	{
		LWLockAcquire(shared->lock, LW_EXCLUSIVE);
		my_slot->state = SLOT_ALIVE;
		LWLockRelease(shared->lock);
	}
	*token = my_slot->token;
	return true;
}

/* Remember that this consumer holds claims in queue_id. */
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

	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	if (my_slot == NULL)
	{
		for (int i = 0; i < shared->nslots && my_slot == NULL; i++)
			if (shared->slots[i].state == SLOT_FREE)
				my_slot = &shared->slots[i];
		if (my_slot == NULL)
		{
			LWLockRelease(shared->lock);
			ereport(ERROR,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("too many registered consumers"),
					 errdetail("mq tracks at most %d consumers at once.", shared->nslots)));
		}
		memset(my_slot, 0, sizeof(ConsumerSlot));
		my_slot->pid = MyProcPid;
		my_slot->database = MyDatabaseId;
		my_slot->token = token_of(MyStartTimestamp, MyProcPid);
		my_slot->registered_at = GetCurrentTimestamp();
		if (!exit_callback_set)
		{
			on_shmem_exit(consumer_exit, (Datum) 0);
			exit_callback_set = true;
		}
	}
	text_to_cstring_buffer(id, my_slot->consumer_id, CONSUMER_ID_LEN);
	my_slot->timeout_ms = (int64) timeout_ms;
	my_slot->last_heartbeat = GetCurrentTimestamp();
	my_slot->state = SLOT_ALIVE;
	LWLockRelease(shared->lock);
	PG_RETURN_VOID();
}

/* mq.unregister_consumer() RETURNS boolean: stop tracking this session */
Datum
mq_unregister_consumer(PG_FUNCTION_ARGS)
{
	require_shared();
	if (my_slot == NULL)
		PG_RETURN_BOOL(false);
	/* its claims stay; they lapse with their visibility timeouts */
	LWLockAcquire(shared->lock, LW_EXCLUSIVE);
	my_slot->state = SLOT_FREE;
	LWLockRelease(shared->lock);
	my_slot = NULL;
	PG_RETURN_BOOL(true);
}

/* mq.consumer_heartbeat() RETURNS boolean: false when not registered */
Datum
mq_consumer_heartbeat(PG_FUNCTION_ARGS)
{
	int64		token;

	require_shared();
	PG_RETURN_BOOL(MqConsumerToken(&token));
}

/*
 * mq._consumers() RETURNS TABLE (consumer_id, pid, token, registered_at,
 *		last_heartbeat, heartbeat_timeout_ms, state, queue_ids)
 *	  The registered consumers of this database; mq.consumers adds names and
 *	  in-flight counts.
 */
Datum
mq_consumers(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	static const char *const states[] = {"free", "alive", "lapsed", "dead"};

	ConsumerSlot *copies;
	int			ncopies = 0;
	bool		all = false;

	require_shared();
	InitMaterializedSRF(fcinfo, 0);
	copies = palloc(sizeof(ConsumerSlot) * all_slots());
	LWLockAcquire(shared->lock, LW_SHARED);
	for (int i = 0; i < all_slots(); i++)
		if (slot_at(i)->state != SLOT_FREE && slot_at(i)->database == MyDatabaseId)
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
	SlotState	state;
	int			nqueues;
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

/*
 * Make the claims of a dead consumer in one work queue claimable again, in
 * every table of the queue; its next read sweeps them onto its ring.
 */
static uint64
release_token(int64 queue_id, int64 token, bool before)
{
	Oid			argtypes[2] = {INT8OID, TIMESTAMPTZOID};
	Datum		values[2] = {Int64GetDatum(token), 0};
	uint64		released = 0;

	/* a queue dropped since the consumer used it has nothing to release */
	if (!MqQueueLockById(queue_id))
		return 0;
	for (int t = 0; t <= MQ_DELAYED_SEGMENT; t++)
	{
		/*
		 * before: every token older than this run, else exactly this one.
		 * The time is a parameter: Citus refuses clock_timestamp() in an
		 * UPDATE of a distributed work queue (storage.c).
		 */
		char	   *sql = psprintf("UPDATE mq.%s SET vt = $2, claimed = false"
								   " WHERE claimed AND consumer OPERATOR(pg_catalog.%s) $1"
								   " AND vt " OP(">") " $2",
								   MqWorkTable(queue_id, t), before ? "<" : "=");
		int			ret;

		values[1] = TimestampTzGetDatum(GetCurrentTimestamp());
		ret = SPI_execute_with_args(sql, 2, argtypes, values, NULL, false, 0);

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
 * release_token in a subtransaction of its own, as PL/pgSQL runs a block
 * with an exception handler: a queue whose release fails (a broken table,
 * a trigger a superuser put there) is logged with its name and skipped, so
 * that it holds up no other queue's release and no later pass.  A cancel
 * is passed on, as PL/pgSQL's OTHERS does.
 */
static uint64
release_token_guarded(int64 queue_id, int64 token, bool before)
{
	MemoryContext cxt = CurrentMemoryContext;
	ResourceOwner owner = CurrentResourceOwner;
	volatile uint64 released = 0;

	BeginInternalSubTransaction(NULL);
	MemoryContextSwitchTo(cxt);
	PG_TRY();
	{
		released = release_token(queue_id, token, before);
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
 * Free the partition leases of group members polling as a dead session,
 * each queue's under its queue lock, taken first (the order drop_queue
 * takes them in), in queue id order.
 */
static void
release_leases(int64 token, bool before)
{
	char	   *find = psprintf("SELECT DISTINCT queue_id FROM mq.group_member"
								" WHERE session OPERATOR(pg_catalog.%s) $1 ORDER BY 1",
								before ? "<" : "=");
	char	   *sql = psprintf("WITH gone AS (DELETE FROM mq.group_member"
							   " WHERE session OPERATOR(pg_catalog.%s) $1"
							   " AND queue_id " OP("=") " ANY ($2)"
							   " RETURNING queue_id, consumer_group, member)"
							   " UPDATE mq.group_partition g SET member = NULL, lease_until = NULL"
							   " FROM gone"
							   " WHERE g.queue_id " OP("=") " gone.queue_id"
							   " AND g.consumer_group " OP("=") " gone.consumer_group"
							   " AND g.member " OP("=") " gone.member", before ? "<" : "=");
	Oid			argtypes[2] = {INT8OID, INT8ARRAYOID};
	Datum		values[2] = {Int64GetDatum(token)};

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
	if (SPI_execute("SELECT queue_id FROM mq.queue WHERE partitions IS NULL", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not list queues");
	*ids = palloc(sizeof(int64) * Max(SPI_processed, 1));
	for (uint64 i = 0; i < SPI_processed; i++)
	{
		bool		isnull;

		(*ids)[i] = DatumGetInt64(SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull));
	}
	return (int) SPI_processed;
}

/*
 * mq._release_consumers() RETURNS bigint
 *	  Makes the claims of dead or lapsed consumers of this database visible
 *	  again and frees their partition leases; on the first call of a server
 *	  run, also those of sessions from before a crash.  Returns the number
 *	  of messages released.  Runs as the owner (mq.maintain is SECURITY
 *	  DEFINER).  One pass per database at a time: two passes releasing the
 *	  same claims updated them in different orders (synchronized seq scans
 *	  of a large segment start where the other scan is) and deadlocked, so
 *	  a pass that finds another one running returns 0 and leaves the work
 *	  to it.
 */
Datum
mq_release_consumers(PG_FUNCTION_ARGS)
{
	MqSession	session;
	Release    *todo;
	int			ntodo = 0;
	bool		sweep;
	int64		run_token;
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
		todo[ntodo].state = s->state;
		todo[ntodo].nqueues = s->nqueues;
		memcpy(todo[ntodo].queues, s->queues, sizeof(s->queues));
		ntodo++;
	}
	sweep = true;
	for (int i = 0; i < shared->nswept; i++)
		if (shared->swept[i] == MyDatabaseId)
			sweep = false;
	run_token = token_of(shared->run_start, 0);
	LWLockRelease(shared->lock);

	MqOwnerBegin(&session);
	for (int t = 0; t < ntodo; t++)
	{
		int64	   *queues = todo[t].queues;
		int			nqueues = todo[t].nqueues;

		if (nqueues < 0)
			nqueues = all_work_queues(&queues);
		for (int q = 0; q < nqueues; q++)
			released += release_token_guarded(queues[q], todo[t].token, false);
		release_leases(todo[t].token, false);
	}
	if (sweep)
	{
		int64	   *queues;
		int			nqueues = all_work_queues(&queues);

		for (int q = 0; q < nqueues; q++)
			released += release_token_guarded(queues[q], run_token, true);
		release_leases(run_token, true);
	}
	MqOwnerEnd(&session);

	/* dead slots are done; lapsed ones wait for a heartbeat to revive */
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
	if (sweep && shared->nswept < MQ_SWEPT_DATABASES)
		shared->swept[shared->nswept++] = MyDatabaseId;
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
