/*-------------------------------------------------------------------------
 *
 * consumer.h
 *	  Registered consumers: heartbeats, and release of a dead consumer's
 *	  claims.
 *
 *-------------------------------------------------------------------------
 */
#ifndef MQ_CONSUMER_H
#define MQ_CONSUMER_H

#include "postgres.h"

extern bool MqConsumerToken(int64 *token);
extern void MqConsumerSawQueue(int64 queue_id);

#endif							/* MQ_CONSUMER_H */
