# A backend's cache of a queue's segments (queue.c, segment.c) must not stay
# stale after the transaction in which a rotation became visible to it.
#
# A send that takes a segment change into account only halfway (its
# statement's snapshot predates the rotation, but it processes the
# invalidation) may put its message in the segment that was just sealed:
# the design allows that for the sender's running transaction, which holds
# the segment open (offsets.c).  The cache must then not be taken as fresh:
# a later transaction of the same backend that still sends to the sealed
# segment, after maintenance closed it at its highest msg_id, writes a
# message that no read ever finds (tickets stop at the closed segment's end,
# the ring only takes ids the tickets passed, the sweep looks behind the
# ticket).  Found by t/007_crash_under_load.pl, where about 30,000
# committed messages of two producers were never delivered.
#
# Two ways to a stale cache, both deterministic here:
#   1. a REPEATABLE READ transaction whose snapshot predates the rotation
#      processes its invalidation: the segments must be read with the latest
#      snapshot, or the cache keeps the old state with the new version;
#   2. a transaction that claimed from the current segment (so holds a lock
#      on it and processes no invalidation when it locks it again to send)
#      sends after the rotation and after maintenance closed the sealed
#      segment, as a worker that acks a message and sends a follow-up does.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('stale_segments');
$node->init;
# no background worker: the test runs maintenance itself, at fixed points
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'mq'\nmq.database = ''");
$node->start;

sub sql
{
	return $node->safe_psql('postgres', shift);
}

sql(q{CREATE EXTENSION mq});

# A session that maintains: attached to the queues' shared state, so that
# it closes sealed segments.
my $m = $node->background_psql('postgres');

# Enough ids for a rotation (segment 0 sealed, a free one current), checked.
sub rotate
{
	my ($queue) = @_;
	$m->query_safe(qq{SELECT count(*) FROM mq.send_batch('$queue', array_fill('{"n": -1}'::jsonb, ARRAY[65536]))});
	$m->query_safe(q{SELECT mq.maintain()});
	is( sql(qq{SELECT string_agg(s.state, ',' ORDER BY s.segment <> 0, s.state)
	             FROM mq.segment s JOIN mq.queue q USING (queue_id) WHERE q.queue_name = '$queue'}),
		'sealed,current,free,free', "$queue: rotation, segment 0 sealed, another one current");
}

# Read and ack until nothing is left; returns how many were delivered.
sub drain
{
	my ($queue) = @_;
	my $delivered = 0;
	while (1)
	{
		my $n = sql(qq{
WITH r AS (SELECT msg_id FROM mq.read('$queue', 10000, '1 hour'))
SELECT mq.ack('$queue', coalesce(array_agg(msg_id), '{}')) FROM r});
		last if $n == 0;
		$delivered += $n;
	}
	return $delivered;
}

#
# 1. A REPEATABLE READ snapshot from before the rotation.
#
sql(q{SELECT mq.create_queue('sq1', visibility_timeout => '1 hour')});
my $qid = sql(q{SELECT queue_id FROM mq.queue WHERE queue_name = 'sq1'});
$m->query_safe(q{SELECT mq.maintain()});    # attach

# the sender: its cache of sq1's segments is loaded (segment 0 is current)
my $a = $node->background_psql('postgres');
$a->query_safe(q{SELECT mq.send('sq1', '{"n": 0}')});
# its transaction's snapshot is taken before the rotation
$a->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
$a->query_safe('SELECT 1');
rotate('sq1');
# in the transaction that predates the rotation (allowed to use segment 0)
$a->query_safe(q{SELECT mq.send('sq1', '{"n": 1}')});
$a->query_safe('COMMIT');
# a new transaction of the same backend, after the rotation committed
$a->query_safe(q{SELECT mq.send('sq1', '{"n": 2}')});
is( sql(qq{SELECT count(*) FROM mq.q_${qid}_0 WHERE payload->>'n' = '2'}),
	'0', 'sq1: a send in a later transaction goes to the current segment, not the sealed one');
# maintenance closes the sealed segment (no running sender holds it) ...
$m->query_safe(q{SELECT mq.maintain()});
# ... and the same backend sends again
$a->query_safe(q{SELECT mq.send('sq1', '{"n": 3}')});
$a->quit;
is(drain('sq1'), 65536 + 4, 'sq1: every committed message is delivered');
is(sql(q{SELECT depth + in_flight + delayed FROM mq.metrics('sq1')}), '0', 'sq1: the queue is empty');

#
# 2. A worker's transaction: claim, (rotation, close), ack and send a follow-up.
#
sql(q{SELECT mq.create_queue('sq2', visibility_timeout => '1 hour')});
$m->query_safe(q{SELECT mq.maintain()});    # attach
# the worker: prepared statements, used once, so that the send below
# parses nothing (the parser's catalog lookups process invalidations)
$a = $node->background_psql('postgres');
$a->query_safe(q{PREPARE get AS SELECT msg_id FROM mq.read('sq2', 1)});
$a->query_safe(q{PREPARE put(jsonb) AS SELECT mq.send('sq2', $1)});
$a->query_safe(q{PREPARE done(bigint) AS SELECT mq.ack('sq2', $1)});
$a->query_safe(q{EXECUTE put('{"n": 0}')});
$a->query_safe('BEGIN');
my $id = $a->query_safe(q{EXECUTE get});
$a->query_safe(qq{EXECUTE done($id)});
$a->query_safe('COMMIT');
$a->query_safe(q{EXECUTE put('{"n": 1}')});
$a->query_safe('BEGIN');
$id = $a->query_safe(q{EXECUTE get});
rotate('sq2');
# maintenance closes the sealed segment: nobody has sent to it
$m->query_safe(q{SELECT mq.maintain()});
$a->query_safe(q{EXECUTE put('{"n": 2}')});
is($a->query_safe(qq{EXECUTE done($id)}), 't', 'sq2: the worker acks its message');
$a->query_safe('COMMIT');
$a->quit;
is(drain('sq2'), 65536 + 1, 'sq2: every committed message is delivered, the follow-up too');
is(sql(q{SELECT depth + in_flight + delayed FROM mq.metrics('sq2')}), '0', 'sq2: the queue is empty');

$m->quit;
$node->stop;
done_testing();
