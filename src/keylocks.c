/*-------------------------------------------------------------------------
 *
 * keylocks.c
 *	  The locks that keep a keyed work queue's messages in order: a send
 *	  and a removal of one key serialize.
 *
 * A send of a keyed message must see whether its key already has one (then
 * it is sent blocked), and a removal must unblock the key's next message;
 * both read with the latest snapshot, so two of them on one key must not
 * overlap until the first commits.  Each takes a transaction lock on the
 * key (an advisory lock tag on the key's 32-bit hash with field4 = 'mq',
 * which never meets a user's advisory locks, which use 1 and 2), with the
 * queue's keys lock in share mode; keys that share a hash only wait for
 * each other.  The queue's keys lock in exclusive mode stands for every
 * key: mq.purge takes it, and so does a batch of more than
 * MQ_BATCH_KEY_LOCKS distinct keys when it is the transaction's first use
 * of the queue's keys, so that a batch of any size takes a bounded number
 * of locks.
 *
 * The server's lock table is shared by every database, so one transaction
 * holds at most MQ_TX_KEY_LOCKS key locks of one queue: beyond that it
 * takes the keys lock in exclusive mode instead, without waiting when it
 * holds it in share mode already (waiting to go from share to exclusive
 * deadlocks two transactions that both do so), and raises 54000 when
 * another transaction is using the queue's keys.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/xact.h"
#include "common/hashfn.h"
#include "miscadmin.h"
#include "nodes/pg_list.h"
#include "storage/lock.h"
#include "utils/memutils.h"

#include "keylocks.h"

#define MQ_BATCH_KEY_LOCKS 100
#define MQ_TX_KEY_LOCKS 256

#if PG_VERSION_NUM >= 170000
#define held_by_me(tag, mode) LockHeldByMe((tag), (mode), false)
#else
#define held_by_me(tag, mode) LockHeldByMe((tag), (mode))
#endif

/* Key locks this transaction took, per queue; reset when it ends. */
typedef struct KeyLockCount
{
	int64		queue_id;
	int			n;
} KeyLockCount;

static List *key_lock_counts = NIL;

static KeyLockCount *
count_of(MqQueue *q)
{
	ListCell   *lc;
	KeyLockCount *c;
	MemoryContext old;

	foreach(lc, key_lock_counts)
	{
		c = lfirst(lc);
		if (c->queue_id == q->queue_id)
			return c;
	}
	old = MemoryContextSwitchTo(TopTransactionContext);
	c = palloc0(sizeof(KeyLockCount));
	c->queue_id = q->queue_id;
	key_lock_counts = lappend(key_lock_counts, c);
	MemoryContextSwitchTo(old);
	return c;
}

/*
 * A queue id is a bigint and a lock tag has 32-bit fields: the keys lock
 * puts the id's low half in field2 and its high half in field3, so that it
 * is exactly one queue's.  A key lock has field3 for the key's hash, so the
 * high half is folded into the hash: two queues whose ids differ by a
 * multiple of 2^32 may then share a key lock, which only makes those two
 * keys wait for each other, as keys that share a hash always may.  Ids
 * below 2^32 have a zero high half and keep the tags of mq 0.1.0.
 */
static void
keys_lock_tag(LOCKTAG *tag, MqQueue *q)
{
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) q->queue_id,
						 (uint32) ((uint64) q->queue_id >> 32), MQ_KEYS_LOCK_FIELD4);
}

static void
key_lock_tag(LOCKTAG *tag, MqQueue *q, uint32 hash)
{
	uint32		high = (uint32) ((uint64) q->queue_id >> 32);

	if (high != 0)
		hash = hash_combine(hash, hash_uint32(high));
	SET_LOCKTAG_ADVISORY(*tag, MyDatabaseId, (uint32) q->queue_id, hash, MQ_KEY_LOCK_FIELD4);
}

static uint32
key_hash(const char *key)
{
	return hash_bytes((const unsigned char *) key, strlen(key));
}

static int
uint32_cmp(const void *a, const void *b)
{
	uint32		x = *(const uint32 *) a;
	uint32		y = *(const uint32 *) b;

	return (x > y) - (x < y);
}

static int
cstring_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *) a, *(char *const *) b);
}

/* Too many key locks: every key at once, or 54000 (see the banner). */
static void
lock_every_key_instead(MqQueue *q, bool share_held)
{
	LOCKTAG		tag;

	keys_lock_tag(&tag, q);
	if (!share_held)
		(void) LockAcquire(&tag, ExclusiveLock, false, false);
	else if (LockAcquire(&tag, ExclusiveLock, false, true) == LOCKACQUIRE_NOT_AVAIL)
		ereport(ERROR,
				(errcode(ERRCODE_PROGRAM_LIMIT_EXCEEDED),
				 errmsg("transaction uses too many keys of queue \"%s\"", q->name),
				 errdetail("A transaction may lock at most %d keys of a keyed queue while other transactions use its keys.",
						   MQ_TX_KEY_LOCKS),
				 errhint("Send many keys with one mq.send_batch before any other keyed call of the transaction, or split the transaction.")));
}

/* Lock sorted hashes of keys (duplicates allowed). */
static void
lock_hashes(MqQueue *q, const uint32 *hashes, int n)
{
	LOCKTAG		tag;
	KeyLockCount *count;
	bool		share_held;
	int			missing = 0;

	keys_lock_tag(&tag, q);
	if (held_by_me(&tag, ExclusiveLock))
		return;
	share_held = held_by_me(&tag, ShareLock);
	if (!share_held && n > MQ_BATCH_KEY_LOCKS)
	{
		lock_every_key_instead(q, false);
		return;
	}
	for (int i = 0; i < n; i++)
	{
		LOCKTAG		key_tag;

		key_lock_tag(&key_tag, q, hashes[i]);
		if ((i == 0 || hashes[i] != hashes[i - 1]) && !held_by_me(&key_tag, ExclusiveLock))
			missing++;
	}
	count = count_of(q);
	if (count->n + missing > MQ_TX_KEY_LOCKS)
	{
		lock_every_key_instead(q, share_held);
		return;
	}
	if (!share_held)
		(void) LockAcquire(&tag, ShareLock, false, false);
	/* in ascending order of hash, so that two batches cannot deadlock */
	for (int i = 0; i < n; i++)
	{
		LOCKTAG		key_tag;

		if (i > 0 && hashes[i] == hashes[i - 1])
			continue;
		key_lock_tag(&key_tag, q, hashes[i]);
		if (LockAcquire(&key_tag, ExclusiveLock, false, false) == LOCKACQUIRE_OK)
			count->n++;
	}
}

/* Lock one key of a keyed queue until the transaction ends. */
void
MqKeyLock(MqQueue *q, const char *key)
{
	uint32		hash = key_hash(key);

	lock_hashes(q, &hash, 1);
}

/*
 * Lock keys until the transaction ends.  Sorts and deduplicates keys in
 * place and returns how many are distinct.
 */
int
MqKeyLockMany(MqQueue *q, char **keys, int n)
{
	int			nunique = 0;
	uint32	   *hashes;

	qsort(keys, n, sizeof(char *), cstring_cmp);
	for (int i = 0; i < n; i++)
	{
		if (nunique > 0 && strcmp(keys[nunique - 1], keys[i]) == 0)
			continue;
		keys[nunique++] = keys[i];
	}
	hashes = palloc(sizeof(uint32) * Max(nunique, 1));
	for (int i = 0; i < nunique; i++)
		hashes[i] = key_hash(keys[i]);
	qsort(hashes, nunique, sizeof(uint32), uint32_cmp);
	lock_hashes(q, hashes, nunique);
	pfree(hashes);
	return nunique;
}

/* Every key of the queue until the transaction ends (mq.purge). */
void
MqKeyLockAll(MqQueue *q)
{
	LOCKTAG		tag;

	keys_lock_tag(&tag, q);
	(void) LockAcquire(&tag, ExclusiveLock, false, false);
}

static void
keylocks_xact_callback(XactEvent event, void *arg)
{
	switch (event)
	{
		case XACT_EVENT_COMMIT:
		case XACT_EVENT_PARALLEL_COMMIT:
		case XACT_EVENT_ABORT:
		case XACT_EVENT_PARALLEL_ABORT:
		case XACT_EVENT_PREPARE:
			key_lock_counts = NIL;	/* its memory goes with the transaction's */
			break;
		default:
			break;
	}
}

/* Called from _PG_init. */
void
MqKeyLocksInit(void)
{
	RegisterXactCallback(keylocks_xact_callback, NULL);
}
