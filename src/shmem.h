/*-------------------------------------------------------------------------
 *
 * shmem.h
 *	  mq's shared memory: one request and one startup hook for all modules.
 *
 *-------------------------------------------------------------------------
 */
#ifndef MQ_SHMEM_H
#define MQ_SHMEM_H

extern void MqShmemInit(void);
extern bool MqPreloaded(void);
extern void MqRequirePreload(const char *what);

/* each module's part, called from the hooks in shmem.c */
extern void MqWaitShmemRequest(void);
extern void MqWaitShmemStartup(void);
extern void MqStateShmemRequest(void);
extern void MqStateShmemStartup(void);
extern void MqOffsetsShmemRequest(void);
extern void MqOffsetsShmemStartup(void);
extern void MqConsumerShmemRequest(void);
extern void MqConsumerShmemStartup(void);
extern void MqRelayShmemRequest(void);
extern void MqRelayShmemStartup(void);
extern void MqRateShmemRequest(void);
extern void MqRateShmemStartup(void);
extern void MqHealthShmemRequest(void);
extern void MqHealthShmemStartup(void);

#endif							/* MQ_SHMEM_H */
