/*-------------------------------------------------------------------------
 *
 * pooler.h
 *	  mq.pool_mode: what a transaction pooler in front of the server makes
 *	  wrong, refused or changed.
 *
 *-------------------------------------------------------------------------
 */
#ifndef MQ_POOLER_H
#define MQ_POOLER_H

extern void MqPoolerInit(void);
extern bool MqTransactionPooled(void);
extern void MqRequireOwnSession(const char *what, const char *instead);

#endif							/* MQ_POOLER_H */
