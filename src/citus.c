/*-------------------------------------------------------------------------
 *
 * citus.c
 *	  What mq needs from C to run on a Citus cluster (docs/scale-out.md).
 *
 * The rest of mq on Citus lives where each rule does: the node-local
 * offsets and visible end in offsets.c (mq._assign_offset, mq._local_end),
 * the routed end and the isolation rule in partition.c, and the
 * distribution itself in PL/pgSQL (mq.citus_distribute in sql/mq.sql).
 * On a server without Citus nothing here changes anything: no table is
 * distributed.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "catalog/namespace.h"
#include "catalog/pg_namespace.h"
#include "catalog/pg_type.h"
#include "executor/spi.h"
#include "fmgr.h"
#include "libpq/scram.h"
#include "utils/builtins.h"
#include "utils/lsyscache.h"
#include "utils/snapmgr.h"

#include "queue.h"

PG_FUNCTION_INFO_V1(mq_scram_secret);

/*
 * Whether relid is a Citus-distributed table (a row in pg_dist_partition).
 * False without Citus, and for InvalidOid.  Called connected to SPI.
 */
bool
MqCitusDistributed(Oid relid)
{
	Oid			argtypes[1] = {OIDOID};
	Datum		values[1] = {ObjectIdGetDatum(relid)};
	bool		isnull;
	int			ret;

	if (!OidIsValid(relid) ||
		!OidIsValid(get_relname_relid("pg_dist_partition", PG_CATALOG_NAMESPACE)))
		return false;
	PushActiveSnapshot(GetLatestSnapshot());
	ret = SPI_execute_with_args("SELECT EXISTS (SELECT FROM pg_catalog.pg_dist_partition"
								" WHERE logicalrelid OPERATOR(pg_catalog.=) $1)",
								1, argtypes, values, NULL, true, 1);
	PopActiveSnapshot();
	if (ret != SPI_OK_SELECT || SPI_processed != 1)
		elog(ERROR, "could not read pg_dist_partition: %s", SPI_result_code_string(ret));
	return DatumGetBool(SPI_getbinval(SPI_tuptable->vals[0], SPI_tuptable->tupdesc, 1, &isnull));
}

/*
 * mq._scram_secret(password text) RETURNS text
 *	  The SCRAM-SHA-256 verifier of password, in the form ALTER ROLE ...
 *	  PASSWORD accepts and stores as it is (PostgreSQL's own
 *	  pg_be_scram_build_secret, random salt, default iteration count), so
 *	  that mq.citus_distribute can set mq_owner's password on every node
 *	  without the password appearing in a statement.  STRICT: NULL gives
 *	  NULL.  No errors of its own.
 */
Datum
mq_scram_secret(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(pg_be_scram_build_secret(text_to_cstring(PG_GETARG_TEXT_PP(0)))));
}
