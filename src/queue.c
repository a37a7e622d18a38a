/*-------------------------------------------------------------------------
 *
 * queue.c
 *	  Per-backend cache of queue definitions, queue name rules, and the
 *	  owner-rights session in which the hot paths run their statements.
 *
 * Every hot path starts with MqQueueOpen(): it finds the queue in a hash
 * table keyed by name (loading it from mq.queue on a miss), checks that the
 * caller has the right the operation needs (rights.c), switches the current
 * user to the role mq_owner (not a superuser; it may use mq's tables and
 * owns none) and connects to SPI.  Switching is what lets callers use
 * queues without any right on mq's tables, as SECURITY DEFINER would.
 *
 * While mq runs statements as the owner, search_path is pinned to
 * "pg_catalog, pg_temp" (MqOwnerBegin), for preparing and for executing:
 * the plan cache resolves operators and functions by search_path when it
 * plans, so a statement prepared under the caller's search_path could run
 * the caller's look-alike "=" with the owner's rights.  pg_temp comes last
 * so that it can never capture a name (PostgreSQL never searches it for
 * functions and operators anyway), and the statements also qualify every
 * operator.  The restricted-operation flag forbids anything that would
 * outlive the call (SET ROLE, temporary objects, cursors WITH HOLD).
 *
 * Each entry also holds the queue's kept SPI plans (see storage.c).  The
 * admin functions call mq._invalidate(), which queues a relcache
 * invalidation of mq.queue; our callback marks the whole cache stale and the
 * next MqQueueOpen() frees it.  Freeing happens there, not in the callback,
 * because the callback can fire while one of our plans is executing.
 *
 * The queue lock: every call on a queue takes a heavyweight lock on the
 * queue's rights table in AccessShareLock (MqQueueOpen, and for the admin
 * functions MqQueueCheckRight) before it uses any table or catalog row of
 * the queue, and keeps it to the end of the transaction; drop_queue takes
 * it in AccessExclusiveLock before anything else.  Hence: a call behind a
 * drop waits in a lock that statement_timeout, cancels and the deadlock
 * detector see, and then finds the queue gone (42704) or re-created (it
 * works on the new one), never a missing table; and since both sides take
 * the queue lock first, no call holds a table or row of the queue that the
 * drop needs while it waits for the drop, so the two cannot deadlock.
 * Paths that find queues by id (the release of dead consumers) take it
 * with MqQueueLockById.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/genam.h"
#include "access/htup_details.h"
#include "access/table.h"
#include "access/xact.h"
#include "catalog/indexing.h"
#include "catalog/namespace.h"
#include "catalog/pg_extension.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "optimizer/planner.h"
#include "storage/lmgr.h"
#include "utils/builtins.h"
#include "utils/fmgroids.h"
#include "utils/guc.h"
#include "utils/hsearch.h"
#include "utils/inval.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/plancache.h"
#include "utils/snapmgr.h"
#include "utils/syscache.h"

#include "queue.h"
#include "segment.h"
#include "wait.h"

PG_FUNCTION_INFO_V1(mq_check_queue_name);
PG_FUNCTION_INFO_V1(mq_invalidate);

static HTAB *queue_cache = NULL;
static bool cache_stale = false;
static Oid	mq_namespace = InvalidOid;
static Oid	catalog_relid = InvalidOid;	/* mq.queue */
static Oid	segment_relid = InvalidOid; /* mq.segment */
static uint64 segments_version = 1;	/* bumped when mq.segment changes */
static Oid	owner_id = InvalidOid;	/* the role mq_owner */
static Oid	planning_owner = InvalidOid;	/* mq_owner, for mq_planner */
static planner_hook_type prev_planner = NULL;

static PlannedStmt *mq_planner(Query *parse, const char *query_string,
							   int cursorOptions, ParamListInfo boundParams);

const char *const MqPinnedSearchPath = "pg_catalog, pg_temp";

static void
relcache_callback(Datum arg, Oid relid)
{
	if (relid == InvalidOid || relid == catalog_relid)
		cache_stale = true;
	if (relid == InvalidOid || relid == segment_relid)
		segments_version++;
}

void
MqQueueCacheInit(void)
{
	CacheRegisterRelcacheCallback(relcache_callback, (Datum) 0);
	prev_planner = planner_hook;
	planner_hook = mq_planner;
}

static void
cache_reset(void)
{
	if (queue_cache != NULL)
	{
		HASH_SEQ_STATUS status;
		MqQueue    *q;

		hash_seq_init(&status, queue_cache);
		while ((q = hash_seq_search(&status)) != NULL)
		{
			for (int i = 0; i < MQ_MAX_PLANS; i++)
				if (q->plans[i] != NULL)
					SPI_freeplan(q->plans[i]);
			if (q->offset_seqs != NULL)
				pfree(q->offset_seqs);
		}
		hash_destroy(queue_cache);
		queue_cache = NULL;
	}
	mq_namespace = catalog_relid = segment_relid = owner_id = InvalidOid;
	cache_stale = false;
}

/*
 * The installed SQL objects must be the version this library was built for:
 * after a package upgrade, a database not yet updated gets a clear error
 * instead of statements that no longer fit its tables.
 */
static void
check_extension_version(void)
{
	Relation	rel;
	SysScanDesc scan;
	ScanKeyData key;
	HeapTuple	tup;
	char	   *version = NULL;

	ScanKeyInit(&key, Anum_pg_extension_extname, BTEqualStrategyNumber,
				F_NAMEEQ, CStringGetDatum("mq"));
	rel = table_open(ExtensionRelationId, AccessShareLock);
	scan = systable_beginscan(rel, ExtensionNameIndexId, true, NULL, 1, &key);
	tup = systable_getnext(scan);
	if (HeapTupleIsValid(tup))
	{
		bool		isnull;
		Datum		d = heap_getattr(tup, Anum_pg_extension_extversion,
									 RelationGetDescr(rel), &isnull);

		if (!isnull)
			version = TextDatumGetCString(d);
	}
	systable_endscan(scan);
	table_close(rel, AccessShareLock);

	if (version == NULL)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("extension \"mq\" is not installed in this database"),
				 errhint("Run CREATE EXTENSION mq.")));
	if (strcmp(version, MQ_VERSION) != 0)
		ereport(ERROR,
				(errcode(ERRCODE_OBJECT_NOT_IN_PREREQUISITE_STATE),
				 errmsg("extension \"mq\" is at version %s, but its library is version %s",
						version, MQ_VERSION),
				 errhint("Run ALTER EXTENSION mq UPDATE.")));
}

static void
cache_ensure(void)
{
	HASHCTL		ctl;

	if (cache_stale)
		cache_reset();
	if (queue_cache != NULL)
		return;

	check_extension_version();

	mq_namespace = get_namespace_oid("mq", true);
	if (!OidIsValid(mq_namespace))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_SCHEMA),
				 errmsg("schema \"mq\" does not exist"),
				 errhint("Run CREATE EXTENSION mq.")));
	catalog_relid = get_relname_relid("queue", mq_namespace);
	segment_relid = get_relname_relid("segment", mq_namespace);
	owner_id = get_role_oid("mq_owner", false);

	ctl.keysize = NAMEDATALEN;
	ctl.entrysize = sizeof(MqQueue);
	ctl.hcxt = CacheMemoryContext;
	queue_cache = hash_create("mq queue cache", 64, &ctl,
							  HASH_ELEM | HASH_STRINGS | HASH_CONTEXT);
}

/*
 * Raise the proper error unless name is a valid queue name.  The rule keeps
 * every derived name (NOTIFY channels, log lines) within identifier limits
 * and free of quoting surprises.
 */
void
MqCheckQueueName(const char *name)
{
	size_t		len = strlen(name);

	if (len == 0)
		ereport(ERROR,
				(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
				 errmsg("queue name must not be empty")));
	if (len > MQ_QUEUE_NAME_MAX)
		ereport(ERROR,
				(errcode(ERRCODE_NAME_TOO_LONG),
				 errmsg("queue name \"%s\" is too long", name),
				 errdetail("Queue names are at most %d bytes; this one has %zu.",
						   MQ_QUEUE_NAME_MAX, len)));
	for (size_t i = 0; i < len; i++)
	{
		char		c = name[i];
		bool		alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
			(c >= '0' && c <= '9');

		if (!alnum && (i == 0 || (c != '_' && c != '.' && c != '-')))
			ereport(ERROR,
					(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
					 errmsg("invalid queue name \"%s\"", name),
					 errdetail("Queue names consist of ASCII letters, digits, \"_\", \".\" and \"-\", and start with a letter or digit.")));
	}
}

/* The role mq_owner, whose rights mq's statements run with. */
Oid
MqOwner(void)
{
	cache_ensure();
	return owner_id;
}

/*
 * mq's own statements are planned without sequential and bitmap scans.
 * Their plans are kept generic plans (MqQueuePlan), made when a segment is
 * empty: a new queue, or just after maintenance emptied it with TRUNCATE,
 * when the planner assumes a table of ten pages.  With those estimates it
 * chose a bitmap scan and a sort for the claim's range and a sequential
 * scan for its UPDATE, and kept them while the segment grew to millions of
 * rows (bench shape 5: 9 ms a claim, consumers 22 times slower).  Every
 * statement of mq is written for an index, so the index plan is the one it
 * needs whatever the statistics say.  mq's statements are told apart by the
 * user and the restricted security context of MqOwnerBegin: mq_owner owns
 * no table or view whose maintenance could run as it.  JIT is off for them
 * too: a statement that has to scan a table (a release of claims, found by
 * their unindexed stamp) costs the 1e10 of a disabled scan, far above
 * jit_above_cost, and compiling it took 100 ms each, for a few rows.
 */
static PlannedStmt *
mq_planner(Query *parse, const char *query_string, int cursorOptions,
		   ParamListInfo boundParams)
{
	int			nestlevel = 0;
	PlannedStmt *result;

	if (OidIsValid(planning_owner) && GetUserId() == planning_owner &&
		InSecurityRestrictedOperation())
	{
		nestlevel = NewGUCNestLevel();
		(void) set_config_option("enable_seqscan", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		(void) set_config_option("enable_bitmapscan", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
		(void) set_config_option("jit", "off", PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	}
	result = prev_planner ?
		prev_planner(parse, query_string, cursorOptions, boundParams) :
		standard_planner(parse, query_string, cursorOptions, boundParams);
	/* on error, the (sub)transaction's abort restores them */
	if (nestlevel > 0)
		AtEOXact_GUC(true, nestlevel);
	return result;
}

/*
 * Pin search_path.  Before PostgreSQL 16 restoring the GUC (AtEOXact_GUC)
 * walks every setting: with the set, 7 % of the instructions of a read +
 * ack.  There an override of the search path does the same cheaply, with
 * pg_catalog alone: MqPinnedSearchPath puts pg_catalog first, so pg_temp
 * can only add names, and mq names no object it expects there.  From 16
 * on the restore is cheap, and 17 has no override stack; there, when
 * search_path already is the pinned one (a call from one of mq's own
 * functions), no GUC level is pushed.
 */
static void
pin_search_path(MqSession *session)
{
	session->save_nestlevel = 0;
#if PG_VERSION_NUM < 160000
	{
		OverrideSearchPath path = {.schemas = NIL, .addCatalog = true, .addTemp = false};

		PushOverrideSearchPath(&path);
	}
#else
	if (strcmp(namespace_search_path, MqPinnedSearchPath) != 0)
	{
		session->save_nestlevel = NewGUCNestLevel();
		(void) set_config_option("search_path", MqPinnedSearchPath,
								 PGC_USERSET, PGC_S_SESSION,
								 GUC_ACTION_SAVE, true, 0, false);
	}
#endif
}

/* Undo pin_search_path; an error's (sub)transaction abort does it instead. */
static void
unpin_search_path(MqSession *session)
{
#if PG_VERSION_NUM < 160000
	PopOverrideSearchPath();
#else
	if (session->save_nestlevel > 0)
		AtEOXact_GUC(true, session->save_nestlevel);
#endif
}

/*
 * Switch to mq_owner, pin search_path and connect to SPI.
 * Pair with MqOwnerEnd(); on error, transaction abort restores the user,
 * search_path and SPI.
 */
void
MqOwnerBegin(MqSession *session)
{
	Oid			owner = MqOwner();

	planning_owner = owner;
	GetUserIdAndSecContext(&session->save_userid, &session->save_sec_context);
	SetUserIdAndSecContext(owner, session->save_sec_context |
						   SECURITY_LOCAL_USERID_CHANGE |
						   SECURITY_RESTRICTED_OPERATION);
	pin_search_path(session);
	if (SPI_connect() != SPI_OK_CONNECT)
		elog(ERROR, "SPI_connect failed");
}

void
MqOwnerEnd(MqSession *session)
{
	if (SPI_finish() != SPI_OK_FINISH)
		elog(ERROR, "SPI_finish failed");
	unpin_search_path(session);
	SetUserIdAndSecContext(session->save_userid, session->save_sec_context);
}

void
MqQueueClose(MqSession *session)
{
	MqOwnerEnd(session);
}

static Interval *
interval_col(HeapTuple tup, TupleDesc desc, int col)
{
	bool		isnull;

	return DatumGetIntervalP(SPI_getbinval(tup, desc, col, &isnull));
}

/*
 * Read one queue's row from mq.queue; we are connected to SPI as owner.
 * With the latest snapshot, for the reason MqSegmentsLoad gives: the entry
 * outlives this transaction.
 */
static bool
load_queue(const char *key, MqQueue *q)
{
	Oid			argtypes[1] = {TEXTOID};
	Datum		values[1] = {CStringGetTextDatum(key)};
	HeapTuple	tup;
	TupleDesc	desc;
	bool		isnull;
	int			ret;

	PushActiveSnapshot(GetLatestSnapshot());
	ret = SPI_execute_with_args(
								"SELECT queue_id, visibility_timeout, max_attempts,"
								" COALESCE(dead_letter_queue_id, 0),"
								" retry_delay, retry_backoff, retry_delay_max,"
								" ordering OPERATOR(pg_catalog.=) 'key',"
								" COALESCE(partitions, 0), COALESCE(retention, '0'), notify,"
								" COALESCE(rate_limit, 0), COALESCE(rate_limit_burst, 0),"
								" COALESCE(session_timeout, '0')"
								" FROM mq.queue WHERE queue_name OPERATOR(pg_catalog.=) $1",
								1, argtypes, values, NULL, true, 1);
	PopActiveSnapshot();
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read mq.queue: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		return false;

	tup = SPI_tuptable->vals[0];
	desc = SPI_tuptable->tupdesc;
	memset(q, 0, sizeof(MqQueue));
	strlcpy(q->name, key, NAMEDATALEN);
	q->queue_id = DatumGetInt64(SPI_getbinval(tup, desc, 1, &isnull));
	q->visibility_timeout = *interval_col(tup, desc, 2);
	q->max_attempts = DatumGetInt32(SPI_getbinval(tup, desc, 3, &isnull));
	q->dlq_id = DatumGetInt64(SPI_getbinval(tup, desc, 4, &isnull));
	q->retry_delay = *interval_col(tup, desc, 5);
	q->retry_backoff = DatumGetFloat8(SPI_getbinval(tup, desc, 6, &isnull));
	q->retry_delay_max = *interval_col(tup, desc, 7);
	q->keyed = DatumGetBool(SPI_getbinval(tup, desc, 8, &isnull));
	q->partitions = DatumGetInt32(SPI_getbinval(tup, desc, 9, &isnull));
	q->retention = *interval_col(tup, desc, 10);
	q->notify = DatumGetBool(SPI_getbinval(tup, desc, 11, &isnull));
	q->rate_limit = DatumGetFloat8(SPI_getbinval(tup, desc, 12, &isnull));
	q->rate_burst = DatumGetInt32(SPI_getbinval(tup, desc, 13, &isnull));
	q->session_timeout = *interval_col(tup, desc, 14);
	snprintf(q->channel, NAMEDATALEN, "mq.%s", key);
	q->rights_relid = MqQueueRelid(q, psprintf("%c_" INT64_FORMAT "_rights", q->partitions > 0 ? 'p' : 'q',
											   q->queue_id));
	if (q->partitions > 0)
	{
		q->offset_seqs = MemoryContextAlloc(CacheMemoryContext,
											sizeof(Oid) * q->partitions);
		for (int p = 0; p < q->partitions; p++)
			q->offset_seqs[p] = MqQueueRelid(q, psprintf("p_" INT64_FORMAT "_o%d", q->queue_id, p));
	}
	else
	{
		q->acked_seq = MqQueueRelid(q, psprintf("q_" INT64_FORMAT "_acked", q->queue_id));
		q->msg_seq = MqQueueRelid(q, psprintf("q_" INT64_FORMAT "_seq", q->queue_id));
		q->delayed_relid = MqQueueRelid(q, psprintf("q_" INT64_FORMAT "_d", q->queue_id));
	}
	q->distributed = MqCitusDistributed(q->partitions > 0 ?
										MqQueueRelid(q, psprintf("p_" INT64_FORMAT, q->queue_id)) :
										MqQueueRelid(q, psprintf("q_" INT64_FORMAT "_0", q->queue_id)));
	/* the version read before: an invalidation processed while loading reloads */
	q->segments_version = segments_version;
	MqSegmentsLoad(q);
	return true;
}

/*
 * The oid of one of the queue's tables or sequences.  One that is missing
 * means the queue was dropped while this call was on its way (a race with
 * drop_queue), which the caller sees as no such queue.
 */
Oid
MqQueueRelid(MqQueue *q, const char *relname)
{
	Oid			relid = get_relname_relid(relname, mq_namespace);

	if (!OidIsValid(relid))
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("queue \"%s\" does not exist", q->name),
				 errdetail("It was dropped while this statement ran.")));
	return relid;
}

static const char *const right_names[] = {"send to", "consume from", "administer", "monitor"};

/*
 * The cache entry of a queue, loading it on a miss; NULL when there is no
 * such queue.  Valid until the next lookup.
 */
static MqQueue *
lookup(const char *queue_name)
{
	char		key[NAMEDATALEN];
	MqQueue    *q;
	MqQueue		loaded;
	MqSession	session;
	bool		found;

	cache_ensure();
	if (strlen(queue_name) > MQ_QUEUE_NAME_MAX)
		return NULL;
	memset(key, 0, sizeof(key));
	strlcpy(key, queue_name, sizeof(key));

	q = hash_search(queue_cache, key, HASH_FIND, NULL);
	if (q != NULL)
	{
		if (q->segments_version != segments_version)
		{
			MqOwnerBegin(&session);
			MqQueueRefreshSegments(q);
			MqOwnerEnd(&session);
		}
		return q;
	}
	MqOwnerBegin(&session);
	found = load_queue(key, &loaded);
	MqOwnerEnd(&session);
	if (!found)
		return NULL;
	/* loading may have run invalidations; only a fresh table is safe */
	if (cache_stale)
	{
		/* entries may still be in use by nobody: reset is safe here */
		cache_reset();
		cache_ensure();
	}
	q = hash_search(queue_cache, key, HASH_ENTER, NULL);
	memcpy(q, &loaded, sizeof(MqQueue));
	return q;
}

/*
 * The cache entry of a queue, as lookup(), with the queue's lock taken in
 * mode (see "The queue lock" in the banner): the entry is the one of the
 * queue that exists once the lock is held, or NULL.
 */
static MqQueue *
lookup_locked(const char *queue_name, LOCKMODE mode)
{
	for (;;)
	{
		MqQueue    *q = lookup(queue_name);
		Oid			lock_relid;

		if (q == NULL)
			return NULL;
		lock_relid = q->rights_relid;
		LockRelationOid(lock_relid, mode);

		/*
		 * Taking the lock processed the invalidations of a drop (or a drop
		 * and create) that committed meanwhile: look again.
		 */
		q = lookup(queue_name);
		if (q == NULL || q->rights_relid == lock_relid)
			return q;
		UnlockRelationOid(lock_relid, mode);
	}
}

/*
 * Take the lock of the queue with this id (AccessShareLock); false, with
 * nothing locked, when there is no such queue once the lock is held (a
 * drop committed meanwhile).  For paths that find queues by id.
 */
bool
MqQueueLockById(int64 queue_id)
{
	Oid			relid = MqQueueRightsRelid(queue_id);

	if (!OidIsValid(relid))
		return false;
	LockRelationOid(relid, AccessShareLock);
	if (SearchSysCacheExists1(RELOID, ObjectIdGetDatum(relid)))
		return true;
	UnlockRelationOid(relid, AccessShareLock);
	return false;
}

/*
 * Take the locks of the queues whose ids are column 1 (bigint) of the
 * last SPI result, in its order (MqQueueLockById); returns the ids of those
 * that still exist, as a bigint[] Datum.  Connected to SPI.
 */
Datum
MqQueueLockIds(void)
{
	uint64		n = SPI_processed;
	SPITupleTable *tuptable = SPI_tuptable;
	Datum	   *ids = palloc(sizeof(Datum) * Max(n, 1));
	int			nlocked = 0;

	for (uint64 i = 0; i < n; i++)
	{
		bool		isnull;
		Datum		id = SPI_getbinval(tuptable->vals[i], tuptable->tupdesc, 1, &isnull);

		if (MqQueueLockById(DatumGetInt64(id)))
			ids[nlocked++] = id;
	}
	return PointerGetDatum(construct_array_builtin(ids, nlocked, INT8OID));
}

/*
 * Reload the queue's segments if mq.segment changed since they were read;
 * connected to SPI as owner.  Taking a lock on a table processes pending
 * invalidations, so after locking a segment this sees any change that
 * committed before (MqSegmentsLoad reads with the latest snapshot).  The
 * version is the one from before the load: an invalidation that the load
 * itself processes makes the next call load again.
 */
void
MqQueueRefreshSegments(MqQueue *q)
{
	if (q->segments_version != segments_version)
	{
		uint64		version = segments_version;

		MqSegmentsLoad(q);
		q->segments_version = version;
	}
}

static void
no_such_queue(const char *queue_name)
{
	ereport(ERROR,
			(errcode(ERRCODE_UNDEFINED_OBJECT),
			 errmsg("queue \"%s\" does not exist", queue_name)));
}

static void
permission_denied(const char *queue_name, MqRight right)
{
	ereport(ERROR,
			(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
			 errmsg("permission denied for queue \"%s\"", queue_name),
			 errdetail("Only roles granted the right to %s the queue may do this.",
					   right_names[right]),
			 right == MQ_RIGHT_MONITOR ?
			 errhint("Grant the role mq_monitor, or use mq.grant to grant 'consume'.") :
			 errhint("Use mq.grant, or grant one of the roles mq_producer, mq_consumer, mq_admin.")));
}

/*
 * A consumer group's rows of a partitioned queue reference its catalog row
 * (foreign keys), which a REPEATABLE READ or SERIALIZABLE transaction does
 * not see when the queue was created (or dropped and created again) after
 * its snapshot: for it there is no such queue yet.
 */
static void
require_in_snapshot(MqQueue *q, MqRight right)
{
	Oid			argtypes[1] = {INT8OID};
	Datum		values[1] = {Int64GetDatum(q->queue_id)};
	MqSession	session;
	int			ret;

	if (q->partitions == 0 || right != MQ_RIGHT_CONSUME || !IsolationUsesXactSnapshot())
		return;
	MqOwnerBegin(&session);
	PushActiveSnapshot(GetTransactionSnapshot());
	ret = SPI_execute_with_args("SELECT FROM mq.queue WHERE queue_id OPERATOR(pg_catalog.=) $1",
								1, argtypes, values, NULL, true, 1);
	PopActiveSnapshot();
	if (ret != SPI_OK_SELECT)
		elog(ERROR, "could not read mq.queue: %s", SPI_result_code_string(ret));
	if (SPI_processed == 0)
		ereport(ERROR,
				(errcode(ERRCODE_UNDEFINED_OBJECT),
				 errmsg("queue \"%s\" does not exist", q->name),
				 errdetail("It was created after this transaction's snapshot was taken."),
				 errhint("Start a new transaction, or use READ COMMITTED.")));
	MqOwnerEnd(&session);
}

/*
 * Find a queue, check that the caller (the current user) may use it for
 * right, switch to the owner and connect to SPI.  Raises 42704 when there
 * is no such queue (for a consumer group in a REPEATABLE READ or
 * SERIALIZABLE transaction, also one created after its snapshot) and 42501
 * when the caller lacks the right.  Pair with
 * MqQueueClose(); on error, transaction abort restores the user,
 * search_path and SPI state.  The entry is valid until the next open.
 */
MqQueue *
MqQueueOpen(text *queue_name, MqSession *session, MqRight right)
{
	char	   *name = text_to_cstring(queue_name);
	MqQueue    *q = lookup_locked(name, AccessShareLock);

	if (q == NULL)
		no_such_queue(name);
	if (!MqHasRight(GetUserId(), q->rights_relid, right))
		permission_denied(name, right);
	require_in_snapshot(q, right);
	MqOwnerBegin(session);
	return q;
}

/* As MqQueueOpen, but NULL when there is no such queue or no right. */
MqQueue *
MqQueueOpenIfAllowed(const char *queue_name, MqSession *session, MqRight right)
{
	MqQueue    *q = lookup_locked(queue_name, AccessShareLock);

	if (q == NULL || !MqHasRight(GetUserId(), q->rights_relid, right))
		return NULL;
	MqOwnerBegin(session);
	return q;
}

/*
 * Take the queue's lock, then raise 42501 when the queue exists and the
 * caller lacks right; returns whether the queue exists.  With for_drop,
 * the lock is AccessExclusiveLock: taken after the right is checked (so
 * that nobody without it can queue the queue's users behind a wait of
 * his), under ShareUpdateExclusiveLock, which lets calls on the queue go
 * on but makes a second drop wait for the first (two drops upgrading a
 * shared lock would deadlock).  Before waiting for it, a drop ends the
 * waits of the queue's waiting readers (MqWaitDropBegin).
 */
bool
MqQueueCheckRight(const char *queue_name, MqRight right, bool for_drop)
{
	MqQueue    *q = lookup_locked(queue_name, for_drop ? ShareUpdateExclusiveLock : AccessShareLock);

	if (q == NULL)
		return false;
	if (!MqHasRight(GetUserId(), q->rights_relid, right))
		permission_denied(queue_name, right);
	require_in_snapshot(q, right);
	if (for_drop)
	{
		Oid			lock_relid = q->rights_relid;

		MqWaitDropBegin(q->queue_id);
		PG_TRY();
		{
			LockRelationOid(lock_relid, AccessExclusiveLock);
		}
		PG_FINALLY();
		{
			/* a subtransaction's cancelled drop too */
			MqWaitDropEnd();
		}
		PG_END_TRY();
	}
	return true;
}

/* An interval in seconds; months count as 30 days, as interval comparison does. */
double
MqIntervalSeconds(const Interval *iv)
{
	return iv->time / (double) USECS_PER_SEC +
		(iv->day + (double) iv->month * DAYS_PER_MONTH) * SECS_PER_DAY;
}

void
MqRequireWorkQueue(MqQueue *q)
{
	if (q->partitions > 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("queue \"%s\" is a partitioned queue", q->name),
				 errhint("Read partitioned queues with mq.poll.")));
}

void
MqRequirePartitioned(MqQueue *q)
{
	if (q->partitions == 0)
		ereport(ERROR,
				(errcode(ERRCODE_WRONG_OBJECT_TYPE),
				 errmsg("queue \"%s\" is not a partitioned queue", q->name),
				 errhint("Read work queues with mq.read.")));
}

/*
 * The kept plan in slot, prepared on first use.  Plans are forced generic:
 * every statement of mq is shaped to plan well without knowing its
 * parameters, and re-planning per call would cost more than the statement.
 */
SPIPlanPtr
MqQueuePlan(MqQueue *q, int slot, const char *sql, int nargs, const Oid *argtypes)
{
	return MqQueuePlanWith(q, slot, sql, nargs, argtypes, CURSOR_OPT_GENERIC_PLAN);
}

/*
 * The same with the plan cache's cursor options: CURSOR_OPT_CUSTOM_PLAN for
 * a statement Citus can only plan with its parameters' values (storage.c).
 */
SPIPlanPtr
MqQueuePlanWith(MqQueue *q, int slot, const char *sql, int nargs, const Oid *argtypes,
				int cursor_options)
{
	SPIPlanPtr	plan;

	Assert(slot >= 0 && slot < MQ_MAX_PLANS);
	if (q->plans[slot] != NULL)
		return q->plans[slot];
	plan = SPI_prepare_cursor(sql, nargs, (Oid *) argtypes, cursor_options);
	if (plan == NULL)
		elog(ERROR, "could not prepare \"%s\": %s", sql,
			 SPI_result_code_string(SPI_result));
	if (SPI_keepplan(plan) != 0)
		elog(ERROR, "could not keep plan \"%s\"", sql);
	q->plans[slot] = plan;
	return plan;
}

/*
 * Take the locks of a kept plan's statement now, so that a snapshot taken
 * next is not older than them.  Maintenance empties segments with TRUNCATE,
 * which is not MVCC-safe: a statement that took its snapshot, then waited
 * for that lock, would find the segment empty and the rows moved out of it
 * (to the delayed table) not yet visible, and decide wrongly (a keyed send
 * not blocked behind its key's head: relocate_snapshot.spec).  PostgreSQL's
 * executor locks before it takes a snapshot for the same reason.  The
 * generic plan (MqQueuePlan forces it) is the one execution uses, so these
 * are exactly its locks; execution finds them held.
 */
void
MqQueueLockPlan(SPIPlanPtr plan)
{
	CachedPlan *cplan = SPI_plan_get_cached_plan(plan);

	if (cplan == NULL)
		elog(ERROR, "a kept plan of a single statement was expected");
	ReleaseCachedPlan(cplan, CurrentResourceOwner);
}

/* The latest snapshot for running a kept plan: taken after its locks. */
Snapshot
MqQueueLatestSnapshot(SPIPlanPtr plan)
{
	MqQueueLockPlan(plan);
	return GetLatestSnapshot();
}

/*
 * The same for a plan whose only relation is relid, taken in lockmode: a
 * lock instead of a look-up in the plan cache, which costs a read + ack 2 %
 * more instructions (the plan's own look-up then finds the lock held).
 */
Snapshot
MqQueueLatestSnapshotOf(Oid relid, LOCKMODE lockmode)
{
	LockRelationOid(relid, lockmode);
	return GetLatestSnapshot();
}

/* Execute a kept plan; any result but `expected` is a bug, not user error. */
uint64
MqQueueRun(MqQueue *q, SPIPlanPtr plan, Datum *values, const char *nulls, int expected)
{
	int			ret = SPI_execute_plan(plan, values, nulls, false, 0);

	if (ret != expected)
		elog(ERROR, "statement on queue \"%s\" failed: %s",
			 q->name, SPI_result_code_string(ret));
	return SPI_processed;
}

/*
 * mq._check_queue_name(queue_name text) RETURNS void
 *	  Raises 22004 for NULL, 22023 for an empty name or bad characters, 42622
 *	  for more than MQ_QUEUE_NAME_MAX bytes.
 */
Datum
mq_check_queue_name(PG_FUNCTION_ARGS)
{
	if (PG_ARGISNULL(0))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("queue_name must not be NULL")));
	MqCheckQueueName(text_to_cstring(PG_GETARG_TEXT_PP(0)));
	PG_RETURN_VOID();
}

/*
 * mq._invalidate() RETURNS void
 *	  Queues a relcache invalidation of mq.queue: at commit every backend
 *	  drops its cached queues and plans (this backend at the next command).
 */
Datum
mq_invalidate(PG_FUNCTION_ARGS)
{
	Oid			nsp = get_namespace_oid("mq", false);
	Oid			relid = get_relname_relid("queue", nsp);

	if (!OidIsValid(relid))
		elog(ERROR, "table mq.queue is missing");
	CacheInvalidateRelcacheByRelid(relid);
	PG_RETURN_VOID();
}
