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

extern void MqWaitInit(void);
extern TimestampTz MqWaitDeadline(Interval *wait);
extern void MqWaitNoteSend(int32 queue_id);
extern uint64 MqWaitSendCount(int32 queue_id);
extern void MqWaitUntil(TimestampTz until);
extern void MqWaitForSend(int32 queue_id, uint64 seen, TimestampTz deadline,
						  int *fallback_ms);

#endif							/* MQ_WAIT_H */
