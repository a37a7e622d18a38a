# Crash safety of mq.
#
# A committed send, claim or ack survives an immediate shutdown and a backend
# crash; a rolled-back or never-committed send, claim, ack or purge leaves no
# trace; a message claimed but not acked before the crash is delivered again
# once its visibility timeout lapses, with the attempt counted; an acked
# message is never delivered again.
#
# Run by test/run.sh (by hand: PATH=/usr/lib/postgresql/15/bin:$PATH
# PG_REGRESS=<pgxs>/src/test/regress/pg_regress prove -I <pgxs>/src/test/perl
# t/001_crash_restart.pl, as a non-root user).  Waits use poll_query_until
# and wait_for_log, never the clock.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('crash');
$node->init;
# Cluster.pm turns this off; phase 2 needs the postmaster to reinitialize
# after a backend crash.
$node->append_conf('postgresql.conf', 'restart_after_crash = on');
# The claims here are made by one-statement sessions and must outlive them
# until their visibility timeout, the rule this test was written for; that
# claims are released when their session ends, and after a restart, is
# t/016_session_end_release.pl's.
$node->append_conf('postgresql.conf', 'mq.release_on_session_end = off');
$node->start;

sub sql
{
	my ($query) = @_;
	return $node->safe_psql('postgres', $query);
}

# Claims every visible message for an hour and records it in seen, until all
# msg_ids in @want have been seen in this phase.  Polling claims, so nothing
# it takes may be lost: seen keeps it all for the checks that follow.
sub drain_until_seen
{
	my ($phase, @want) = @_;
	my $want = join(',', @want);
	my $count = scalar @want;
	return $node->poll_query_until(
		'postgres', qq{
WITH r AS (SELECT msg_id, attempts, (payload->>'n')::int AS n
             FROM mq.read('jobs', 1000, '1 hour')),
     ins AS (INSERT INTO seen SELECT $phase, msg_id, attempts, n FROM r
             RETURNING msg_id)
SELECT count(DISTINCT msg_id) = $count
  FROM (SELECT msg_id FROM seen WHERE phase = $phase
        UNION ALL SELECT msg_id FROM ins) s
 WHERE msg_id IN ($want)});
}

# "n:attempts" of every delivery recorded in a phase, in n order.
sub seen_in
{
	my ($phase) = @_;
	return sql(
		"SELECT string_agg(n || ':' || attempts, ',' ORDER BY n, attempts) FROM seen WHERE phase = $phase"
	);
}

# Visible + in flight + delayed: every message the queue holds.
sub held
{
	return sql(
		q{SELECT depth + in_flight + delayed FROM mq.metrics('jobs')});
}

sql('CREATE EXTENSION mq');
sql(q{SELECT mq.create_queue('jobs', visibility_timeout => '1 hour')});
sql('CREATE TABLE seen (phase int, msg_id bigint, attempts int, n int)');

#
# Phase 1: immediate shutdown (no checkpoint; WAL replay at start).
#

# Committed: n = 1..21, through each way of sending.
sql(qq{SELECT mq.send('jobs', '{"n": $_}')}) for (1 .. 10);
sql(q{BEGIN;
SELECT mq.send('jobs', jsonb_build_object('n', i)) FROM generate_series(11, 15) i;
COMMIT;});
sql(q{SELECT mq.send_batch('jobs',
  ARRAY(SELECT jsonb_build_object('n', i) FROM generate_series(16, 20) i))});
# A committed transaction with a rolled-back savepoint: 21 stays, 102 goes.
sql(q{BEGIN;
SELECT mq.send('jobs', '{"n": 21}');
SAVEPOINT s;
SELECT mq.send('jobs', '{"n": 102}');
ROLLBACK TO SAVEPOINT s;
COMMIT;});
# Rolled back: 101.
sql(q{BEGIN; SELECT mq.send('jobs', '{"n": 101}'); ROLLBACK;});
is(held(), '21', 'the queue holds the 21 committed messages');

# Committed claims of n = 1, 2, 3 for 3 seconds.  n = 1 ($x) stays unacked,
# n = 2 ($z) is acked, n = 3 ($w) is acked only by the transaction the crash
# kills.
my @claimed = split /\n/,
  sql(q{SELECT msg_id || ' ' || (payload->>'n') || ' ' || attempts
          FROM mq.read('jobs', 3, '3 seconds')});
is(join(',', map { (split / /)[1] . ':' . (split / /)[2] } @claimed),
	'1:1,2:1,3:1', 'read claims the oldest first, first attempt');
my ($x, $z, $w) = map { (split / /)[0] } @claimed;
is(sql("SELECT mq.ack('jobs', $z)"), 't', 'ack n = 2 (committed)');

# Never committed: sends 103..106, the ack of n = 3, a claim of n = 4, a purge.
my $open = $node->background_psql('postgres');
$open->query_safe('BEGIN');
$open->query_safe(
	q{SELECT mq.send('jobs', jsonb_build_object('n', i)) FROM generate_series(103, 104) i}
);
$open->query_safe(
	q{SELECT mq.send_batch('jobs', ARRAY['{"n": 105}', '{"n": 106}']::jsonb[])});
is($open->query_safe("SELECT mq.ack('jobs', $w)"),
	't', 'ack n = 3 in the open transaction');
is( $open->query_safe(
		q{SELECT payload->>'n' FROM mq.read('jobs', 1, '1 hour')}),
	'4',
	'claim n = 4 in the open transaction');
$open->query_safe(q{SELECT mq.purge('jobs')});

$node->stop('immediate');
eval { $open->quit; };
$node->start;

is(sql(q{SELECT count(*) FROM mq.queues WHERE queue_name = 'jobs'}),
	'1', 'the queue is still there');
is(held(), '20',
	'after immediate shutdown: 21 committed - 1 acked, nothing uncommitted');

# Everything except n = 2 comes back; $x and $w after their visibility
# timeout (3 s, server clock), with their second attempt counted; n = 4 with
# its uncommitted claim undone.
ok(drain_until_seen(1, $x, $w),
	'the unacked claims come back after their visibility timeout');
is(seen_in(1),
	'1:2,3:2,' . join(',', map { "$_:1" } 4 .. 21),
	'delivered once each: every committed, unacked message; attempts counted');
is(sql(q{SELECT count(*) FROM mq.read('jobs', 1000)}),
	'0', 'nothing else is delivered (the acked n = 2 never again)');

#
# Phase 2: a backend crash (SIGKILL) makes the postmaster reinitialize.
#

is( sql(
		q{SELECT mq.ack('jobs', array_agg(msg_id)) FROM seen WHERE phase = 1}),
	'20',
	'ack everything delivered so far');
my @sent = split /\n/,
  sql(q{SELECT mq.send('jobs', jsonb_build_object('n', i)) FROM generate_series(201, 205) i});
is(scalar @sent, 5, 'send n = 201..205 (committed)');

my $victim = $node->background_psql('postgres');
my $pid = $victim->query_safe('SELECT pg_backend_pid()');
$victim->query_safe('BEGIN');
$victim->query_safe(q{SELECT mq.send('jobs', '{"n": 301}')});
is( $victim->query_safe(
		q{SELECT payload->>'n' FROM mq.read('jobs', 1, '1 hour')}),
	'201',
	'claim n = 201 in the transaction about to crash');
$victim->query_safe(qq{SELECT mq.ack('jobs', $sent[1])});

my $log_offset = -s $node->logfile;
kill 'KILL', $pid or die "could not kill backend $pid: $!";
$node->wait_for_log(qr/all server processes terminated; reinitializing/,
	$log_offset);
eval { $victim->quit; };
ok($node->poll_query_until('postgres', 'SELECT 1', '1'),
	'the server accepts connections after crash recovery');

is(held(), '5', 'after the backend crash: 5 committed, nothing uncommitted');
ok(drain_until_seen(2, @sent), 'the committed messages are delivered');
is(seen_in(2), join(',', map { "$_:1" } 201 .. 205),
	'delivered once each, the crashed claim undone');
is(sql(q{SELECT count(*) FROM mq.read('jobs', 1000)}),
	'0', 'nothing else is delivered');
is( sql(
		q{SELECT mq.ack('jobs', array_agg(msg_id)) FROM seen WHERE phase = 2}),
	'5',
	'ack them all');
is(held(), '0', 'the queue is empty');

$node->stop;
done_testing();
