/*-------------------------------------------------------------------------
 *
 * mq.c
 *	  Module entry: _PG_init.
 *
 * mq works without shared_preload_libraries; everything here is per
 * backend.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"

#include "queue.h"
#include "offsets.h"
#include "wait.h"

PG_MODULE_MAGIC;

void		_PG_init(void);

void
_PG_init(void)
{
	MqQueueCacheInit();
	MqWaitInit();
	MqOffsetsInit();
}
