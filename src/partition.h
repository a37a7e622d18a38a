/*-------------------------------------------------------------------------
 *
 * partition.h
 *	  Partitioned queues (logs): send into partitions, poll by groups.
 *
 *-------------------------------------------------------------------------
 */
#ifndef MQ_PARTITION_H
#define MQ_PARTITION_H

#include "funcapi.h"
#include "utils/array.h"

#include "queue.h"
#include "storage.h"

extern void MqPartitionInit(void);
extern int64 MqPartitionSend(MqQueue *q, Datum payload, MqNullable key,
							 MqNullable headers);
extern void MqPartitionSendBatch(MqQueue *q, ArrayType *payloads, ArrayType *keys,
								 ArrayType *headers, ReturnSetInfo *rsinfo);
extern int64 MqPartitionEnd(MqQueue *q, int32 partition, bool visible);

#endif							/* MQ_PARTITION_H */
