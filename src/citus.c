/*-------------------------------------------------------------------------
 *
 * citus.c
 *	  What mq.citus_distribute() needs from C (docs/scale-out.md).
 *
 * The rest of mq on Citus lives where each rule does: the node-local
 * offsets and visible end in offsets.c, the routed end and the isolation
 * rule in partition.c, the distributed TRUNCATE in segment.c, and the
 * distribution itself in PL/pgSQL (sql/mq.sql).
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "fmgr.h"
#include "libpq/scram.h"
#include "utils/builtins.h"

PG_FUNCTION_INFO_V1(mq_scram_secret);

/*
 * mq._scram_secret(password text) RETURNS text
 *	  The SCRAM-SHA-256 verifier of password, in the form ALTER ROLE ...
 *	  PASSWORD accepts and stores as it is (PostgreSQL's own
 *	  pg_be_scram_build_secret, random salt, default iteration count), so
 *	  that a password can be set on other nodes without sending it.
 *	  STRICT: NULL gives NULL.
 */
Datum
mq_scram_secret(PG_FUNCTION_ARGS)
{
	PG_RETURN_TEXT_P(cstring_to_text(pg_be_scram_build_secret(text_to_cstring(PG_GETARG_TEXT_PP(0)))));
}
