/*-------------------------------------------------------------------------
 *
 * notify.c
 *	  LISTEN/NOTIFY wake-ups: a transaction that sends to a queue notifies
 *	  the channel "mq.<queue_name>" once, at commit.
 *
 * PostgreSQL delivers a NOTIFY only when its transaction commits, never on
 * rollback, and folds identical channel/payload pairs of one transaction
 * into one notification, so calling Async_Notify on every send coalesces to
 * one notification per queue per transaction.  The channel name is at most
 * 3 + 48 bytes, within the 63-byte identifier limit, and keeps the queue
 * name's case: clients LISTEN "mq.Emails" with double quotes.
 *
 * NOTIFY takes a cluster-wide lock at commit, serializing committing
 * notifiers; a queue created with notify => false skips it, and waiting
 * readers inside the server (mq.read/mq.poll with wait) never need it.
 *
 *-------------------------------------------------------------------------
 */
#include "postgres.h"

#include "commands/async.h"

#include "notify.h"

void
MqNotifySend(MqQueue *q)
{
	if (q->notify)
		Async_Notify(q->channel, "");
}
