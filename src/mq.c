/*-------------------------------------------------------------------------
 *
 * mq.c
 *	  Module entry: _PG_init.
 *
 * mq works without shared_preload_libraries.  Preloaded, it adds shared
 * memory (shmem.c: long-polling wake-ups, partition offsets, registered
 * consumers, NOTIFY relay marks, rate limits) and workers in the
 * background (worker.c: a launcher and a maintenance worker per database
 * and pass; relay.c: a NOTIFY relay per database with recent sends).
 * GUCs: mq.database and mq.maintenance_interval here,
 * mq.autocommit_positions in partition.c, mq.release_on_session_end in
 * consumer.c and mq.pool_mode in pooler.c, where their rules live.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "utils/guc.h"

#include "consumer.h"
#include "queue.h"
#include "keylocks.h"
#include "notify.h"
#include "offsets.h"
#include "partition.h"
#include "pooler.h"
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
	MqNotifyInit();
	MqOffsetsInit();
	MqStateInit();
	MqKeyLocksInit();
	MqPartitionInit();
	MqConsumerInit();
	MqPoolerInit();
	MqShmemInit();

	/* only the preloaded library's launcher reads it */
	if (process_shared_preload_libraries_in_progress)
		DefineCustomStringVariable("mq.database",
								   "Databases whose queues mq's background workers maintain: a database name, or * for every database where mq is installed.",
								   "Empty: no maintenance in the background; call mq.maintain() yourself.",
								   &MqDatabase, "*", PGC_SIGHUP, 0,
								   NULL, NULL, NULL);
	DefineCustomIntVariable("mq.maintenance_interval",
							"Time between two passes of mq's background maintenance in each database.",
							"Bounds how long the messages of a registered consumer whose heartbeat lapsed stay invisible; those of a session that ended are released at once.",
							&MqMaintenanceInterval, 1000, 10, 3600 * 1000, PGC_SIGHUP,
							GUC_UNIT_MS, NULL, NULL, NULL);
	MarkGUCPrefixReserved("mq");
	if (process_shared_preload_libraries_in_progress)
		MqWorkerRegister();
}
