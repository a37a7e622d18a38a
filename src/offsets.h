/*-------------------------------------------------------------------------
 *
 * offsets.h
 *	  Offsets of partitioned queues: allocation and the visible end.
 *
 *-------------------------------------------------------------------------
 */
#ifndef MQ_OFFSETS_H
#define MQ_OFFSETS_H

extern void MqOffsetsInit(void);
extern int64 MqOffsetAllocate(int32 queue_id, int32 partition, Oid seq);
extern int64 MqOffsetVisibleEnd(int32 queue_id, int32 partition, Oid seq);

#endif							/* MQ_OFFSETS_H */
