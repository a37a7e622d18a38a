/*-------------------------------------------------------------------------
 *
 * keylocks.h
 *	  Locks on the keys of a keyed work queue (keylocks.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef MQ_KEYLOCKS_H
#define MQ_KEYLOCKS_H

#include "queue.h"

extern void MqKeyLock(MqQueue *q, const char *key);
extern int	MqKeyLockMany(MqQueue *q, char **keys, int n);
extern void MqKeyLockAll(MqQueue *q);
extern void MqKeyLocksInit(void);

#endif							/* MQ_KEYLOCKS_H */
