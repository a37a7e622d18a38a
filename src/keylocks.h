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

/*
 * field4 of the advisory lock tags mq takes (users' advisory locks use 1
 * and 2, so these never meet them): a key, a queue's keys, and the release
 * of dead consumers' claims in a database (consumer.c).
 */
#define MQ_KEY_LOCK_FIELD4 0x6d71
#define MQ_KEYS_LOCK_FIELD4 0x6d72
#define MQ_RELEASE_LOCK_FIELD4 0x6d73

extern void MqKeyLock(MqQueue *q, const char *key);
extern int	MqKeyLockMany(MqQueue *q, char **keys, int n);
extern void MqKeyLockAll(MqQueue *q);
extern void MqKeyLocksInit(void);

#endif							/* MQ_KEYLOCKS_H */
