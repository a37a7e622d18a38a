/*-------------------------------------------------------------------------
 *
 * consumer.h
 *	  Liveness: the stamps that tie claims and leases to their session,
 *	  registered consumers' heartbeats, and the release of the claims of
 *	  sessions that ended.
 *
 *-------------------------------------------------------------------------
 */
#ifndef MQ_CONSUMER_H
#define MQ_CONSUMER_H

#include "postgres.h"

#include "storage/latch.h"

extern bool MqReleaseOnSessionEnd;

extern void MqConsumerInit(void);
extern bool MqConsumerToken(int64 *token);
extern void MqConsumerSawQueue(int64 queue_id);
extern void MqConsumerSetMaintainer(Latch *latch);
extern int	MqConsumerTakeRequests(Oid *dbs, int max);

#endif							/* MQ_CONSUMER_H */
