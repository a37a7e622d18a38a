/*-------------------------------------------------------------------------
 *
 * health.c
 *	  The oldest backend holding the xmin horizon, for mq.warnings.
 *
 * A long transaction anywhere in the cluster keeps VACUUM from removing
 * the dead row versions that acks and claims leave behind, in every
 * database.  pg_stat_activity shows who holds the horizon, but a role
 * without pg_read_all_stats sees no other role's transaction start time;
 * a monitor needs the pid and the age, and nothing of the query.  This
 * reads the backend status array directly and returns only those.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/transam.h"
#include "commands/dbcommands.h"
#include "fmgr.h"
#include "funcapi.h"
#include "miscadmin.h"
#include "utils/backend_status.h"
#include "utils/builtins.h"
#include "utils/timestamp.h"

#include "queue.h"

PG_FUNCTION_INFO_V1(mq_xmin_horizon);

#if PG_VERSION_NUM >= 170000
#define local_beentry(i) pgstat_get_local_beentry_by_index(i)
#else
#define local_beentry(i) pgstat_fetch_stat_local_beentry(i)
#endif

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

	/* who may watch every queue (rights.c: as mq.metrics_all) */
	if (!MqHasRole(GetUserId(), "mq_monitor") && !MqHasRole(GetUserId(), "mq_consumer") &&
		!MqHasRole(GetUserId(), "mq_admin"))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to run mq.warnings"),
				 errdetail("Only roles with the privileges of mq_monitor, mq_consumer or mq_admin may do this.")));
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
