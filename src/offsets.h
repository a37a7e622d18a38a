/*-------------------------------------------------------------------------
 *
 * offsets.h
 *	  Ids handed out by sends, and the visible end (both kinds of queue).
 *
 *-------------------------------------------------------------------------
 */
#ifndef MQ_OFFSETS_H
#define MQ_OFFSETS_H

extern void MqOffsetsInit(void);
extern void MqHold(int64 queue_id, int32 partition, int segment, Oid seq, bool log);
extern int64 MqNextId(Oid seq);
extern int64 MqSequenceEnd(Oid seq);
extern int64 MqVisibleEnd(int64 queue_id, int32 partition, Oid seq);
extern bool MqHeldSegment(int64 queue_id, int segment);

#endif							/* MQ_OFFSETS_H */
