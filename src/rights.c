/*-------------------------------------------------------------------------
 *
 * rights.c
 *	  Who may do what with a queue: the three roles, per-queue grants, and
 *	  the checked entry points of the administrative functions.
 *
 * A caller may send to, consume from or administer a queue when it has
 * the privileges of the matching role (mq_producer, mq_consumer, mq_admin:
 * a right on every queue), or a per-queue grant.  Per-queue grants live in
 * mq.queue.acl, an aclitem[] written by mq.grant and mq.revoke, so that
 * PostgreSQL's own ACL code does the matching (role membership included)
 * and pg_dump writes the grantees by name.  The privilege bits stand for:
 * INSERT = send, SELECT = consume, UPDATE = admin (which includes both).
 *
 * The checks use the caller's identity, before mq switches to the owner of
 * schema mq, so EXECUTE on the public functions is granted to PUBLIC and
 * the decision is made here.  Hot paths check in MqQueueOpen(); the
 * PL/pgSQL administrative functions are reached through mq_checked(),
 * which checks and then calls the SECURITY DEFINER body mq._<name>, which
 * nobody else may execute.  Rights checked at open time apply to the
 * statement; a revoke takes effect at the next call after it commits.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_type.h"
#include "fmgr.h"
#include "miscadmin.h"
#include "parser/parse_func.h"
#include "utils/acl.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/memutils.h"

#include "queue.h"

PG_FUNCTION_INFO_V1(mq_checked);
PG_FUNCTION_INFO_V1(mq_can);

/* the role that has a right on every queue */
static const char *const role_of_right[] = {"mq_producer", "mq_consumer", "mq_admin"};

/* aclitem bits that carry a right: admin implies the other two */
static AclMode
mode_of_right(MqRight right)
{
	switch (right)
	{
		case MQ_RIGHT_SEND:
			return ACL_INSERT | ACL_UPDATE;
		case MQ_RIGHT_CONSUME:
			return ACL_SELECT | ACL_UPDATE;
		case MQ_RIGHT_ADMIN:
			return ACL_UPDATE;
	}
	return 0;					/* keep compiler quiet */
}

static bool
has_role(Oid roleid, const char *rolname)
{
	Oid			role = get_role_oid(rolname, true);

	return OidIsValid(role) && has_privs_of_role(roleid, role);
}

/* Whether roleid may use a queue whose grants are acl (NULL: none) for right. */
bool
MqHasRight(Oid roleid, Acl *acl, MqRight right)
{
	/* mq's own functions, running as the owner, may do anything */
	if (roleid == MqOwner() || has_role(roleid, role_of_right[right]))
		return true;
	return acl != NULL &&
		aclmask(acl, roleid, MqOwner(), mode_of_right(right), ACLMASK_ANY) != 0;
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
	if (SPI_execute("SELECT acl FROM mq.queue WHERE acl IS NOT NULL", true, 0) != SPI_OK_SELECT)
		elog(ERROR, "could not read mq.queue");
	for (uint64 i = 0; i < SPI_processed && !found; i++)
	{
		bool		isnull;
		Datum		acl = SPI_getbinval(SPI_tuptable->vals[i], SPI_tuptable->tupdesc, 1, &isnull);

		found = MqHasRight(user, DatumGetAclP(acl), MQ_RIGHT_CONSUME);
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
	ereport(ERROR,
			(errcode(ERRCODE_INVALID_PARAMETER_VALUE),
			 errmsg("invalid privilege \"%s\"", s),
			 errhint("Use 'send', 'consume' or 'admin'.")));
	return MQ_RIGHT_ADMIN;		/* keep compiler quiet */
}

/*
 * mq._can(acl aclitem[], privilege text) RETURNS boolean
 *	  Whether the current user may use a queue whose grants are acl for
 *	  privilege ('send', 'consume', 'admin' or 'any').  The views filter
 *	  their rows with it; functions in a view run as the view's user.
 */
Datum
mq_can(PG_FUNCTION_ARGS)
{
	Acl		   *acl = PG_ARGISNULL(0) ? NULL : PG_GETARG_ACL_P(0);
	Oid			user = GetUserId();

	if (PG_ARGISNULL(1))
		ereport(ERROR,
				(errcode(ERRCODE_NULL_VALUE_NOT_ALLOWED),
				 errmsg("privilege must not be NULL")));
	if (strcmp(text_to_cstring(PG_GETARG_TEXT_PP(1)), "any") == 0)
		PG_RETURN_BOOL(MqHasRight(user, acl, MQ_RIGHT_SEND) ||
					   MqHasRight(user, acl, MQ_RIGHT_CONSUME));
	PG_RETURN_BOOL(MqHasRight(user, acl, right_arg(PG_GETARG_TEXT_PP(1))));
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
} CheckedFunction;

static const CheckedFunction checked_functions[] = {
	{"create_queue", false, MQ_RIGHT_ADMIN},
	{"maintain", false, MQ_RIGHT_ADMIN},
	{"alter_queue", true, MQ_RIGHT_ADMIN},
	{"drop_queue", true, MQ_RIGHT_ADMIN},
	{"purge", true, MQ_RIGHT_ADMIN},
	{"grant", true, MQ_RIGHT_ADMIN},
	{"revoke", true, MQ_RIGHT_ADMIN},
	{"metrics", true, MQ_RIGHT_CONSUME},
	{"heartbeat", true, MQ_RIGHT_CONSUME},
	{"seek", true, MQ_RIGHT_CONSUME},
	{"leave", true, MQ_RIGHT_CONSUME},
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
		(void) MqQueueCheckRight(text_to_cstring(PG_GETARG_TEXT_PP(0)), f->right);

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
