/*-------------------------------------------------------------------------
 *
 * segment.h
 *	  The segment tables of a queue: which one takes new messages, where a
 *	  msg_id lives, and the maintenance that empties and reuses them.
 *
 *-------------------------------------------------------------------------
 */
#ifndef MQ_SEGMENT_H
#define MQ_SEGMENT_H

#include "queue.h"

/* Index of a work queue's delayed table among its tables. */
#define MQ_DELAYED_SEGMENT MQ_MAX_SEGMENTS

extern void MqSegmentsLoad(MqQueue *q);
extern int	MqSegmentOf(MqQueue *q, int64 msg_id);
extern const char *MqSegmentTable(MqQueue *q, int segment);
extern const char *MqWorkTable(int64 queue_id, int table);
extern int64 MqSegmentMaintain(MqQueue *q);

#endif							/* MQ_SEGMENT_H */
