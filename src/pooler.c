/*-------------------------------------------------------------------------
 *
 * pooler.c
 *	  mq.pool_mode: the server cannot see a pooler, so the operator says
 *	  when one multiplexes clients over this session.
 *
 * Behind PgBouncer in transaction mode a server session serves one client
 * per transaction, and what is bound to the session outlives the client
 * that set it up (docs/poolers.md).  With mq.pool_mode = 'transaction'
 * (set where the pool connects: PgBouncer's connect_query, or ALTER ROLE
 * ... SET for the roles that connect through it) the functions that bind
 * state to the session refuse with 0A000 instead of working wrongly:
 * mq.register_consumer (whichever client used the session last would be
 * named, kept alive and have its claims released with the server
 * session) and mq.listen (notifications reach whichever client holds the
 * session when they arrive); an autocommit mq.poll moves no position, as
 * with mq.autocommit_positions off, since its answer may never reach a
 * client that the session outlives; and claims are not released when the
 * session ends, as with mq.release_on_session_end off, since the server
 * session's end says nothing about its clients (consumer.c).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "utils/guc.h"

#include "pooler.h"

typedef enum PoolMode
{
	POOL_SESSION,				/* a client has the server session to itself */
	POOL_TRANSACTION			/* clients share it, one per transaction */
} PoolMode;

static const struct config_enum_entry pool_modes[] = {
	{"session", POOL_SESSION, false},
	{"transaction", POOL_TRANSACTION, false},
	{NULL, 0, false}
};

static int	pool_mode = POOL_SESSION;

/* Called from _PG_init. */
void
MqPoolerInit(void)
{
	DefineCustomEnumVariable("mq.pool_mode",
							 "How clients reach this session: session (directly, or a session pool) or transaction (a transaction pool such as PgBouncer's pool_mode = transaction).",
							 "transaction: mq.register_consumer and mq.listen refuse, an autocommit mq.poll moves no position, and claims are not released at session end.",
							 &pool_mode, POOL_SESSION, pool_modes, PGC_USERSET, 0,
							 NULL, NULL, NULL);
}

/* Whether clients share this session one transaction at a time. */
bool
MqTransactionPooled(void)
{
	return pool_mode == POOL_TRANSACTION;
}

/*
 * Raise 0A000 when this session is transaction-pooled: what (a function
 * name) binds state to the session; instead says what to do.
 */
void
MqRequireOwnSession(const char *what, const char *instead)
{
	if (pool_mode == POOL_TRANSACTION)
		ereport(ERROR,
				(errcode(ERRCODE_FEATURE_NOT_SUPPORTED),
				 errmsg("%s is not supported behind a transaction pooler", what),
				 errdetail("mq.pool_mode is \"transaction\": clients share this server session, "
						   "and %s would bind to the session, not to the client.", what),
				 errhint("%s", instead)));
}
