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
 * add or remove a bucket.
 *
 * Memory: the table has a fixed size, MQ_RATE_BUCKETS entries, allocated
 * at server start (HASH_FIXED_SIZE: a shared hash table would otherwise
 * grow into the server's free shared memory, which other databases need
 * for their locks).  A bucket that is full again carries no state (a new
 * one starts full), so when the table is full such a bucket is reused;
 * drop_queue frees its queue's bucket at once.  A database may hold at
 * most MQ_RATE_BUCKETS_PER_DB buckets, so that one cannot take the table
 * from the others: more buckets of one database that are not full at the
 * same moment make its reads fail (53400); others' reads fail only when
 * all MQ_RATE_BUCKETS are in use.
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

#define MQ_RATE_BUCKETS 4096
#define MQ_RATE_BUCKETS_PER_DB 1024

/*
 * HASH_BLOBS compares every byte of a key and key_of returns it by value,
 * which need not copy padding: the key has none.
 */
typedef struct BucketKey
{
	int64		queue_id;
	Oid			database;
	uint32		unused;			/* zero */
} BucketKey;

typedef struct Bucket
{
	BucketKey	key;
	slock_t		mutex;
	double		tokens;
	TimestampTz last;			/* when tokens was last brought up to date */
	double		rate;			/* the queue's limit when last used */
	double		burst;
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
							&info, HASH_ELEM | HASH_BLOBS | HASH_FIXED_SIZE);
	buckets_lock = &(GetNamedLWLockTranche("mq rate limits"))->lock;
}

static BucketKey
key_of(int64 queue_id)
{
	BucketKey	key;

	memset(&key, 0, sizeof(key));
	key.database = MyDatabaseId;
	key.queue_id = queue_id;
	return key;
}

/* Whether a bucket has refilled, so that dropping it loses nothing. */
static bool
bucket_full(Bucket *b, TimestampTz now)
{
	bool		full;

	SpinLockAcquire(&b->mutex);
	full = b->tokens + (now - b->last) / (double) USECS_PER_SEC * b->rate >= b->burst;
	SpinLockRelease(&b->mutex);
	return full;
}

/*
 * With the lock held exclusively, before adding a bucket of this database:
 * make room if this database holds its share or the table is full, by
 * removing a full bucket (of this database if it is at its share).
 * Returns false when there is no room.
 */
static bool
make_room(void)
{
	HASH_SEQ_STATUS status;
	Bucket	   *b;
	Bucket	   *victim = NULL;
	TimestampTz now = GetCurrentTimestamp();
	long		mine = 0;
	long		all = 0;

	hash_seq_init(&status, buckets);
	while ((b = hash_seq_search(&status)) != NULL)
	{
		bool		own = b->key.database == MyDatabaseId;

		all++;
		mine += own;
		if (victim == NULL || (own && victim->key.database != MyDatabaseId))
			if (bucket_full(b, now))
				victim = b;
	}
	if (mine < MQ_RATE_BUCKETS_PER_DB && all < MQ_RATE_BUCKETS)
		return true;
	if (victim == NULL || (mine >= MQ_RATE_BUCKETS_PER_DB && victim->key.database != MyDatabaseId))
		return false;
	{
		BucketKey	key = victim->key;

		(void) hash_search(buckets, &key, HASH_REMOVE, NULL);
	}
	return true;
}

/*
 * The queue's bucket, added if missing.  Returns with the buckets lock held
 * in shared mode, which keeps the bucket from being removed: release it
 * after using the bucket.
 */
static Bucket *
bucket_for(MqQueue *q)
{
	BucketKey	key = key_of(q->queue_id);
	Bucket	   *b;
	bool		found = true;

	MqRequirePreload("rate limits");
	LWLockAcquire(buckets_lock, LW_SHARED);
	b = hash_search(buckets, &key, HASH_FIND, NULL);
	if (b != NULL)
		return b;
	LWLockRelease(buckets_lock);

	LWLockAcquire(buckets_lock, LW_EXCLUSIVE);
	b = hash_search(buckets, &key, HASH_FIND, NULL);
	if (b == NULL && make_room())
		b = hash_search(buckets, &key, HASH_ENTER_NULL, &found);
	if (b != NULL && !found)
	{
		SpinLockInit(&b->mutex);
		b->tokens = q->rate_burst;
		b->last = GetCurrentTimestamp();
		b->rate = q->rate_limit;
		b->burst = q->rate_burst;
	}
	LWLockRelease(buckets_lock);
	if (b == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_CONFIGURATION_LIMIT_EXCEEDED),
				 errmsg("too many rate-limited queues in use"),
				 errdetail("mq keeps at most %d rate limits per database that are not full at once.",
						   MQ_RATE_BUCKETS_PER_DB),
				 errhint("Wait for other queues' limits to refill, or remove limits that are not needed.")));
	/* the bucket may have been evicted meanwhile: look again */
	return bucket_for(q);
}

/* Free the bucket of a queue being dropped, if it has one. */
void
MqRateForget(int64 queue_id)
{
	BucketKey	key = key_of(queue_id);

	if (buckets == NULL)
		return;
	LWLockAcquire(buckets_lock, LW_EXCLUSIVE);
	(void) hash_search(buckets, &key, HASH_REMOVE, NULL);
	LWLockRelease(buckets_lock);
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
	b->rate = q->rate_limit;
	b->burst = q->rate_burst;
	granted = (int) Min((double) want, b->tokens);
	b->tokens -= granted;
	if (granted == 0)
		*next_due = now + (TimestampTz) ((1.0 - b->tokens) / q->rate_limit * USECS_PER_SEC) + 1;
	SpinLockRelease(&b->mutex);
	LWLockRelease(buckets_lock);
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
	LWLockRelease(buckets_lock);
}
