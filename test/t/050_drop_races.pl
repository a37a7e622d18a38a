# Calls racing drop_queue and locks of mq's internal objects.
#
#   - A send, read, ack, poll, commit or metrics call that waits behind a
#     drop_queue held in an open transaction, or behind a LOCK TABLE of a
#     queue's table or an ALTER SEQUENCE of its id or offset sequence, waits
#     in a heavyweight lock (pg_stat_activity: wait_event_type 'Lock') and
#     is ended by statement_timeout and by pg_cancel_backend.  (0.1.0 took
#     the sequence's lock under an LWLock: such a wait ignored both.)
#   - A waiting read or poll (wait => 15 minutes) does not hold up a drop of
#     its queue: the drop ends the wait, the call returns nothing, the drop
#     succeeds (lock_timeout 60 s bounds the drop: it fails if it waited for
#     the whole wait).  A reader of another queue keeps waiting.
#   - mq.maintain() behind a drop, and after a registered consumer died
#     holding a message (or a partition lease) of a queue dropped since,
#     succeeds, pass after pass.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('drop_races');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'mq'");
# the background worker maintains database postgres; the tests that count
# on maintenance use database m, which only they maintain
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE m');

my $timeout = $PostgreSQL::Test::Utils::timeout_default;

sub setup_queues
{
	my ($db) = @_;
	$node->safe_psql($db, q{
		SELECT mq.create_queue('wq', visibility_timeout => '1 hour');
		SELECT mq.create_queue('lp', partitions => 2);
		SELECT mq.send('wq', '{"n": 1}');
		SELECT mq.send('lp', '{"n": 1}', key => 'k');
		SELECT count(*) FROM mq.poll('lp', 'g', 'm1', 10);
	});
}

sub queue_id
{
	my ($db, $name) = @_;
	return $node->safe_psql($db,
		"SELECT queue_id FROM mq.queue WHERE queue_name = '$name'");
}

# Start $sql on its own connection, wait until it waits with wait_event_type
# $event; returns the handle and its output buffers.
sub start_waiting
{
	my ($db, $tag, $sql, $event) = @_;
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'psql', '-XAtq', '-d', $node->connstr($db), '-c', "/* $tag */ $sql" ],
		'>', \$out, '2>', \$err, IPC::Run::timeout($timeout));
	$node->poll_query_until($db,
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event_type = '$event'"
		  . " AND query LIKE '/* $tag */%'")
	  or die "$tag did not start waiting";
	return ($h, \$out, \$err);
}

# Finish a handle started by start_waiting; false when it timed out.
sub finish
{
	my ($h) = @_;
	my $ok = eval { $h->finish; 1; };
	$h->kill_kill unless $ok;
	return $ok;
}

# ---- waits behind a drop or a lock are cancellable ---------------------

sub cancellable
{
	my ($what, $blocker_sql, $call) = @_;
	my $blocker = $node->background_psql('postgres');
	$blocker->query_safe("BEGIN; $blocker_sql");

	my ($ret, $out, $err) = $node->psql('postgres',
		"SET statement_timeout = '1s'; $call", timeout => $timeout);
	like($err, qr/canceling statement due to statement timeout/,
		"$what: statement_timeout ends the wait");

	my ($h, $o, $e) = start_waiting('postgres', 'victim', $call, 'Lock');
	$node->safe_psql('postgres',
		"SELECT pg_cancel_backend(pid) FROM pg_stat_activity"
		  . " WHERE query LIKE '/* victim */%' AND pid <> pg_backend_pid()");
	ok(finish($h), "$what: the cancelled call returns");
	like($$e, qr/canceling statement due to user request/,
		"$what: pg_cancel_backend ends the wait");

	$blocker->query_safe('ROLLBACK');
	$blocker->quit;
}

$node->safe_psql('postgres', 'CREATE EXTENSION mq');
setup_queues('postgres');
my $wq = queue_id('postgres', 'wq');
my $lp = queue_id('postgres', 'lp');

my @calls_lp = (
	[ 'send to a partitioned queue', q{SELECT mq.send('lp', '{"n": 2}', key => 'k')} ],
	[ 'poll', q{SELECT count(*) FROM mq.poll('lp', 'g', 'm1', 10)} ],
	[ 'waiting poll', q{SELECT count(*) FROM mq.poll('lp', 'g', 'm1', 10, wait => '1 minute')} ],
	[ 'commit', q{SELECT mq.commit('lp', 'g', 0, 0, 'm1')} ],
	[ 'mq.consumer_groups', q{SELECT count(*) FROM mq.consumer_groups} ]);
my @calls_wq = (
	[ 'send', q{SELECT mq.send('wq', '{"n": 2}')} ],
	[ 'read', q{SELECT count(*) FROM mq.read('wq', 10)} ],
	[ 'waiting read', q{SELECT count(*) FROM mq.read('wq', 10, wait => '1 minute')} ],
	[ 'ack', q{SELECT mq.ack('wq', 1)} ],
	[ 'metrics', q{SELECT depth FROM mq.metrics('wq')} ]);

foreach my $c (@calls_lp)
{
	cancellable("$c->[0] behind drop_queue", q{SELECT mq.drop_queue('lp')}, $c->[1]);
}
foreach my $c (@calls_wq)
{
	cancellable("$c->[0] behind drop_queue", q{SELECT mq.drop_queue('wq')}, $c->[1]);
}
# the offset sequences: ALTER SEQUENCE holds a lock that nextval and
# pg_sequence_last_value wait for
my $alter_offsets = join(' ', map { "ALTER SEQUENCE mq.p_${lp}_o$_ NO CYCLE;" } (0, 1));
cancellable("send behind ALTER SEQUENCE of the offsets", $alter_offsets, $calls_lp[0][1]);
cancellable("poll behind ALTER SEQUENCE of the offsets", $alter_offsets, $calls_lp[1][1]);
cancellable("send behind LOCK TABLE of the log", "LOCK TABLE mq.p_$lp", $calls_lp[0][1]);
cancellable("poll behind LOCK TABLE of the log", "LOCK TABLE mq.p_$lp", $calls_lp[1][1]);
cancellable("send behind ALTER SEQUENCE of the ids", "ALTER SEQUENCE mq.q_${wq}_seq NO CYCLE;",
	$calls_wq[0][1]);
my $lock_segments = "LOCK TABLE mq.q_${wq}_0, mq.q_${wq}_1, mq.q_${wq}_2, mq.q_${wq}_3, mq.q_${wq}_d";
cancellable("send behind LOCK TABLE of the segments", $lock_segments, $calls_wq[0][1]);
cancellable("read behind LOCK TABLE of the segments", $lock_segments, $calls_wq[1][1]);
cancellable("ack behind LOCK TABLE of the segments", $lock_segments, $calls_wq[3][1]);

# ---- a drop ends the waits of its queue's readers ------------------------

$node->safe_psql('postgres',
	q{SELECT mq.create_queue('other'), mq.purge('wq'), mq.purge('lp')});
my ($hr, $or, $er) = start_waiting('postgres', 'long read',
	q{SELECT count(*) FROM mq.read('wq', 10, wait => '15 minutes')}, 'Extension');
my ($hp, $op, $ep) = start_waiting('postgres', 'long poll',
	q{SELECT count(*) FROM mq.poll('lp', 'g', 'm1', 10, wait => '15 minutes')}, 'Extension');
my ($ho, $oo, $eo) = start_waiting('postgres', 'other read',
	q{SELECT count(*) FROM mq.read('other', 10, wait => '15 minutes')}, 'Extension');
my ($ret, $out, $err) = $node->psql('postgres',
	q{SET lock_timeout = '60s'; SELECT mq.drop_queue('wq'), mq.drop_queue('lp')},
	timeout => $timeout);
is($out, 't|t', 'drop_queue does not wait for the waits of its readers')
  or diag($err);
ok(finish($hr), 'the waiting read returns');
is($$or, "0\n", 'the waiting read of the dropped queue returns nothing');
is($$er, '', 'the waiting read of the dropped queue raises nothing');
ok(finish($hp), 'the waiting poll returns');
is($$op, "0\n", 'the waiting poll of the dropped queue returns nothing');
is($$ep, '', 'the waiting poll of the dropped queue raises nothing');
ok( $node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event_type = 'Extension'"
		  . " AND query LIKE '/* other read */%'"),
	'a reader of another queue still waits');
$node->safe_psql('postgres', q{SELECT mq.send('other', '{"n": 1}')});
ok(finish($ho), 'the reader of the other queue returns');
is($$oo, "1\n", 'the reader of the other queue gets its message');

# ---- maintenance and dropped queues --------------------------------------

$node->safe_psql('m', 'CREATE EXTENSION mq');
setup_queues('m');

# maintenance behind a drop skips the dropped queue
my $blocker = $node->background_psql('m');
$blocker->query_safe(q{BEGIN; SELECT mq.drop_queue('wq'), mq.drop_queue('lp')});
my ($hm, $om, $em) = start_waiting('m', 'maintain', 'SELECT mq.maintain() >= 0', 'Lock');
$blocker->query_safe('COMMIT');
ok(finish($hm), 'mq.maintain() behind a drop returns');
is($$om, "t\n", 'mq.maintain() behind a drop succeeds');
is($$em, '', 'mq.maintain() behind a drop raises nothing');

# a registered consumer dies holding a message and a lease of queues that
# were dropped after it used them
setup_queues('m');
my $consumer = $node->background_psql('m');
$consumer->query_safe(q{
	SELECT mq.register_consumer('c1', '1 hour');
	SELECT count(*) FROM mq.read('wq', 10);
	SELECT count(*) FROM mq.poll('lp', 'g2', 'c1', 10);
});
$node->safe_psql('m', q{SELECT mq.drop_queue('wq'), mq.drop_queue('lp')});
$consumer->quit;
$node->poll_query_until('m', q{SELECT count(*) = 1 FROM mq.consumers WHERE state = 'dead'})
  or die 'the consumer is not dead';
foreach my $pass (1, 2)
{
	($ret, $out, $err) = $node->psql('m', 'SELECT mq.maintain() >= 0');
	is($out, 't', "maintenance pass $pass after a dead consumer's queues were dropped succeeds")
	  or diag($err);
}
is($node->safe_psql('m', 'SELECT count(*) FROM mq.consumers'),
	'0', "the dead consumer's record is released");

$node->stop;
done_testing();
