/*-------------------------------------------------------------------------
 *
 * worker.h
 *	  Maintenance in the background: the launcher and its per-database workers.
 *
 *-------------------------------------------------------------------------
 */
#ifndef MQ_WORKER_H
#define MQ_WORKER_H

extern char *MqDatabase;
extern int	MqMaintenanceInterval;

extern void MqWorkerRegister(void);

#endif							/* MQ_WORKER_H */
