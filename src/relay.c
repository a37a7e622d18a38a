/*-------------------------------------------------------------------------
 *
 * relay.c
 *	  The NOTIFY relay: a commit that sent to a queue marks it in shared
 *	  memory, and a background worker of that database issues the
 *	  NOTIFY "mq.<queue_name>", so that no producer takes the lock that
 *	  PostgreSQL's NOTIFY holds through every notifying commit.
 *
 * NOTIFY serializes committing notifiers: PreCommit_Notify takes one
 * cluster-wide lock and keeps it until the commit record is flushed, so
 * 8 producers that each notified kept 0.39-0.41x of their rate.  Here a
 * producer, once its commit is visible (XACT_EVENT_COMMIT, notify.c), sets
 * one bit per queue it sent to (queue id modulo MQ_RELAY_SLOTS) in its
 * database's entry of a shared table, and sets the relay's latch when it
 * set a bit that was clear.  The relay swaps the bits out, looks the
 * queues of the marked slots up in mq.queue and NOTIFYs each in one
 * transaction of its own (asynchronous commit: it writes nothing that a
 * crash must keep), so a burst of commits costs one NOTIFY per queue.
 * The relay's commit follows the marking commits, so a listener woken by
 * it sees their messages.  Queues whose ids collide modulo the slot count
 * both get a notification: a spurious one only costs the listener a read.
 * The relay notifies whether anyone listens or not (PostgreSQL keeps no
 * count of listeners per channel), so a plain LISTEN "mq.<queue_name>"
 * works as well as mq.listen.
 *
 * Why one relay per database, started on demand: a notification reaches
 * only listeners of the database it was sent in, so the NOTIFY must come
 * from a backend connected there; and a worker connected to a database
 * makes DROP DATABASE (and CREATE DATABASE from it as a template) wait, and
 * fail after 5 seconds.  So the maintenance launcher (worker.c), woken on
 * its latch by a producer that found no relay, starts one for that
 * database; it exits after MQ_RELAY_IDLE_MS without marks.  Its first
 * notification after a quiet spell so waits for a process start; a busy
 * database keeps its relay.  Rounds start at least MQ_RELAY_GAP_MS apart,
 * so that under a flood of commits the relay costs a bounded share of a
 * CPU (at most 500 NOTIFY transactions a second); a commit that comes
 * later than that after the last round is notified at once.
 *
 * Crash safety: the marks live in shared memory.  A relay that exits with
 * an error (or is terminated) puts the marks it had taken back and, if
 * any are pending, wakes the launcher, which starts a new relay (after
 * MQ_RELAY_RETRY_MS when the exit was an error): no committed send loses
 * its notification.  A relay killed by a signal makes the postmaster
 * restart every process and reinitialize shared memory: the marks are
 * gone, but so are the listeners' sessions (all backends are ended), and a
 * new listener reads once after listening anyway.  Long polling (wait.c)
 * does not go through the relay.
 *
 * Without an entry (not preloaded, or more than MQ_RELAY_DATABASES
 * databases with sends at once) the producer NOTIFYs itself, as before.
 *
 * Locking: an entry's dboid and relay state (running, latch, retry_after)
 * change under the table's spinlock; producers read the latch without it
 * (an outdated latch only wakes an exiting relay, whose exit then sees the
 * mark, see relay_exit).  The marks are atomics.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "catalog/pg_type.h"
#include "commands/async.h"
#include "commands/extension.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "pgstat.h"
#include "port/atomics.h"
#include "postmaster/bgworker.h"
#include "postmaster/interrupt.h"
#include "storage/ipc.h"
#include "storage/latch.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "tcop/tcopprot.h"
#include "utils/array.h"
#include "utils/builtins.h"
#include "utils/guc.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"
#include "utils/timestamp.h"
#include "utils/wait_event.h"

#include "queue.h"
#include "relay.h"
#include "shmem.h"

PGDLLEXPORT void mq_relay_main(Datum arg);

/* databases with a relay or pending marks at once; more NOTIFY themselves */
#define MQ_RELAY_DATABASES 64
/* a relay with no marks for this long exits (below DROP DATABASE's 5 s) */
#define MQ_RELAY_IDLE_MS 1000
/* two rounds of one relay start at least this far apart */
#define MQ_RELAY_GAP_MS 2
/* a relay that failed is started again after this long */
#define MQ_RELAY_RETRY_MS 1000

typedef struct RelayDatabase
{
	Oid			dboid;			/* InvalidOid: free */
	bool		running;		/* a relay was started and has not exited */
	Latch	   *latch;			/* the relay's latch once it serves, or NULL */
	TimestampTz retry_after;	/* no relay start before (after a failure) */
	pg_atomic_uint64 marks[MQ_RELAY_WORDS];
} RelayDatabase;

typedef struct RelayShared
{
	slock_t		mutex;
	Latch	   *launcher;		/* the launcher's latch, NULL before it runs */
	RelayDatabase db[MQ_RELAY_DATABASES];
} RelayShared;

static RelayShared *relay_shared = NULL;

/* this backend's entry (a hint: checked against MyDatabaseId on use) */
static int	my_entry = -1;

/* the relay: marks taken out and not yet notified, put back on exit */
static uint64 taken[MQ_RELAY_WORDS];
static bool relay_connected = false;
static SPIPlanPtr channels_plan = NULL;

/* the launcher: its relays, to notice one that never ran */
static BackgroundWorkerHandle *relay_handles[MQ_RELAY_DATABASES];
/* the launcher warned of no free worker slot since the last start */
static bool no_slot_warned = false;

void
MqRelayShmemRequest(void)
{
	RequestAddinShmemSpace(MAXALIGN(sizeof(RelayShared)));
}

void
MqRelayShmemStartup(void)
{
	bool		found;

	relay_shared = ShmemInitStruct("mq relay", sizeof(RelayShared), &found);
	if (found)
		return;
	SpinLockInit(&relay_shared->mutex);
	relay_shared->launcher = NULL;
	for (int i = 0; i < MQ_RELAY_DATABASES; i++)
	{
		RelayDatabase *d = &relay_shared->db[i];

		d->dboid = InvalidOid;
		d->running = false;
		d->latch = NULL;
		d->retry_after = 0;
		for (int w = 0; w < MQ_RELAY_WORDS; w++)
			pg_atomic_init_u64(&d->marks[w], 0);
	}
}

static bool
any_marks(RelayDatabase *d)
{
	for (int w = 0; w < MQ_RELAY_WORDS; w++)
		if (pg_atomic_read_u64(&d->marks[w]) != 0)
			return true;
	return false;
}

/* Take entry i for this database, if it is free; under the spinlock. */
static bool
take_free(int i)
{
	RelayDatabase *d = &relay_shared->db[i];

	if (d->dboid != InvalidOid)
		return false;
	d->dboid = MyDatabaseId;
	d->retry_after = 0;
	for (int w = 0; w < MQ_RELAY_WORDS; w++)
		pg_atomic_write_u64(&d->marks[w], 0);
	return true;
}

/*
 * Free the entries of dropped databases that no relay serves.  Called
 * when the table is full, in a transaction (a syscache look-up each).
 */
static void
free_dropped(void)
{
	for (int i = 0; i < MQ_RELAY_DATABASES; i++)
	{
		RelayDatabase *d = &relay_shared->db[i];
		Oid			dboid = d->dboid;

		if (dboid == InvalidOid ||
			SearchSysCacheExists1(DATABASEOID, ObjectIdGetDatum(dboid)))
			continue;
		SpinLockAcquire(&relay_shared->mutex);
		if (d->dboid == dboid && !d->running)
			d->dboid = InvalidOid;
		SpinLockRelease(&relay_shared->mutex);
	}
}

/*
 * This database's entry, taken if it has none; -1 without preloading or
 * when all MQ_RELAY_DATABASES entries serve other databases (then the
 * caller NOTIFYs itself).  Called by a send, inside its transaction.
 */
int
MqRelayReserve(void)
{
	int			found = -1;

	if (relay_shared == NULL)
		return -1;
	if (my_entry >= 0 && relay_shared->db[my_entry].dboid == MyDatabaseId)
		return my_entry;
	for (int attempt = 0; attempt < 2 && found < 0; attempt++)
	{
		if (attempt > 0)
			free_dropped();
		SpinLockAcquire(&relay_shared->mutex);
		for (int i = 0; i < MQ_RELAY_DATABASES && found < 0; i++)
			if (relay_shared->db[i].dboid == MyDatabaseId)
				found = i;
		for (int i = 0; i < MQ_RELAY_DATABASES && found < 0; i++)
			if (take_free(i))
				found = i;
		SpinLockRelease(&relay_shared->mutex);
	}
	my_entry = found;
	return found;
}

/*
 * A commit that sent to the queues of slots is visible: mark them and
 * wake the relay, or the launcher when no relay serves yet.  Runs at
 * XACT_EVENT_COMMIT, so it must not fail.
 */
void
MqRelayMark(int entry, const uint64 *slots)
{
	RelayDatabase *d = &relay_shared->db[entry];
	bool		wake = false;
	Latch	   *latch;

	for (int w = 0; w < MQ_RELAY_WORDS; w++)
	{
		/* the common case, a mark not yet taken out, needs no write */
		if (slots[w] == 0 || (pg_atomic_read_u64(&d->marks[w]) & slots[w]) == slots[w])
			continue;
		if ((pg_atomic_fetch_or_u64(&d->marks[w], slots[w]) & slots[w]) != slots[w])
			wake = true;
	}
	if (!wake)
		return;					/* whoever set those bits woke the relay */
	/* fetch_or was a full barrier: the latch read below comes after it */
	latch = ((volatile RelayDatabase *) d)->latch;
	if (latch == NULL)
		latch = ((volatile RelayShared *) relay_shared)->launcher;
	if (latch != NULL)
		SetLatch(latch);
}

/* ---- the launcher's part ---------------------------------------------- */

/* Called by the launcher once it runs: producers wake it through this. */
void
MqRelaySetLauncher(Latch *latch)
{
	if (relay_shared == NULL)
		return;
	SpinLockAcquire(&relay_shared->mutex);
	relay_shared->launcher = latch;
	SpinLockRelease(&relay_shared->mutex);
}

static bool
start_relay(int i, Oid dboid)
{
	BackgroundWorker worker;

	memset(&worker, 0, sizeof(worker));
	worker.bgw_flags = BGWORKER_SHMEM_ACCESS | BGWORKER_BACKEND_DATABASE_CONNECTION;
	worker.bgw_start_time = BgWorkerStart_RecoveryFinished;
	worker.bgw_restart_time = BGW_NEVER_RESTART;
	snprintf(worker.bgw_library_name, BGW_MAXLEN, "mq");
	snprintf(worker.bgw_function_name, BGW_MAXLEN, "mq_relay_main");
	snprintf(worker.bgw_name, BGW_MAXLEN, "mq notify relay of database %u", dboid);
	snprintf(worker.bgw_type, BGW_MAXLEN, "mq notify relay");
	worker.bgw_main_arg = Int32GetDatum(i);
	memcpy(worker.bgw_extra, &dboid, sizeof(dboid));
	/* the postmaster sets our latch when it stops */
	worker.bgw_notify_pid = MyProcPid;
	if (relay_handles[i] != NULL)
		pfree(relay_handles[i]);
	relay_handles[i] = NULL;
	return RegisterDynamicBackgroundWorker(&worker, &relay_handles[i]);
}

/*
 * Start a relay for each database with marks and none running.  Called by
 * the launcher at each wake-up; returns the milliseconds until it must
 * look again (a relay start waiting out a failure, or no free slot).
 */
long
MqRelayLaunch(void)
{
	long		wait = 3600 * 1000L;
	TimestampTz now = GetCurrentTimestamp();

	if (relay_shared == NULL)
		return wait;
	for (int i = 0; i < MQ_RELAY_DATABASES; i++)
	{
		RelayDatabase *d = &relay_shared->db[i];
		pid_t		pid;
		Oid			dboid = InvalidOid;

		/* a relay we started that stopped without running (no fork) */
		if (relay_handles[i] != NULL &&
			GetBackgroundWorkerPid(relay_handles[i], &pid) == BGWH_STOPPED)
		{
			SpinLockAcquire(&relay_shared->mutex);
			d->running = false;
			SpinLockRelease(&relay_shared->mutex);
			pfree(relay_handles[i]);
			relay_handles[i] = NULL;
		}
		if (!any_marks(d))
			continue;
		SpinLockAcquire(&relay_shared->mutex);
		if (d->dboid != InvalidOid && !d->running && d->retry_after <= now)
		{
			d->running = true;
			dboid = d->dboid;
		}
		else if (d->dboid != InvalidOid && !d->running)
			wait = Min(wait, TimestampDifferenceMilliseconds(now, d->retry_after));
		SpinLockRelease(&relay_shared->mutex);
		if (dboid == InvalidOid)
			continue;
		if (!start_relay(i, dboid))
		{
			SpinLockAcquire(&relay_shared->mutex);
			d->running = false;
			d->retry_after = TimestampTzPlusMilliseconds(now, MQ_RELAY_RETRY_MS);
			SpinLockRelease(&relay_shared->mutex);
			if (!no_slot_warned)
				ereport(WARNING,
						(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
						 errmsg("could not start the mq notify relay of database %u: no background worker slot is free", dboid),
						 errdetail("Notifications of committed sends there wait for a free slot."),
						 errhint("Raise max_worker_processes.")));
			no_slot_warned = true;
			wait = Min(wait, MQ_RELAY_RETRY_MS);
		}
		else
			no_slot_warned = false;
	}
	return Max(wait, 1);
}

/* ---- the relay -------------------------------------------------------- */

/*
 * The relay's exit, whatever the cause but a crash: put back the marks it
 * had taken, give up the entry, and wake the launcher if marks wait, so
 * that a new relay notifies them.  Clearing the latch before reading the
 * marks pairs with MqRelayMark's fetch_or before reading the latch: a
 * producer either sees no latch and wakes the launcher itself, or set its
 * mark before this reads them.  A relay that could not connect found its
 * database dropped (BGWORKER_BYPASS_ALLOWCONN: nothing else refuses it):
 * the entry is freed with its marks.
 */
static void
relay_exit(int code, Datum arg)
{
	RelayDatabase *d = &relay_shared->db[DatumGetInt32(arg)];
	bool		wake;

	for (int w = 0; w < MQ_RELAY_WORDS; w++)
		if (taken[w] != 0)
			pg_atomic_fetch_or_u64(&d->marks[w], taken[w]);
	SpinLockAcquire(&relay_shared->mutex);
	d->latch = NULL;
	d->running = false;
	if (!relay_connected)
		d->dboid = InvalidOid;
	else if (code != 0)
		d->retry_after = TimestampTzPlusMilliseconds(GetCurrentTimestamp(), MQ_RELAY_RETRY_MS);
	SpinLockRelease(&relay_shared->mutex);
	pg_memory_barrier();
	wake = relay_connected && any_marks(d);
	if (wake && relay_shared->launcher != NULL)
		SetLatch(relay_shared->launcher);
}

/* Swap this database's marks out into taken; whether there were any. */
static bool
take_marks(RelayDatabase *d)
{
	bool		any = false;

	for (int w = 0; w < MQ_RELAY_WORDS; w++)
	{
		if (pg_atomic_read_u64(&d->marks[w]) != 0)
			taken[w] |= pg_atomic_exchange_u64(&d->marks[w], 0);
		any |= taken[w] != 0;
	}
	return any;
}

/* The taken slots as an int4[] Datum, for the look-up of their queues. */
static Datum
taken_slots(void)
{
	Datum	   *elems = palloc(sizeof(Datum) * MQ_RELAY_SLOTS);
	int			n = 0;

	for (int s = 0; s < MQ_RELAY_SLOTS; s++)
		if (taken[s / 64] & ((uint64) 1 << (s % 64)))
			elems[n++] = Int32GetDatum(s);
	return PointerGetDatum(construct_array(elems, n, INT4OID, sizeof(int32), true, TYPALIGN_INT));
}

/*
 * One round: NOTIFY every notify queue of the taken slots, in one
 * transaction, then forget them.  Without mq in the database (dropped
 * since the sends) there is nothing to notify.
 */
static void
notify_taken(void)
{
	SetCurrentStatementStartTimestamp();
	StartTransactionCommand();
	PushActiveSnapshot(GetTransactionSnapshot());
	if (OidIsValid(get_extension_oid("mq", true)))
	{
		Datum		values[1] = {taken_slots()};
		int			ret;

		if (SPI_connect() != SPI_OK_CONNECT)
			elog(ERROR, "SPI_connect failed");
		if (channels_plan == NULL)
		{
			Oid			types[1] = {INT4ARRAYOID};

			channels_plan = SPI_prepare("SELECT queue_name FROM mq.queue WHERE notify"
										" AND (queue_id OPERATOR(pg_catalog.%) " CppAsString2(MQ_RELAY_SLOTS)
										")::pg_catalog.int4 OPERATOR(pg_catalog.=) ANY ($1)",
										1, types);
			if (channels_plan == NULL || SPI_keepplan(channels_plan) != 0)
				elog(ERROR, "could not prepare the mq relay's query: %s",
					 SPI_result_code_string(SPI_result));
		}
		pgstat_report_activity(STATE_RUNNING, "mq notify relay");
		ret = SPI_execute_plan(channels_plan, values, NULL, true, 0);
		if (ret != SPI_OK_SELECT)
			elog(ERROR, "could not read mq.queue: %s", SPI_result_code_string(ret));
		for (uint64 r = 0; r < SPI_processed; r++)
		{
			char	   *name = SPI_getvalue(SPI_tuptable->vals[r], SPI_tuptable->tupdesc, 1);

			Async_Notify(psprintf("mq.%s", name), "");
		}
		SPI_finish();
	}
	PopActiveSnapshot();
	CommitTransactionCommand();
	memset(taken, 0, sizeof(taken));
	pgstat_report_activity(STATE_IDLE, NULL);
}

void
mq_relay_main(Datum arg)
{
	int			i = DatumGetInt32(arg);
	RelayDatabase *d;
	Oid			dboid;
	TimestampTz last = GetCurrentTimestamp();
	TimestampTz round_start = 0;

	memcpy(&dboid, MyBgworkerEntry->bgw_extra, sizeof(dboid));
	pqsignal(SIGHUP, SignalHandlerForConfigReload);
	pqsignal(SIGTERM, die);
	BackgroundWorkerUnblockSignals();
	if (relay_shared == NULL || i < 0 || i >= MQ_RELAY_DATABASES)
		proc_exit(0);
	d = &relay_shared->db[i];
	before_shmem_exit(relay_exit, Int32GetDatum(i));
	BackgroundWorkerInitializeConnectionByOid(dboid, InvalidOid, BGWORKER_BYPASS_ALLOWCONN);
	relay_connected = true;
	/* nothing this worker runs may resolve a name outside pg_catalog */
	SetConfigOption("search_path", MqPinnedSearchPath, PGC_SUSET, PGC_S_OVERRIDE);
	/* a notification needs no flushed commit record: it does not survive a crash */
	SetConfigOption("synchronous_commit", "off", PGC_SUSET, PGC_S_OVERRIDE);
	SpinLockAcquire(&relay_shared->mutex);
	d->latch = MyLatch;
	SpinLockRelease(&relay_shared->mutex);
	/* marks set before the latch was published are read below */
	pg_memory_barrier();

	for (;;)
	{
		long		idle;

		ResetLatch(MyLatch);
		CHECK_FOR_INTERRUPTS();
		if (ConfigReloadPending)
		{
			ConfigReloadPending = false;
			ProcessConfigFile(PGC_SIGHUP);
		}
		if (any_marks(d))
		{
			int64		gap_us = MQ_RELAY_GAP_MS * 1000 - (GetCurrentTimestamp() - round_start);

			/*
			 * Bound the rounds a flood of commits costs; rounds further
			 * apart do not wait.  The rest of a gap is below a millisecond
			 * or two, finer than WaitLatch's timeout.
			 */
			if (gap_us > 0)
				pg_usleep(gap_us);
			round_start = GetCurrentTimestamp();
			(void) take_marks(d);
			notify_taken();
			last = GetCurrentTimestamp();
			continue;
		}
		idle = MQ_RELAY_IDLE_MS - TimestampDifferenceMilliseconds(last, GetCurrentTimestamp());
		if (idle <= 0)
			proc_exit(0);		/* relay_exit wakes the launcher if marks came */
		(void) WaitLatch(MyLatch, WL_LATCH_SET | WL_TIMEOUT | WL_EXIT_ON_PM_DEATH,
						 idle, PG_WAIT_EXTENSION);
	}
}
