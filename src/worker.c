/*-------------------------------------------------------------------------
 *
 * worker.c
 *	  The maintenance background worker: runs mq.maintain() in the database
 *	  mq.database every mq.maintenance_interval, so that maintenance needs
 *	  no client: releasing dead consumers' claims, dead-lettering lapsed
 *	  last attempts, retention of partitioned queues.
 *
 * Started when mq is in shared_preload_libraries and mq.database is not
 * empty.  It does nothing while the database lacks the extension, or has
 * it at another version than the library's (after a package upgrade, until
 * ALTER EXTENSION mq UPDATE), when mq.maintain() would fail every pass; it
 * says so in the log once.  An error ends the worker and the postmaster
 * starts it again a second later; after a crash of any backend, it is
 * restarted with the rest.  Without preloading, call mq.maintain() from a
 * scheduler such as pg_cron.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "tcop/tcopprot.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/wait_event.h"

#include "queue.h"
#include "worker.h"

PGDLLEXPORT void mq_worker_main(Datum arg);

char	   *MqDatabase = NULL;
int			MqMaintenanceInterval = 1000;

void
MqWorkerRegister(void)
{
	BackgroundWorker worker;

	if (MqDatabase == NULL || MqDatabase[0] == '\0')
		return;
	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = 1;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "mq");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "mq_worker_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "mq maintenance");
	snprintf(worker.bgw_type, BGW_MAXLEN, "mq maintenance");
	RegisterBackgroundWorker(&worker);
}

/* whether the log says that passes are skipped for the extension's version */
static bool version_logged = false;

/*
 * Whether mq is installed at the library's version.  Any other version's
 * SQL objects do not fit the library (src/queue.c refuses them), so a pass
 * would fail and end the worker, to be started again every second.
 */
static bool
extension_current(void)
{
	char	   *version;

	if (SPI_execute("SELECT extversion FROM pg_catalog.pg_extension"
					" WHERE extname OPERATOR(pg_catalog.=) 'mq'", true, 1) != SPI_OK_SELECT)
		elog(ERROR, "could not read pg_extension");
	if (SPI_processed == 0)
		return false;
	version = SPI_getvalue(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1);
	if (version != NULL && strcmp(version, MQ_VERSION) == 0)
	{
		version_logged = false;
		return true;
	}
	if (!version_logged)
		ereport(LOG,
				(errmsg("skipping maintenance of database \"%s\": extension \"mq\" is at version %s, but its library is version %s",
						MqDatabase, version ? version : "?", MQ_VERSION),
				 errhint("Run ALTER EXTENSION mq UPDATE in that database.")));
	version_logged = true;
	return false;
}

/*
 * One pass: mq.maintain() in its own transaction, if mq is installed at
 * the library's version.
 */
static void
maintain_once(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (OidIsValid(get_extension_oid("mq", true)))
	{
		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (extension_current())
		{
			pgstat_report_activity(STATE_RUNNING, "SELECT mq.maintain()");
			if (SPI_execute("SELECT mq.maintain()", false, 0) != SPI_OK_SELECT)
				elog(ERROR, "mq.maintain() failed");
		}
		SPI_finish();
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
	pgstat_report_stat(false);
	pgstat_report_activity(STATE_IDLE, NULL);
}

void
mq_worker_main(Datum arg)
{
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	BackgroundWorkerInitializeConnection(MqDatabase, NULL, 0);
	/* nothing this worker runs may resolve a name outside pg_catalog */
	SetConfigOption("search_path", MqPinnedSearchPath, PGC_SUSET, PGC_S_OVERRIDE);

	for (;;)
	{
		maintain_once();
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 MqMaintenanceInterval, PG_WAIT_EXTENSION);
		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
	}
}
