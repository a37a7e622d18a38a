/*-------------------------------------------------------------------------
 *
 * notify.h
 *	  LISTEN/NOTIFY wake-ups for clients.
 *
 *-------------------------------------------------------------------------
 */
#ifndef MQ_NOTIFY_H
#define MQ_NOTIFY_H

#include "queue.h"

extern void MqNotifyInit(void);
extern void MqNotifySend(MqQueue *q);

#endif							/* MQ_NOTIFY_H */
