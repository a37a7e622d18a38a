# Long polling: mq.read(..., wait) with and without shared_preload_libraries.
#
# For each mode, a reader waits in mq.read (seen in pg_stat_activity with
# wait_event_type 'Extension', never by sleeping), then:
#   - a send committed by another session is returned to the waiting reader;
#   - a rolled-back send is never returned, the next committed one is;
#   - a cancelled waiting read fails with 57014 and claims nothing;
# and without preloading, partitioned queues are refused (55000).
# The wait is 300 s, far longer than the test, so a read that returns did so
# because of the send, not because its wait ran out.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

sub start_waiting_read
{
	my ($node, $out, $err) = @_;
	$$out = '';
	$$err = '';
	my $h = IPC::Run::start(
		[
			'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1',
			'-d', $node->connstr('postgres'),
			# its claim outlives it, so the next waiting read really waits
			'-c', 'SET mq.release_on_session_end = off',
			'-c', "SELECT payload->>'n', attempts FROM mq.read('lp', 1, NULL, '300 seconds')"
		],
		'>', $out, '2>', $err);
	$node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event_type = 'Extension' AND query LIKE '%mq.read(''lp''%'"
	) or die "the read did not start waiting";
	return $h;
}

foreach my $preload ('mq', '')
{
	my $mode = $preload ? 'preloaded' : 'not preloaded';
	my $node = PostgreSQL::Test::Cluster->new($preload ? 'preloaded' : 'plain');
	$node->init;
	$node->append_conf('postgresql.conf', "shared_preload_libraries = '$preload'");
	$node->start;
	$node->safe_psql('postgres',
		"CREATE EXTENSION mq; SELECT mq.create_queue('lp', visibility_timeout => '1 hour');");
	my ($out, $err);

	# a committed send wakes the reader
	my $h = start_waiting_read($node, \$out, \$err);
	$node->safe_psql('postgres', q{SELECT mq.send('lp', '{"n": 1}')});
	$h->finish;
	is($out, "1|1\n", "$mode: the waiting read returns the committed message");

	# a rolled-back send is never returned
	$h = start_waiting_read($node, \$out, \$err);
	$node->safe_psql('postgres', q{BEGIN; SELECT mq.send('lp', '{"n": 2}'); ROLLBACK;});
	$node->safe_psql('postgres', q{SELECT mq.send('lp', '{"n": 3}')});
	$h->finish;
	is($out, "3|1\n", "$mode: a rolled-back send is skipped, the next commit is returned");

	# a cancelled waiting read claims nothing
	$h = start_waiting_read($node, \$out, \$err);
	$node->safe_psql('postgres',
		"SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE query LIKE '%mq.read(''lp''%' AND pid <> pg_backend_pid()"
	);
	$h->finish;
	like($err, qr/canceling statement due to user request/, "$mode: the waiting read is cancelled");
	$node->safe_psql('postgres', q{SELECT mq.send('lp', '{"n": 4}')});
	is($node->safe_psql('postgres', q{SELECT payload->>'n', attempts FROM mq.read('lp', 10)}),
		'4|1', "$mode: the cancelled read claimed nothing");

	if (!$preload)
	{
		my ($ret, $stdout, $stderr) = $node->psql('postgres',
			"SELECT mq.create_queue('log', partitions => 2)");
		like($stderr, qr/partitioned queues need mq to be preloaded/,
			'not preloaded: a partitioned queue is refused with a hint');
	}
	$node->stop;
}

done_testing();
