/*-------------------------------------------------------------------------
 *
 * ratelimit.c
 *	  Consumption rate limits: mq.read and mq.poll never hand out more than
 *	  a queue's rate_limit messages per second across all consumers
 *	  together, plus a burst.
 *
 * Each rate-limited queue has a token bucket in shared memory: it fills at
 * rate_limit tokens per second up to rate_limit_burst tokens, and a read
 * takes one token per message it may claim (returning those it could not
 * use).  So over any window of T seconds at most rate_limit * T +
 * rate_limit_burst messages are handed out.  The bucket starts full.  A
 * read finding the bucket empty returns nothing, or, with a wait, sleeps
 * until the next token is due.
 *
 * Locking: a spinlock per bucket, held for a few arithmetic operations, so
 * readers do not serialize on a row or on each other's transactions.  The
 * hash of buckets, keyed by (database, queue id), takes an LWLock only to
 * add a bucket.
 *
 * Needs shared_preload_libraries = 'mq'; a queue cannot get a rate limit
 * otherwise (55000).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "miscadmin.h"
#include "storage/ipc.h"
#include "storage/lwlock.h"
#include "storage/shmem.h"
#include "storage/spin.h"
#include "utils/hsearch.h"
#include "utils/timestamp.h"

#include "ratelimit.h"
#include "shmem.h"

#define MQ_RATE_BUCKETS 1024

typedef struct BucketKey
{
	Oid			database;
	int32		queue_id;
} BucketKey;

typedef struct Bucket
{
	BucketKey	key;
	slock_t		mutex;
	double		tokens;
	TimestampTz last;			/* when tokens was last brought up to date */
} Bucket;

static HTAB *buckets = NULL;
static LWLock *buckets_lock = NULL;

void
MqRateShmemRequest(void)
{
	RequestAddinShmemSpace(hash_estimate_size(MQ_RATE_BUCKETS, sizeof(Bucket)));
	RequestNamedLWLockTranche("mq rate limits", 1);
}

void
MqRateShmemStartup(void)
{
	HASHCTL		info;

	info.keysize = sizeof(BucketKey);
	info.entrysize = sizeof(Bucket);
	buckets = ShmemInitHash("mq rate limits", MQ_RATE_BUCKETS, MQ_RATE_BUCKETS,
							&info, HASH_ELEM | HASH_BLOBS);
	buckets_lock = &(GetNamedLWLockTranche("mq rate limits"))->lock;
}

static Bucket *
bucket_for(MqQueue *q)
{
	BucketKey	key;
	Bucket	   *b;
	bool		found;

	MqRequirePreload("rate limits");
	memset(&key, 0, sizeof(key));
	key.database = MyDatabaseId;
	key.queue_id = q->queue_id;
	LWLockAcquire(buckets_lock, LW_SHARED);
	b = hash_search(buckets, &key, HASH_FIND, NULL);
	LWLockRelease(buckets_lock);
	if (b != NULL)
		return b;

	LWLockAcquire(buckets_lock, LW_EXCLUSIVE);
	b = hash_search(buckets, &key, HASH_ENTER_NULL, &found);
	if (b != NULL && !found)
	{
		SpinLockInit(&b->mutex);
		b->tokens = q->rate_burst;
		b->last = GetCurrentTimestamp();
	}
	LWLockRelease(buckets_lock);
	if (b == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many rate-limited queues"),
				 errdetail("mq keeps at most %d rate limits.", MQ_RATE_BUCKETS)));
	return b;
}

/*
 * Take up to want tokens; returns how many were granted.  When none was,
 * *next_due is when the next token will be there.
 */
int
MqRateTake(MqQueue *q, int want, TimestampTz *next_due)
{
	Bucket	   *b;
	TimestampTz now;
	int			granted;

	if (q->rate_limit <= 0)
		return want;
	b = bucket_for(q);
	now = GetCurrentTimestamp();
	SpinLockAcquire(&b->mutex);
	b->tokens = Min((double) q->rate_burst,
					b->tokens + (now - b->last) / (double) USECS_PER_SEC * q->rate_limit);
	b->last = now;
	granted = (int) Min((double) want, b->tokens);
	b->tokens -= granted;
	if (granted == 0)
		*next_due = now + (TimestampTz) ((1.0 - b->tokens) / q->rate_limit * USECS_PER_SEC) + 1;
	SpinLockRelease(&b->mutex);
	return granted;
}

/* Give back tokens a read took but could not use. */
void
MqRateRefund(MqQueue *q, int n)
{
	Bucket	   *b;

	if (q->rate_limit <= 0 || n <= 0)
		return;
	b = bucket_for(q);
	SpinLockAcquire(&b->mutex);
	b->tokens = Min((double) q->rate_burst, b->tokens + n);
	SpinLockRelease(&b->mutex);
}
