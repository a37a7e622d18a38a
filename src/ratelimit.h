/*-------------------------------------------------------------------------
 *
 * ratelimit.h
 *	  Consumption rate limits: a token bucket per queue in shared memory.
 *
 *-------------------------------------------------------------------------
 */
#ifndef MQ_RATELIMIT_H
#define MQ_RATELIMIT_H

#include "queue.h"

extern int	MqRateTake(MqQueue *q, int want, TimestampTz *next_due);
extern void MqRateRefund(MqQueue *q, int n);
extern void MqRateForget(int64 queue_id);

#endif							/* MQ_RATELIMIT_H */
