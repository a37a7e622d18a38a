/*-------------------------------------------------------------------------
 *
 * state.h
 *	  What the server remembers about each work queue between statements:
 *	  where reads go on in each segment (tickets), messages to read again
 *	  (the ring), when the next delayed message is due, and when each
 *	  segment needs a sweep.  Hints only: the tables are the truth.
 *
 *-------------------------------------------------------------------------
 */
#ifndef MQ_STATE_H
#define MQ_STATE_H

#include "utils/snapshot.h"
#include "utils/timestamp.h"

#include "queue.h"

#define MQ_RING 256				/* ranges the ring holds */

/* Messages to claim again: a segment and a range of msg_ids in it. */
typedef struct MqRingEntry
{
	int32		segment;
	int32		epoch;
	int64		from;			/* msg_ids [from, to) */
	int64		to;
} MqRingEntry;

/* Tickets taken for one range of a segment. */
typedef struct MqTickets
{
	int			segment;
	int32		epoch;
	int64		from;			/* msg_ids [from, to) */
	int64		to;
} MqTickets;

extern bool MqStateAttach(MqQueue *q);
extern void MqStateForget(int64 queue_id);
extern bool MqStateTakeTickets(MqQueue *q, int segment, int64 bound, int64 n,
							   MqTickets *t);
extern void MqStateReturnTickets(MqQueue *q, int segment, int32 epoch, int64 from);
extern int64 MqStateTicket(MqQueue *q, int segment);
extern bool MqStateSegmentClosed(MqQueue *q, int segment, int64 *max_id);
extern void MqStateCloseSegment(MqQueue *q, int segment, int32 epoch, int64 max_id);
extern int	MqStatePopRing(MqQueue *q, MqRingEntry *out, int max);
extern bool MqStatePushRing(MqQueue *q, const MqRingEntry *e);
extern int	MqStatePeekRing(MqQueue *q, MqRingEntry *out, int max);
extern TimestampTz MqStateEarliestDue(MqQueue *q, uint64 *changes);
extern void MqStateSetEarliestDue(MqQueue *q, TimestampTz due, uint64 changes);
extern void MqStateNoteDue(int64 queue_id, TimestampTz due);
extern void MqStateSweepSoon(int64 queue_id);
extern bool MqStateSweepDue(MqQueue *q, int segment, TimestampTz now);
extern void MqStateSweepDone(MqQueue *q, int segment, TimestampTz next);
extern void MqStateNoteLapse(MqQueue *q, int segment, TimestampTz vt);
extern TimestampTz MqStateNextTimedEvent(MqQueue *q);

/* What the counters of a work queue count (metrics). */
typedef enum MqCount
{
	MQ_COUNT_READY,				/* in a segment, neither claimed nor blocked */
	MQ_COUNT_IN_FLIGHT,			/* claimed (lapsed claims until read again) */
	MQ_COUNT_DELAYED,			/* in the delayed table, neither claimed nor blocked */
	MQ_COUNT_BLOCKED,			/* waiting behind an older message of their key */
	MQ_COUNTS
} MqCount;

extern void MqStateCount(int64 queue_id, MqCount what, int64 delta);
extern bool MqStateCounters(MqQueue *q, int64 *counts);
extern uint64 MqStateCountBegin(MqQueue *q, Snapshot *snap);
extern void MqStateCountEnd(MqQueue *q, uint64 count_id, const int64 *counts);

/* transaction bookkeeping (see state.c) */
extern void MqStateNoteClaim(MqQueue *q, int segment, int64 msg_id);
extern void MqStateNoteSent(MqQueue *q, int segment, int64 from, int64 to);
extern void MqStateNotePending(MqQueue *q, const MqTickets *t);
extern void MqStateClearPending(void);
extern void MqStateRingAtCommit(MqQueue *q, int segment, int64 msg_id);
extern void MqStateInit(void);

#endif							/* MQ_STATE_H */
