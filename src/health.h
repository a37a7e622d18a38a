/*-------------------------------------------------------------------------
 *
 * health.h
 *	  What mq.warnings reads from shared memory (health.c).
 *
 *-------------------------------------------------------------------------
 */
#ifndef MQ_HEALTH_H
#define MQ_HEALTH_H

#include "datatype/timestamp.h"

extern void MqHealthNoteClaim(int64 queue_id, TimestampTz lapse);

#endif							/* MQ_HEALTH_H */
