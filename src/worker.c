/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  Maintenance in the background: a launcher, connected to no database,
 *	  that starts a maintenance worker for each database every
 *	  mq.maintenance_interval; the worker runs mq.maintain() there once and
 *	  exits.  So that maintenance needs no client: releasing dead
 *	  consumers' claims, dead-lettering lapsed last attempts, retention of
 *	  partitioned queues, in every database where mq is installed.
 *
 * The launcher is registered when mq is in shared_preload_libraries.  It
 * reads pg_database (a shared catalog, so it needs no database of its own)
 * and starts one dynamic background worker per database that allows
 * connections, is not a template and passes the filter mq.database ('*':
 * all), unless that database's previous worker is still running or
 * started less than an interval ago.  The launcher cannot see pg_extension
 * of another database: the worker looks, and exits quietly where mq is not
 * installed; CREATE EXTENSION mq is so picked up at the next interval.
 *
 * Why one pass per worker, not a worker that stays: a backend connected to
 * a database makes DROP DATABASE fail after 5 seconds ("being accessed by
 * other users"; PostgreSQL 15 signals only autovacuum workers), and one
 * connected to a template makes CREATE DATABASE fail.  A worker that
 * disconnects after each pass holds its database only while it maintains
 * it; one starting while the database is being dropped waits for the drop
 * at connection and then fails to connect.  The cost is a process start
 * per database and interval.
 *
 * A session that ends with claims sets the launcher's latch (consumer.c):
 * its database then gets a release-only worker (mq._release_consumers())
 * at once, or when its running worker ends, and at most every
 * MQ_RELEASE_GAP_MS, so that a dead session's messages come back within a
 * fraction of a second whatever the interval.
 *
 * The worker does nothing while the database has mq at another version
 * than the library's (after a package upgrade, until ALTER EXTENSION mq
 * UPDATE), when mq.maintain() would fail every pass; it says so in the log
 * on its first start for that database in the launcher's life.  An error
 * ends that pass's worker; the next starts an interval later.  After a
 * crash of any backend the launcher is restarted with the rest.  Without
 * preloading, call mq.maintain() from a scheduler such as pg_cron.
 *
 * The launcher also starts the NOTIFY relays (relay.c): a producer whose
 * database has no relay running sets the launcher's latch, and each pass
 * starts one for every database with pending marks.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/heapam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/tableam.h"
#include "access/xact.h"
#include "catalog/pg_database.h"
#include "catalog/pg_extension.h"
#include "commands/dbcommands.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/lmgr.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"

#include "utils/memutils.h"
#include "utils/snapmgr.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "consumer.h"
#include "queue.h"
#include "relay.h"
#include "worker.h"

PGDLLEXPORT void mq_launcher_main(Datum arg);
PGDLLEXPORT void mq_worker_main(Datum arg);

char	   *MqDatabase = NULL;
int			MqMaintenanceInterval = 1000;

/* bgw_extra of a maintenance worker */
typedef struct WorkerExtra
{
	bool		first;			/* first start for its database: log fully */
	bool		release_only;	/* a session ended: mq._release_consumers() */
} WorkerExtra;

void
MqWorkerRegister(void)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "mq");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "mq_launcher_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "mq maintenance launcher");
	snprintf(worker.bgw_type, BGW_MAXLEN, "mq maintenance launcher");
	RegisterBackgroundWorker(&worker);
}

/* ---- the launcher ------------------------------------------------------ */

/* A database the launcher has started workers for. */
typedef struct Served
{
	Oid			dboid;
	BackgroundWorkerHandle *handle; /* its worker, NULL when none runs */
	TimestampTz next_start;		/* no new worker before */
	bool		release_wanted; /* a session ended there since its last pass */
	TimestampTz next_release;	/* no release-only worker before */
	bool		seen;			/* still listed by this pass */
	bool		first;			/* no worker started for it yet */
} Served;

/* maintenance workers running at once, at most */
#define MQ_MAINTENANCE_WORKERS 2

/*
 * Release-only passes of one database start at most this often: under a
 * storm of sessions ending, one pass takes all of their records, and the
 * launcher does not start a worker per session.
 */
#define MQ_RELEASE_GAP_MS 200

static MemoryContext launcher_cxt = NULL;
static List *served = NIL;
static bool slots_logged = false;

/* whether mq.database lets the launcher serve this database */
static bool
database_wanted(const char *name)
{
	if (MqDatabase == NULL || MqDatabase[0] == '\0')
		return false;
	return strcmp(MqDatabase, "*") == 0 || strcmp(MqDatabase, name) == 0;
}

/*
 * The databases to serve, as a List of Oids in launcher_cxt: pg_database
 * read with a catalog scan (a shared catalog; the launcher has no database).
 */
static List *
databases_to_serve(void)
{
	List	   *result = NIL;
	Relation	rel;
	TableScanDesc scan;
	HeapTuple	tup;
	MemoryContext old;

	StartTransactionCommand();
	(void) GetTransactionSnapshot();
	rel = table_open(DatabaseRelationId, AccessShareLock);
	scan = table_beginscan_catalog(rel, 0, NULL);
	while (HeapTupleIsValid(tup = heap_getnext(scan, ForwardScanDirection)))
	{
		Form_pg_database db = (Form_pg_database) GETSTRUCT(tup);

		/* a worker in a template would make CREATE DATABASE fail */
		if (!db->datallowconn || db->datistemplate || !database_wanted(NameStr(db->datname)))
			continue;
		old = MemoryContextSwitchTo(launcher_cxt);
		result = lappend_oid(result, db->oid);
		MemoryContextSwitchTo(old);
	}
	table_endscan(scan);
	table_close(rel, AccessShareLock);
	CommitTransactionCommand();
	return result;
}

/* Start the maintenance worker of one database; false if no slot is free. */
static bool
start_worker(Served *s, bool first, bool release_only)
{
	BackgroundWorker worker;
	WorkerExtra extra = {first, release_only};
	MemoryContext old;
	bool		ok;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "mq");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "mq_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "mq maintenance of database %u", s->dboid);
	snprintf(worker.bgw_type, BGW_MAXLEN, "mq maintenance");
	worker.bgw_main_arg = ObjectIdGetDatum(s->dboid);
	memcpy(worker.bgw_extra, &extra, sizeof(extra));
	/* the postmaster sets our latch when it starts or stops */
	worker.bgw_notify_pid = MyProcPid;
	old = MemoryContextSwitchTo(launcher_cxt);
	ok = RegisterDynamicBackgroundWorker(&worker, &s->handle);
	MemoryContextSwitchTo(old);
	if (!ok)
	{
		s->handle = NULL;
		if (!slots_logged)
			ereport(WARNING,
					(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
					 errmsg("could not start an mq maintenance worker: no background worker slot is free"),
					 errhint("Raise max_worker_processes.")));
		slots_logged = true;
		return false;
	}
	slots_logged = false;
	return true;
}

/*
 * Databases where a session ended (consumer.c's requests, which set our
 * latch): each wants a release-only pass, after its running worker if one
 * runs.  A database we do not serve is left to its own mq.maintain().
 */
static void
note_requests(void)
{
	Oid			dbs[64];
	int			n = MqConsumerTakeRequests(dbs, lengthof(dbs));
	ListCell   *lc;

	foreach(lc, served)
	{
		Served	   *s = lfirst(lc);

		for (int i = 0; i < n && !s->release_wanted; i++)
			s->release_wanted = dbs[i] == s->dboid;
		if (n < 0)
			s->release_wanted = true;
	}
}

/*
 * One pass of the launcher: forget the workers that ended, start one for
 * each database due.  Returns the milliseconds until the next one is due.
 */
static long
launch_pass(void)
{
	List	   *dbs = databases_to_serve();
	TimestampTz now = GetCurrentTimestamp();
	TimestampTz next = TimestampTzPlusMilliseconds(now, MqMaintenanceInterval);
	ListCell   *lc;
	List	   *keep = NIL;
	MemoryContext old;

	foreach(lc, served)
	{
		Served	   *s = lfirst(lc);
		pid_t		pid;

		s->seen = false;
		if (s->handle != NULL && GetBackgroundWorkerPid(s->handle, &pid) == BGWH_STOPPED)
		{
			pfree(s->handle);
			s->handle = NULL;
		}
	}
	foreach(lc, dbs)
	{
		Oid			dboid = lfirst_oid(lc);
		Served	   *s = NULL;
		ListCell   *sc;

		foreach(sc, served)
			if (((Served *) lfirst(sc))->dboid == dboid)
				s = lfirst(sc);
		if (s == NULL)
		{
			old = MemoryContextSwitchTo(launcher_cxt);
			s = palloc0(sizeof(Served));	/* next_start 0: due at once */
			s->dboid = dboid;
			s->first = true;
			served = lappend(served, s);
			MemoryContextSwitchTo(old);
		}
		s->seen = true;
	}
	note_requests();

	/*
	 * Start the databases due, the longest due first, while fewer than
	 * MQ_MAINTENANCE_WORKERS run: the slots are max_worker_processes',
	 * shared with parallel query, and many databases would take them all.
	 */
	for (;;)
	{
		Served	   *due = NULL;
		TimestampTz due_at = 0;
		bool		release_only = false;
		int			running = 0;

		foreach(lc, served)
		{
			Served	   *s = lfirst(lc);
			TimestampTz at = s->next_start;

			/* a session ended there: a release-only pass, sooner */
			if (s->release_wanted && s->next_release < at)
				at = s->next_release;
			if (s->handle != NULL)
				running++;
			else if (!s->seen)
				continue;
			else if (at > now)
				next = Min(next, at);
			else if (due == NULL || at < due_at)
			{
				due = s;
				due_at = at;
				release_only = s->next_start > now;
			}
		}
		if (due == NULL || running >= MQ_MAINTENANCE_WORKERS)
			break;				/* a worker's end sets our latch */
		if (!start_worker(due, due->first, release_only))
			break;				/* the rest at the next pass */
		due->first = false;
		due->release_wanted = false;	/* both kinds of pass release */
		due->next_release = TimestampTzPlusMilliseconds(now, MQ_RELEASE_GAP_MS);
		if (!release_only)
			due->next_start = TimestampTzPlusMilliseconds(now, MqMaintenanceInterval);
	}
	/* databases dropped or filtered out, whose worker ended */
	old = MemoryContextSwitchTo(launcher_cxt);
	foreach(lc, served)
	{
		Served	   *s = lfirst(lc);

		if (s->seen || s->handle != NULL)
			keep = lappend(keep, s);
		else
			pfree(s);
	}
	list_free(served);
	served = keep;
	MemoryContextSwitchTo(old);
	list_free(dbs);
	return Max(TimestampDifferenceMilliseconds(GetCurrentTimestamp(), next), 1);
}

void
mq_launcher_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	/* no database: pg_database is all it reads */
	BackgroundWorkerInitializeConnection(NULL, NULL, 0);
	launcher_cxt = AllocSetContextCreate(TopMemoryContext, "mq launcher",
										 ALLOCSET_DEFAULT_SIZES);
	/* producers whose database has no NOTIFY relay wake us (relay.c) */
	MqRelaySetLauncher(MyLatch);
	/* a session that ends with claims sets it (consumer.c) */
	MqConsumerSetMaintainer(MyLatch);

	for (;;)
	{
		long		wait = Min(launch_pass(), MqRelayLaunch());

		/* woken early by the postmaster when a worker stops, by a session's end */
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 wait, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
}

/* ---- the maintenance worker of one database --------------------------- */

/*
 * Whether mq is installed at the library's version.  Any other version's
 * SQL objects do not fit the library (src/queue.c refuses them), so a pass
 * would fail.  Said at LOG on the worker's first start for the database in
 * the launcher's life, at DEBUG1 afterwards: a worker starts every interval.
 */
static bool
extension_current(bool first)
{
	char	   *version;

	if (SPI_execute("SELECT extversion FROM pg_catalog.pg_extension"
					" WHERE extname OPERATOR(pg_catalog.=) 'mq'", true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_extension");
	if (SPI_processed == 0)
		return false;
	version = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (version != NULL && strcmp(version, MQ_VERSION) == 0)
		return true;
	ereport(first ? LOG : DEBUG1,
			(errmsg("skipping maintenance of database \"%s\": extension \"mq\" is at version %s, but its library is version %s",
					get_database_name(MyDatabaseId), version ? version : "?", MQ_VERSION),
			 errhint("Run ALTER EXTENSION mq UPDATE in that database.")));
	return false;
}

/*
 * One pass: mq.maintain() in its own transaction, if mq is installed at
 * the library's version; release_only, just the release of the claims of
 * sessions that ended (mq._release_consumers(), mq.maintain()'s first step).
 */
static void
maintain_once(bool first, bool release_only)
{
	const char *sql = release_only ? "SELECT mq._release_consumers()" : "SELECT mq.maintain()";

	Oid			ext;

	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	/*
	 * DROP EXTENSION locks the extension exclusively before it drops
	 * anything: holding it shared for the pass makes a drop wait for the
	 * pass instead of removing mq's tables under it ("could not open
	 * relation").  Look again once locked (a drop may have committed
	 * meanwhile), and only then take the snapshot the pass runs with.
	 */
	ext = get_extension_oid("mq", true);
	if (OidIsValid(ext))
	{
		LockDatabaseObject(ExtensionRelationId, ext, 0, AccessShareLock);
		if (get_extension_oid("mq", true) != ext)
			ext = InvalidOid;
	}
	PushActiveSnapshot(GetTransactionSnapshot());
	if (OidIsValid(ext))
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (extension_current(first))
		{
			pgstat_report_activity(STATE_RUNNING, sql);
			if (SPI_execute(sql, false, 0) != SPI_OK_SELECT)
				elog(ERROR, "%s failed", sql);
		}
		SPI_finish();
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(true);
	pgstat_report_activity(STATE_IDLE, NULL);
}

void
mq_worker_main(Datum arg)
{
	WorkerExtra extra;

	memcpy(&extra, MyBgworkerEntry->bgw_extra, sizeof(extra));
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnectionByOid(DatumGetObjectId(arg), InvalidOid, 0);
	/* nothing this worker runs may resolve a name outside pg_catalog */
	SetConfigOption("search_path", MqPinnedSearchPath, PGC_SUSET, PGC_S_OVERRIDE);
	maintain_once(extra.first, extra.release_only);
	/* disconnect: a connected worker would make DROP DATABASE fail */
	proc_exit(0);
}
