/*-------------------------------------------------------------------------
 *
 * wait.h
 *	  Long polling: readers that wait for a send to commit.
 *
 *-------------------------------------------------------------------------
 */
#ifndef MQ_WAIT_H
#define MQ_WAIT_H

#include "utils/timestamp.h"

#include "queue.h"

/* Fetch up to `granted` messages of q into the caller's result. */
typedef uint64 (*MqFetchFn) (MqQueue *q, int granted, void *arg);

extern void MqWaitInit(void);
extern TimestampTz MqWaitDeadline(Interval *wait);
extern void MqWaitNoteSend(int64 queue_id);
extern void MqWaitWake(int64 queue_id);
extern void MqWaitDropBegin(int64 queue_id);
extern void MqWaitDropEnd(void);
extern uint64 MqWaitSendCount(int64 queue_id);
extern void MqWaitUntil(TimestampTz until);
extern void MqWaitLoop(text *queue_name, bool partitioned, int want,
					   TimestampTz deadline, MqFetchFn fetch, void *arg);
extern void MqWaitForSend(int64 queue_id, uint64 seen, TimestampTz deadline,
						  TimestampTz next, int *fallback_ms);

#endif							/* MQ_WAIT_H */
