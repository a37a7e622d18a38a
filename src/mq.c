/*-------------------------------------------------------------------------
 *
 * mq.c
 *	  Module entry: _PG_init.
 *
 * mq works without shared_preload_libraries.  Preloaded, it adds shared
 * memory (shmem.c: long-polling wake-ups, partition offsets, registered
 * consumers, listener counts, rate limits) and the maintenance background
 * worker (worker.c).  GUCs: mq.database and mq.maintenance_interval here,
 * mq.autocommit_positions in partition.c, where its rule lives.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "queue.h"
#include "keylocks.h"
#include "offsets.h"
#include "partition.h"
#include "shmem.h"
#include "state.h"
#include "wait.h"
#include "worker.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	MqQueueCacheInit();
	MqWaitInit();
	MqOffsetsInit();
	MqStateInit();
	MqKeyLocksInit();
	MqPartitionInit();
	MqShmemInit();

	/* a postmaster-level GUC can only be defined while preloading */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomStringVariable("mq.database",
								   "Database whose queues the mq background worker maintains.",
								   "Empty: no background worker; call mq.maintain() yourself.",
								   &MqDatabase, "postgres", PGC_POSTMASTER, 0,
								   NULL, NULL, NULL);
	DefineCustomIntVariable("mq.maintenance_interval",
							"Time between two passes of the mq background worker.",
							"Bounds how long a dead consumer's messages stay invisible.",
							&MqMaintenanceInterval, 1000, 10, 3600 * 1000, PGC_SIGHUP,
							GUC_UNIT_MS, NULL, NULL, NULL);
	MarkGUCPrefixReserved("mq");
	if (process_shared_preload_libraries_in_progress)
		MqWorkerRegister();
}
