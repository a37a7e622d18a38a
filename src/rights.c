/*-------------------------------------------------------------------------
 *
 * rights.c
 *	  Who may do what with a queue: the four roles, per-queue grants, and
 *	  the checked entry points of the administrative functions.
 *
 * A caller may send to, consume from or administer a queue when it has
 * the privileges of the matching role (mq_producer, mq_consumer, mq_admin:
 * a right on every queue), or a per-queue grant.  Per-queue grants are
 * table privileges on the queue's empty table mq.q_<id>_rights (or
 * p_<id>_rights), granted by mq.grant and revoked by mq.revoke, so that
 * PostgreSQL keeps them as it keeps its own: matching with role
 * membership, renames, dumps, and no DROP ROLE of a grantee.  They stand
 * for: REFERENCES = send, SELECT = consume, TRUNCATE = admin (which
 * includes both); none of them gives access to any message.
 *
 * The fourth right, monitor, reads a queue's metrics and consumer groups
 * and nothing else: the role mq_monitor has it on every queue (it is for
 * dashboards and exporters, which watch every queue), and whoever may
 * consume from a queue has it on that queue, as mq.metrics always allowed.
 * It has no per-queue grant of its own.
 *
 * The checks use the caller's identity, before mq switches to mq_owner, so EXECUTE on the public functions is granted to PUBLIC and
 * the decision is made here.  Hot paths check in MqQueueOpen(); the
 * PL/pgSQL administrative functions are reached through mq_checked(),
 * which checks and then calls the SECURITY DEFINER body mq._<name> (owned
 * by mq_owner, which nobody else may execute).  A right checked at open
 * applies to that call; a revoke takes effect at the next call, or the
 * next round of a waiting read, after it commits.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "access/htup_details.h"
#include "catalog/namespace.h"
#include "catalog/pg_proc.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"
#include "utils/syscache.h"

#include "queue.h"

PG_FUNCTION_INFO_V1(mq_checked);
PG_FUNCTION_INFO_V1(mq_can);

/* the role that has a right on every queue */
static const char *const role_of_right[] = {"mq_producer", "mq_consumer", "mq_admin", "mq_monitor"};

/* privileges on the rights table that carry a right: admin implies both */
static AclMode
mode_of_right(MqRight right)
{
	switch (right)
	{
		case MQ_RIGHT_SEND:
			return ACL_REFERENCES | ACL_TRUNCATE;
		case MQ_RIGHT_CONSUME:
			return ACL_SELECT | ACL_TRUNCATE;
		case MQ_RIGHT_ADMIN:
			return ACL_TRUNCATE;
		case MQ_RIGHT_MONITOR:
			return ACL_SELECT | ACL_TRUNCATE;	/* as consume (no grant of its own) */
	}
	return 0;					/* keep compiler quiet */
}

static bool
has_role(Oid roleid, const char *rolname)
{
	Oid			role = get_role_oid(rolname, true);

	return OidIsValid(role) && has_privs_of_role(roleid, role);
}

/* Whether roleid has the privileges of the role named rolname. */
bool
MqHasRole(Oid roleid, const char *rolname)
{
	return has_role(roleid, rolname);
}

/* Whether the current user may use the queue with this id for right. */
bool
MqQueueIdHasRight(int64 queue_id, MqRight right)
{
	return MqHasRight(GetUserId(), MqQueueRightsRelid(queue_id), right);
}

/*
 * Whether roleid may use the queue whose rights table is rights_relid; a
 * table dropped meanwhile (a queue dropped while the views list it) gives
 * no right.
 */
bool
MqHasRight(Oid roleid, Oid rights_relid, MqRight right)
{
	bool		missing = false;

	/* mq's own functions, running as mq_owner, may do anything */
	if (roleid == MqOwner() || has_role(roleid, role_of_right[right]))
		return true;
	/* whoever may consume from every queue may watch every queue */
	if (right == MQ_RIGHT_MONITOR && has_role(roleid, role_of_right[MQ_RIGHT_CONSUME]))
		return true;
	return OidIsValid(rights_relid) &&
		pg_class_aclmask_ext(rights_relid, roleid, mode_of_right(right), ACLMASK_ANY,
							 &missing) != 0 && !missing;
}

/* Raise 42501 unless the caller has the privileges of rolname. */
void
MqRequireRole(const char *rolname, const char *what)
{
	if (!has_role(GetUserId(), rolname))
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to %s", what),
				 errdetail("Only roles with the privileges of role \"%s\" may do this.",
						   rolname)));
}

/*
 * Raise 42501 unless the caller may consume from some queue: the role
 * mq_consumer, or a per-queue grant (consumer registration, which is not
 * about one queue, needs this much).
 */
void
MqRequireSomeConsumeRight(const char *what)
{
	Oid			user = GetUserId();
	MqSession	session;
	bool		found = false;

	if (has_role(user, role_of_right[MQ_RIGHT_CONSUME]))
		return;
	MqOwnerBegin(&session);
	if (SPI_execute("SELECT c.oid FROM pg_catalog.pg_class c"
					" WHERE c.relnamespace OPERATOR(pg_catalog.=) 'mq'::pg_catalog.regnamespace"
					" AND pg_catalog.right(c.relname, 7) OPERATOR(pg_catalog.=) '_rights'"
					" AND c.relacl IS NOT NULL", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read the rights of queues");
	for (uint64 i = 0; i < SPI_processed && !found; i++)
	{
		bool		isnull;
		Datum		relid = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

		found = MqHasRight(user, DatumGetObjectId(relid), MQ_RIGHT_CONSUME);
	}
	MqOwnerEnd(&session);
	if (!found)
		ereport(ERROR,
				(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
				 errmsg("permission denied to %s", what),
				 errdetail("Only roles that may consume from some queue may do this.")));
}

static MqRight
right_arg(text *t)
{
	char	   *s = text_to_cstring(t);

	if (strcmp(s, "send") == 0)
		return MQ_RIGHT_SEND;
	if (strcmp(s, "consume") == 0)
		return MQ_RIGHT_CONSUME;
	if (strcmp(s, "admin") == 0)
		return MQ_RIGHT_ADMIN;
	if (strcmp(s, "monitor") == 0)
		return MQ_RIGHT_MONITOR;
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid privilege \"%s\"", s),
			 errhint("Use 'send', 'consume' or 'admin'.")));
	return MQ_RIGHT_ADMIN;		/* keep compiler quiet */
}

/* The rights table of queue_id, InvalidOid when the queue is gone. */
Oid
MqQueueRightsRelid(int64 queue_id)
{
	Oid			nsp = get_namespace_oid("mq", false);
	Oid			relid = get_relname_relid(psprintf("q_" INT64_FORMAT "_rights", queue_id), nsp);

	if (!OidIsValid(relid))
		relid = get_relname_relid(psprintf("p_" INT64_FORMAT "_rights", queue_id), nsp);
	return relid;
}

/*
 * mq._can(queue_id bigint, privilege text) RETURNS boolean
 *	  Whether the current user may use the queue for privilege ('send',
 *	  'consume', 'admin', 'monitor', or 'any': send or monitor, which
 *	  consume includes).  The views filter their rows with it;
 *	  functions in a view run as the view's user.  NULL queue_id: false.
 */
Datum
mq_can(PG_FUNCTION_ARGS)
{
	Oid			user = GetUserId();
	Oid			rights;

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("privilege must not be NULL")));
	if (PG_ARGISNULL(0))
		PG_RETURN_BOOL(false);
	rights = MqQueueRightsRelid(PG_GETARG_INT64(0));
	if (strcmp(text_to_cstring(PG_GETARG_TEXT_PP(1)), "any") == 0)
		PG_RETURN_BOOL(MqHasRight(user, rights, MQ_RIGHT_SEND) ||
					   MqHasRight(user, rights, MQ_RIGHT_MONITOR));
	PG_RETURN_BOOL(MqHasRight(user, rights, right_arg(PG_GETARG_TEXT_PP(1))));
}

/*
 * The administrative functions reached through mq_checked: what each needs.
 * A queue right is checked on the queue named by the first argument; a
 * role, where no queue exists yet or every queue is concerned.
 */
typedef struct CheckedFunction
{
	const char *name;			/* public name in schema mq */
	bool		by_queue;		/* a right on queue $1, else the role */
	MqRight		right;
	bool		drop;			/* drop_queue: the queue lock exclusively */
} CheckedFunction;

static const CheckedFunction checked_functions[] = {
	{"create_queue", false, MQ_RIGHT_ADMIN},
	{"maintain", false, MQ_RIGHT_ADMIN},
	{"alter_queue", true, MQ_RIGHT_ADMIN},
	{"drop_queue", true, MQ_RIGHT_ADMIN, true},
	{"purge", true, MQ_RIGHT_ADMIN},
	{"grant", true, MQ_RIGHT_ADMIN},
	{"revoke", true, MQ_RIGHT_ADMIN},
	{"heartbeat", true, MQ_RIGHT_CONSUME},
	{"seek", true, MQ_RIGHT_CONSUME},
	{"leave", true, MQ_RIGHT_CONSUME},
	{"dead_letters", true, MQ_RIGHT_CONSUME},
};

/* Per call site: which entry, and the body's FmgrInfo. */
typedef struct CheckedCache
{
	const CheckedFunction *entry;
	FmgrInfo	body;
} CheckedCache;

static CheckedCache *
checked_cache(FunctionCallInfo fcinfo)
{
	FmgrInfo   *flinfo = fcinfo->flinfo;
	CheckedCache *cache = flinfo->fn_extra;
	char	   *name;
	Oid		   *argtypes;
	int			nargs;
	Oid			body;

	if (cache != NULL)
		return cache;
	cache = MemoryContextAllocZero(flinfo->fn_mcxt, sizeof(CheckedCache));
	name = get_func_name(flinfo->fn_oid);
	for (int i = 0; i < lengthof(checked_functions); i++)
		if (strcmp(checked_functions[i].name, name) == 0)
			cache->entry = &checked_functions[i];
	if (cache->entry == NULL)
		elog(ERROR, "function %s is not a checked mq function", name);
	(void) get_func_signature(flinfo->fn_oid, &argtypes, &nargs);
	body = LookupFuncName(list_make2(makeString("mq"), makeString(psprintf("_%s", name))),
						  nargs, argtypes, false);
	/* the body must run as mq_owner, never as this caller */
	{
		HeapTuple	tup = SearchSysCache1(PROCOID, ObjectIdGetDatum(body));
		Form_pg_proc proc;

		if (!HeapTupleIsValid(tup))
			elog(ERROR, "cache lookup failed for function %u", body);
		proc = (Form_pg_proc) GETSTRUCT(tup);
		if (!proc->prosecdef || proc->proowner != MqOwner())
			ereport(ERROR,
					(errcode(ERRCODE_INSUFFICIENT_PRIVILEGE),
					 errmsg("function mq._%s is not mq's own", name),
					 errdetail("It must be SECURITY DEFINER and owned by mq_owner.")));
		ReleaseSysCache(tup);
	}
	fmgr_info_cxt(body, &cache->body, flinfo->fn_mcxt);
	cache->body.fn_expr = flinfo->fn_expr;
	flinfo->fn_extra = cache;
	return cache;
}

/*
 * The C entry point of the administrative functions (see the banner):
 * checks the caller's right, then runs the body with this call's arguments
 * and result set.  A queue that does not exist is left to the body, which
 * raises 42704 or, for drop_queue, returns false.
 */
Datum
mq_checked(PG_FUNCTION_ARGS)
{
	CheckedCache *cache = checked_cache(fcinfo);
	const CheckedFunction *f = cache->entry;
	FmgrInfo   *self = fcinfo->flinfo;
	Datum		result;

	if (!f->by_queue)
		MqRequireRole(role_of_right[f->right],
					  psprintf("run mq.%s", f->name));
	else if (!PG_ARGISNULL(0))
		(void) MqQueueCheckRight(text_to_cstring(PG_GETARG_TEXT_PP(0)), f->right, f->drop);

	fcinfo->flinfo = &cache->body;
	PG_TRY();
	{
		result = FunctionCallInvoke(fcinfo);
	}
	PG_FINALLY();
	{
		fcinfo->flinfo = self;
	}
	PG_END_TRY();
	return result;
}
