/*-------------------------------------------------------------------------
 *
 * storage.h
 *	  Where messages live and how they are claimed: the narrow interface
 *	  between the SQL entry points (message.c) and the tables.
 *
 * Every function expects to run between MqQueueOpen() and MqQueueClose(),
 * i.e. connected to SPI as mq_owner.
 *
 *-------------------------------------------------------------------------
 */
#ifndef MQ_STORAGE_H
#define MQ_STORAGE_H

#include "funcapi.h"
#include "utils/array.h"

#include "queue.h"

/* Optional text/jsonb argument: isnull means SQL NULL. */
typedef struct MqNullable
{
	Datum		value;
	bool		isnull;
} MqNullable;

extern int64 MqStorageSend(MqQueue *q, Datum payload, MqNullable key,
						   MqNullable headers, Interval *delay);
extern void MqStorageSendBatch(MqQueue *q, ArrayType *payloads, ArrayType *keys,
							   ArrayType *headers, Interval *delay,
							   ReturnSetInfo *rsinfo);
extern uint64 MqStorageClaim(MqQueue *q, int qty, Interval *vt,
							 ReturnSetInfo *rsinfo);
extern bool MqStorageAck(MqQueue *q, int64 msg_id, MqNullable receipt,
						 bool archive);
extern int64 MqStorageAckBatch(MqQueue *q, ArrayType *msg_ids, bool archive);
extern bool MqStorageRelease(MqQueue *q, int64 msg_id, MqNullable receipt,
							 Interval *delay, MqNullable error);
extern bool MqStorageExtend(MqQueue *q, int64 msg_id, MqNullable receipt,
							Interval *vt, TimestampTz *visible_at);
extern int64 MqStoragePurge(MqQueue *q);
extern int64 MqStorageMaintain(MqQueue *q);
extern TimestampTz MqStorageNextTimedEvent(MqQueue *q);

#endif							/* MQ_STORAGE_H */
