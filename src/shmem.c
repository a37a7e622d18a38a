/*-------------------------------------------------------------------------
 *
 * shmem.c
 *	  mq's shared memory, the PostgreSQL 15 way: space and LWLock tranches
 *	  are requested in shmem_request_hook and attached in
 *	  shmem_startup_hook (which also runs again after a crash restart), for
 *	  every module at once, chaining the previous hooks.
 *
 * Users: wait.c (long-polling wake-ups), state.c (per-queue read hints),
 * offsets.c (holds of running sends), consumer.c (registered consumers),
 * relay.c (marks for the NOTIFY relay), ratelimit.c (token buckets),
 * health.c (claims held in open transactions).  Each module's file banner gives its own
 * locking rules.  Without shared_preload_libraries = 'mq' none of this
 * exists: plain work queues still work, and the features that need it
 * raise 55000 through MqRequirePreload().
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"

#include "ratelimit.h"
#include "shmem.h"
#include "state.h"

PG_FUNCTION_INFO_V1(mq_forget_queue);

static shmem_request_hook_type prev_shmem_request_hook = NULL;
static shmem_startup_hook_type prev_shmem_startup_hook = NULL;
static bool attached = false;

static void
mq_shmem_request(void)
{
	if (prev_shmem_request_hook)
		prev_shmem_request_hook();
	MqWaitShmemRequest();
	MqStateShmemRequest();
	MqOffsetsShmemRequest();
	MqConsumerShmemRequest();
	MqRelayShmemRequest();
	MqRateShmemRequest();
	MqHealthShmemRequest();
}

static void
mq_shmem_startup(void)
{
	if (prev_shmem_startup_hook)
		prev_shmem_startup_hook();
	LWLockAcquire(AddinShmemInitLock, LW_EXCLUSIVE);
	MqWaitShmemStartup();
	MqStateShmemStartup();
	MqOffsetsShmemStartup();
	MqConsumerShmemStartup();
	MqRelayShmemStartup();
	MqRateShmemStartup();
	MqHealthShmemStartup();
	LWLockRelease(AddinShmemInitLock);
	attached = true;
}

/* Called from _PG_init. */
void
MqShmemInit(void)
{
	if (!process_shared_preload_libraries_in_progress)
		return;
	prev_shmem_request_hook = shmem_request_hook;
	shmem_request_hook = mq_shmem_request;
	prev_shmem_startup_hook = shmem_startup_hook;
	shmem_startup_hook = mq_shmem_startup;
}

/* Whether mq was preloaded, so that its shared memory exists. */
bool
MqPreloaded(void)
{
	return attached;
}

/* Raise 55000 unless mq was preloaded; what names the feature. */
void
MqRequirePreload(const char *what)
{
	if (!attached)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("%s need mq to be preloaded", what),
				 errhint("Add mq to shared_preload_libraries and restart the server.")));
}

/*
 * mq._forget_queue(queue_id bigint) RETURNS void
 *	  Frees the shared state of a queue that is being dropped (its rate
 *	  limit bucket), so that dropped queues never use up shared memory.  If
 *	  the drop rolls back, the state is rebuilt on next use, as after a
 *	  restart.
 */
Datum
mq_forget_queue(PG_FUNCTION_ARGS)
{
	if (!PG_ARGISNULL(0))
	{
		MqRateForget(PG_GETARG_INT64(0));
		MqStateForget(PG_GETARG_INT64(0));
	}
	PG_RETURN_VOID();
}
