/*-------------------------------------------------------------------------
 *
 * relay.h
 *	  The NOTIFY relay: committed sends marked in shared memory, notified
 *	  by a background worker per database.
 *
 *-------------------------------------------------------------------------
 */
#ifndef MQ_RELAY_H
#define MQ_RELAY_H

#include "storage/latch.h"

/* a database's marks: one bit per queue id modulo MQ_RELAY_SLOTS */
#define MQ_RELAY_SLOTS 1024
#define MQ_RELAY_WORDS (MQ_RELAY_SLOTS / 64)

static inline int
MqRelaySlot(int64 queue_id)
{
	return (int) ((uint64) queue_id % MQ_RELAY_SLOTS);
}

extern int	MqRelayReserve(void);
extern void MqRelayMark(int entry, const uint64 *slots);
extern void MqRelaySetLauncher(Latch *latch);
extern long MqRelayLaunch(void);

#endif							/* MQ_RELAY_H */
