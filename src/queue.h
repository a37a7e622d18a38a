/*-------------------------------------------------------------------------
 *
 * queue.h
 *	  Queue catalog cache and the owner-rights session around hot paths.
 *	  Rights checks are in rights.c.
 *
 *-------------------------------------------------------------------------
 */
#ifndef MQ_QUEUE_H
#define MQ_QUEUE_H

#include "executor/spi.h"
#include "storage/lockdefs.h"
#include "utils/acl.h"
#include "utils/timestamp.h"

/* Queue names: 1..48 bytes of [A-Za-z0-9_.-], first a letter or digit. */
#define MQ_QUEUE_NAME_MAX 48

/*
 * Room for the kept plans of one queue: storage.c numbers the work-queue
 * plans from 0 (a plan per kind and table), metrics.c its plans from
 * MQ_METRICS_PLAN_BASE, partition.c the partitioned-queue plans from
 * MQ_PARTITION_PLAN_BASE.
 */
#define MQ_MAX_PLANS 128
#define MQ_METRICS_PLAN_BASE 100
#define MQ_PARTITION_PLAN_BASE 112

/* Segment tables: 4 for a work queue, 3 for a partitioned queue. */
#define MQ_MAX_SEGMENTS 4
#define MQ_WORK_SEGMENTS 4
#define MQ_LOG_SEGMENTS 3

typedef enum MqSegmentState
{
	MQ_SEG_FREE = 0,			/* empty, ready to become current */
	MQ_SEG_CURRENT,				/* takes new messages */
	MQ_SEG_SEALED				/* holds messages, takes no new ones */
} MqSegmentState;

/* One segment table, as mq.segment describes it (segment.c). */
typedef struct MqSegment
{
	MqSegmentState state;
	int32		epoch;			/* times it was emptied and reused */
	int64		lo;				/* work queues: first msg_id while current */
	TimestampTz since;			/* when it last changed state */
	Oid			relid;
} MqSegment;

/*
 * One queue's definition, as cached per backend.  Entries (and their plans)
 * are dropped when mq.queue changes; see queue.c.
 */
typedef struct MqQueue
{
	char		name[NAMEDATALEN];	/* hash key, NUL-padded */
	int64		queue_id;		/* tables are mq.q_<id>, mq.a_<id> */
	Interval	visibility_timeout;
	int32		max_attempts;
	bool		keyed;			/* ordering = 'key' */
	int64		dlq_id;			/* dead-letter queue id, 0 when none */
	Interval	retry_delay;
	float8		retry_backoff;
	Interval	retry_delay_max;
	Oid			acked_seq;		/* counter of acked messages */
	bool		notify;			/* NOTIFY channel on send */
	float8		rate_limit;		/* messages per second, 0: none */
	int32		rate_burst;		/* token bucket size */
	char		channel[NAMEDATALEN];	/* "mq.<queue_name>" */
	int32		partitions;		/* 0: work queue; else a partitioned queue */
	Interval	retention;		/* partitioned queues */
	Interval	session_timeout;	/* consumer groups' member timeout */
	Oid		   *offset_seqs;	/* [partitions], in CacheMemoryContext */
	bool		distributed;	/* its tables are Citus-distributed (citus.c) */
	Oid			msg_seq;		/* work queues: mq.q_<id>_seq */
	Oid			delayed_relid;	/* work queues: mq.q_<id>_d */
	/* segments, reloaded when mq.segment changes (segment.c) */
	int			nsegments;
	int			current;
	uint64		segments_version;
	MqSegment	segments[MQ_MAX_SEGMENTS];
	/* the queue's shared hints (state.c), NULL when it has none */
	void	   *state;
	uint64		state_generation;
	Oid			rights_relid;	/* its per-queue grants are on this (rights.c) */
	SPIPlanPtr	plans[MQ_MAX_PLANS];
} MqQueue;

/* An operator in statement text, qualified so search_path cannot redirect it. */
#define OP(o) "OPERATOR(pg_catalog." o ")"

/* What a caller may do with a queue (rights.c). */
typedef enum MqRight
{
	MQ_RIGHT_SEND,				/* send, send_batch */
	MQ_RIGHT_CONSUME,			/* read, ack, nack, poll, commit, seek, ... */
	MQ_RIGHT_ADMIN,				/* alter, drop, purge, grant; includes both */
	MQ_RIGHT_MONITOR			/* metrics only; consume includes it */
} MqRight;

/*
 * Saved state while mq runs statements as mq_owner, with
 * search_path pinned to "pg_catalog, pg_temp" (MqOwnerBegin/End).
 */
typedef struct MqSession
{
	Oid			save_userid;
	int			save_sec_context;
	int			save_nestlevel;	/* GUC nest level, 0 when not pinned here */
} MqSession;

extern const char *const MqPinnedSearchPath;

extern void MqQueueCacheInit(void);
extern double MqIntervalSeconds(const Interval *iv);
extern void MqCheckQueueName(const char *name);
extern Oid	MqOwner(void);
extern void MqOwnerBegin(MqSession *session);
extern void MqOwnerEnd(MqSession *session);
extern MqQueue *MqQueueOpen(text *queue_name, MqSession *session, MqRight right);
extern Oid	MqQueueRelid(MqQueue *q, const char *relname);
extern void MqQueueRefreshSegments(MqQueue *q);
extern MqQueue *MqQueueOpenIfAllowed(const char *queue_name, MqSession *session,
									 MqRight right);
extern bool MqQueueCheckRight(const char *queue_name, MqRight right, bool for_drop);
extern bool MqQueueLockById(int64 queue_id);
extern Datum MqQueueLockIds(void);
extern void MqQueueClose(MqSession *session);

/* rights.c */
extern bool MqHasRight(Oid roleid, Oid rights_relid, MqRight right);
extern bool MqHasRole(Oid roleid, const char *rolname);
extern bool MqQueueIdHasRight(int64 queue_id, MqRight right);
extern Oid	MqQueueRightsRelid(int64 queue_id);
extern void MqRequireRole(const char *rolname, const char *what);
extern void MqRequireSomeConsumeRight(const char *what);
extern void MqRequireWorkQueue(MqQueue *q);
extern void MqRequirePartitioned(MqQueue *q);
extern SPIPlanPtr MqQueuePlan(MqQueue *q, int slot, const char *sql,
							  int nargs, const Oid *argtypes);
extern SPIPlanPtr MqQueuePlanWith(MqQueue *q, int slot, const char *sql,
								  int nargs, const Oid *argtypes, int cursor_options);
extern void MqQueueLockPlan(SPIPlanPtr plan);
extern Snapshot MqQueueLatestSnapshot(SPIPlanPtr plan);
extern Snapshot MqQueueLatestSnapshotOf(Oid relid, LOCKMODE lockmode);
extern uint64 MqQueueRun(MqQueue *q, SPIPlanPtr plan, Datum *values,
						 const char *nulls, int expected);

/* citus.c */
extern bool MqCitusDistributed(Oid relid);

#endif							/* MQ_QUEUE_H */
