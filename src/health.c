/*-------------------------------------------------------------------------
 *
 * health.c
 *	  What mq.warnings reads that no catalog shows: the oldest backend
 *	  holding the xmin horizon, and claims held in open transactions.
 *
 * A long transaction anywhere in the cluster keeps VACUUM from removing
 * the dead row versions that acks and claims leave behind, in every
 * database.  pg_stat_activity shows who holds the horizon, but a role
 * without pg_read_all_stats sees no other role's transaction start time;
 * a monitor needs the pid and the age, and nothing of the query.  This
 * reads the backend status array directly and returns only those.
 *
 * A claim's visibility timeout only bounds how long a committed claim
 * hides its message.  A claim made in a transaction that stays open (a
 * driver's implicit transaction, a handler that runs long before it acks)
 * keeps its row locked: every other reader skips it (SKIP LOCKED) for as
 * long as the transaction lasts, whatever the timeout, and to others the
 * message looks unclaimed.  So each backend notes, in its own entry of a
 * shared array, the transaction of its last claims and when the earliest
 * of them lapses; mq.warnings reports those whose transaction is still in
 * progress past that time.  Only the backend writes its entry, without a
 * lock: it clears the xid, writes the rest, then sets the xid, and a
 * reader keeps what it copied only if the xid was the same before and
 * after (a torn read costs one missed finding, never a false one).
 * Needs mq preloaded; without it nothing is noted.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/dbcommands.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "port/atomics.h"
#include "storage/procarray.h"
#include "storage/shmem.h"
#include "utils/backend_status.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "health.h"
#include "queue.h"
#include "shmem.h"

PG_FUNCTION_INFO_V1(mq_xmin_horizon);
PG_FUNCTION_INFO_V1(mq_open_claims);

/* a backend's last claims, in its entry (MyBackendId - 1) */
typedef struct OpenClaim
{
	pg_atomic_uint32 xid;		/* their top transaction; invalid: none */
	int			pid;
	Oid			database;		/* queue ids are per database */
	int64		queue_id;		/* the queue of the earliest to lapse */
	TimestampTz lapse;			/* when the earliest visibility timeout ends */
	TimestampTz xact_start;
} OpenClaim;

static OpenClaim *open_claims = NULL;	/* MaxBackends entries */

#if PG_VERSION_NUM >= 170000
#define local_beentry(i) pgstat_get_local_beentry_by_index(i)
#else
#define local_beentry(i) pgstat_fetch_stat_local_beentry(i)
#endif

static Size
open_claims_size(void)
{
	return mul_size(MaxBackends, sizeof(OpenClaim));
}

void
MqHealthShmemRequest(void)
{
	RequestAddinShmemSpace(MAXALIGN(open_claims_size()));
}

void
MqHealthShmemStartup(void)
{
	bool		found;

	open_claims = ShmemInitStruct("mq open claims", open_claims_size(), &found);
	if (found)
		return;
	for (int i = 0; i < MaxBackends; i++)
	{
		pg_atomic_init_u32(&open_claims[i].xid, InvalidTransactionId);
		open_claims[i].queue_id = 0;
		open_claims[i].lapse = 0;
	}
}

/*
 * This backend claimed messages of queue_id that lapse at `lapse`, in its
 * current transaction (which has an xid: the claim updated rows).
 */
void
MqHealthNoteClaim(int64 queue_id, TimestampTz lapse)
{
	OpenClaim  *e;
	TransactionId xid = GetTopTransactionIdIfAny();

	if (open_claims == NULL || MyBackendId == InvalidBackendId || !TransactionIdIsValid(xid))
		return;
	e = &open_claims[MyBackendId - 1];
	/* the earlier claims of this transaction lapse first: nothing to note */
	if (pg_atomic_read_u32(&e->xid) == xid && e->lapse <= lapse)
		return;
	pg_atomic_write_u32(&e->xid, InvalidTransactionId);
	pg_write_barrier();
	e->pid = MyProcPid;
	e->database = MyDatabaseId;
	e->queue_id = queue_id;
	e->lapse = lapse;
	e->xact_start = GetCurrentTransactionStartTimestamp();
	pg_write_barrier();
	pg_atomic_write_u32(&e->xid, xid);
}

/* Only the roles that see every queue's metrics (rights.c: as mq.metrics_all). */
static void
require_watcher(void)
{
	if (!MqHasRole(GetUserId(), "mq_monitor") && !MqHasRole(GetUserId(), "mq_consumer") &&
		!MqHasRole(GetUserId(), "mq_admin"))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to run mq.warnings"),
				 errdetail("Only roles with the privileges of mq_monitor, mq_consumer or mq_admin may do this.")));
}

/* pg_stat_activity's names for the states a holder can be in */
static const char *
state_name(BackendState state)
{
	switch (state)
	{
		case STATE_RUNNING:
			return "active";
		case STATE_IDLE:
			return "idle";
		case STATE_IDLEINTRANSACTION:
			return "idle in transaction";
		case STATE_IDLEINTRANSACTION_ABORTED:
			return "idle in transaction (aborted)";
		case STATE_FASTPATH:
			return "fastpath function call";
		case STATE_DISABLED:
			return "disabled";
		case STATE_UNDEFINED:
			break;
	}
	return NULL;
}

/*
 * mq._xmin_horizon() RETURNS TABLE (pid integer, backend_type text,
 *		state text, database text, xact_age_s double precision,
 *		xmin_age bigint)
 *
 * The backend, other than the caller, whose xmin (or xid, if older) is the
 * oldest: its pid, backend type and state as pg_stat_activity names them,
 * its database (NULL for processes without one), the age of its
 * transaction in seconds (NULL when it reports no start, as a walsender
 * holding a standby's horizon) and the horizon's age in transactions, as
 * age(backend_xmin).  No row when no other backend holds one.  The
 * horizon also follows prepared transactions and replication slots, which
 * mq.warnings reads from pg_prepared_xacts and pg_replication_slots.
 * Errors: 42501 without the privileges of mq_monitor, mq_consumer or
 * mq_admin (the roles that see every queue's metrics).
 */
Datum
mq_xmin_horizon(PG_FUNCTION_ARGS)
{
	LocalPgBackendStatus *oldest = NULL;
	TransactionId oldest_xmin = InvalidTransactionId;
	TupleDesc	tupdesc;
	Datum		values[6];
	bool		nulls[6] = {0};
	const char *state;
	char	   *dbname;

	require_watcher();
	if (get_call_result_type(fcinfo, NULL, &tupdesc) != TYPEFUNC_COMPOSITE)
		elog(ERROR, "return type must be a row type");

	for (int i = 1; i <= pgstat_fetch_stat_numbackends(); i++)
	{
		LocalPgBackendStatus *b = local_beentry(i);
		TransactionId xmin;

		if (b == NULL || b->backendStatus.st_procpid == MyProcPid)
			continue;
		xmin = b->backend_xmin;
		if (!TransactionIdIsValid(xmin) ||
			(TransactionIdIsValid(b->backend_xid) && TransactionIdPrecedes(b->backend_xid, xmin)))
			xmin = b->backend_xid;
		if (!TransactionIdIsValid(xmin))
			continue;
		if (oldest == NULL || TransactionIdPrecedes(xmin, oldest_xmin))
		{
			oldest = b;
			oldest_xmin = xmin;
		}
	}
	if (oldest == NULL)
		PG_RETURN_NULL();

	values[0] = Int32GetDatum(oldest->backendStatus.st_procpid);
	values[1] = CStringGetTextDatum(GetBackendTypeDesc(oldest->backendStatus.st_backendType));
	state = state_name(oldest->backendStatus.st_state);
	nulls[2] = state == NULL;
	values[2] = state ? CStringGetTextDatum(state) : (Datum) 0;
	dbname = OidIsValid(oldest->backendStatus.st_databaseid) ?
		get_database_name(oldest->backendStatus.st_databaseid) : NULL;
	nulls[3] = dbname == NULL;
	values[3] = dbname ? CStringGetTextDatum(dbname) : (Datum) 0;
	nulls[4] = oldest->backendStatus.st_xact_start_timestamp == 0;
	values[4] = Float8GetDatum((GetCurrentTimestamp() -
								oldest->backendStatus.st_xact_start_timestamp) / 1000000.0);
	/* age() counts from the next xid, as the horizon's consumers see it */
	values[5] = Int64GetDatum((int32) (ReadNextTransactionId() - oldest_xmin));
	PG_RETURN_DATUM(HeapTupleGetDatum(heap_form_tuple(tupdesc, values, nulls)));
}

/* The name of a queue of this database, or NULL (dropped meanwhile). */
static char *
queue_name_of(int64 queue_id)
{
	static const Oid argtypes[1] = {INT8OID};
	Datum		args[1] = {Int64GetDatum(queue_id)};

	if (SPI_execute_with_args("SELECT queue_name FROM mq.queue WHERE queue_id OPERATOR(pg_catalog.=) $1",
							  1, (Oid *) argtypes, args, NULL, true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read mq.queue");
	return SPI_processed == 1 ? SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1) : NULL;
}

/*
 * mq._open_claims() RETURNS TABLE (pid integer, queue_name text,
 *		lapsed_s double precision, xact_age_s double precision)
 *
 * Backends of this database's queues whose claims (made by mq.read) are
 * held by a transaction still in progress after their visibility timeout
 * ended: the pid, the queue of the claim that lapsed first, seconds since
 * it lapsed and the transaction's age in seconds.  A prepared transaction
 * shows with the pid that prepared it.  Nothing without mq preloaded.
 * Errors: 42501 without the privileges of mq_monitor, mq_consumer or
 * mq_admin.
 */
Datum
mq_open_claims(PG_FUNCTION_ARGS)
{
	ReturnSetInfo *rsinfo = (ReturnSetInfo *) fcinfo->resultinfo;
	TimestampTz now = GetCurrentTimestamp();
	MqSession	session;

	require_watcher();
	InitMaterializedSRF(fcinfo, 0);
	if (open_claims == NULL)
		return (Datum) 0;
	MqOwnerBegin(&session);
	for (int i = 0; i < MaxBackends; i++)
	{
		OpenClaim	c;
		TransactionId xid = pg_atomic_read_u32(&open_claims[i].xid);
		char	   *name;
		Datum		values[4];
		bool		nulls[4] = {0};

		if (!TransactionIdIsValid(xid))
			continue;
		pg_read_barrier();
		c.pid = open_claims[i].pid;
		c.database = open_claims[i].database;
		c.queue_id = open_claims[i].queue_id;
		c.lapse = open_claims[i].lapse;
		c.xact_start = open_claims[i].xact_start;
		pg_read_barrier();
		if (pg_atomic_read_u32(&open_claims[i].xid) != xid || c.database != MyDatabaseId || c.lapse > now ||
			!TransactionIdIsInProgress(xid) || (name = queue_name_of(c.queue_id)) == NULL)
			continue;
		values[0] = Int32GetDatum(c.pid);
		values[1] = CStringGetTextDatum(name);
		values[2] = Float8GetDatum((now - c.lapse) / 1000000.0);
		values[3] = Float8GetDatum((now - c.xact_start) / 1000000.0);
		tuplestore_putvalues(rsinfo->setResult, rsinfo->setDesc, values, nulls);
	}
	MqOwnerEnd(&session);
	return (Datum) 0;
}
