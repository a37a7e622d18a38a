# mq-worker against a real node (mq preloaded):
#   1. acks: 20 messages, each processed once and acked; idle, the worker
#      waits in a long-polling read (no busy loop);
#   2. nacks: a command that fails the first time: nacked with the queue's
#      backoff and the stderr tail as last_error, then acked at attempt 2;
#   3. visibility extension: a command that runs longer than
#      --visibility-timeout is delivered exactly once;
#   4. SIGTERM: in-flight commands finish within the grace period and are
#      acked, unclaimed messages stay queued (none lost, none twice); past
#      the grace period commands are killed and their messages released;
#   5. partitioned mode (--group): per-partition offset order, each message
#      once, all committed;
#   6. --help, bad options, and partitioned mode without mq.poll (when this
#      mq has none).
# The worker is the installed one (`make install` puts it in pg_config's
# bindir).  Waits poll the database or files, never a fixed sleep.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";
use IPC::Run;
use MqTest;
use PostgreSQL::Test::Utils;
use Test::More;

my ($node, $worker, $dsn) = mq_worker_setup('worker');
my $dir = PostgreSQL::Test::Utils::tempdir;
my $timeout = $PostgreSQL::Test::Utils::timeout_default;

sub send_n
{
	my ($queue, $n) = @_;
	$node->safe_psql('postgres',
		"SELECT count(*) FROM mq.send_batch('$queue', "
		  . "(SELECT array_agg(jsonb_build_object('n', i) ORDER BY i) FROM generate_series(1, $n) i))");
}

# ---- 1. acks ---------------------------------------------------------------
{
	$node->safe_psql('postgres', "SELECT mq.create_queue('acks')");
	send_n('acks', 20);
	my $out = "$dir/acks.out";
	my $h = start_worker('acks', '--queue', 'acks', '--concurrency', '4',
		'--', 'sh', '-c', "cat >> '$out'");
	ok( $node->poll_query_until(
			'postgres',
			"SELECT total_acked = 20 AND depth = 0 AND in_flight = 0 FROM mq.metrics('acks')"),
		'acks: all 20 messages acked') or show_log('acks');

	# idle: one long-polling read, waiting in the extension, not a loop
	ok( $node->poll_query_until(
			'postgres',
			"SELECT count(*) = 1 FROM pg_stat_activity WHERE pid <> pg_backend_pid() "
			  . "AND wait_event_type = 'Extension' AND query LIKE '%FROM mq.read(%'"),
		'acks: the idle worker waits in a long-polling read');

	my ($rc) = stop_worker($h);
	is($rc, 0, 'acks: exit status 0 after SIGTERM');
	my @n = sort { $a <=> $b } map { /"n": (\d+)/ ? $1 : -1 } lines_of($out);
	is_deeply(\@n, [ 1 .. 20 ], 'acks: each payload processed exactly once');
}

# ---- 2. nacks with backoff -------------------------------------------------
{
	$node->safe_psql('postgres',
		"SELECT mq.create_queue('nacks', retry_delay => '1 second', retry_backoff => 1)");
	send_n('nacks', 3);
	# First attempt: 3000 bytes of noise, then a last line, exit 3.
	# Second attempt: record attempts, last_error and the time, exit 0.
	my $script = <<"EOS";
m='$dir/nack.'\$MQ_MSG_ID
cat > /dev/null
if [ -e "\$m.failed" ]; then
	date +%s.%N > "\$m.retried"
	printf '%s' "\$MQ_ATTEMPTS" > "\$m.attempts"
	printf '%s' "\$MQ_LAST_ERROR" > "\$m.error"
	echo "\$MQ_MSG_ID" >> '$dir/nacks.done'
	exit 0
fi
date +%s.%N > "\$m.failed"
head -c 3000 /dev/zero | tr '\\0' x >&2
echo >&2
echo "boom \$MQ_MSG_ID" >&2
exit 3
EOS
	my $h = start_worker('nacks', '--queue', 'nacks', '--concurrency', '2',
		'--', 'sh', '-c', $script);
	ok( $node->poll_query_until(
			'postgres',
			"SELECT total_acked = 3 AND depth = 0 AND in_flight = 0 AND delayed = 0 FROM mq.metrics('nacks')"),
		'nacks: all 3 messages acked after a retry') or show_log('nacks');
	my ($rc) = stop_worker($h);
	is($rc, 0, 'nacks: exit status 0 after SIGTERM');

	my @ids = sort { $a <=> $b } lines_of("$dir/nacks.done");
	is(scalar(@ids), 3, 'nacks: each message succeeded once');
	foreach my $id (@ids)
	{
		is(slurp_file("$dir/nack.$id.attempts"), '2', "nacks: message $id acked at attempt 2");
		my $err = slurp_file("$dir/nack.$id.error");
		like($err, qr/^exit status 3: x+\nboom $id$/,
			"nacks: message $id last_error has the exit status and the stderr tail");
		ok(length($err) <= 1024 + length('exit status 3: ')
			  && length($err) > 1000,
			"nacks: message $id last_error keeps only the last ~1 KB of stderr ("
			  . length($err) . ' bytes)');
		my $gap = slurp_file("$dir/nack.$id.retried") - slurp_file("$dir/nack.$id.failed");
		cmp_ok($gap, '>=', 0.9, "nacks: message $id retried after the queue's 1 s backoff");
	}
}

# ---- 3. visibility extension -----------------------------------------------
{
	$node->safe_psql('postgres', "SELECT mq.create_queue('slow')");
	send_n('slow', 1);
	my $starts = "$dir/slow.starts";
	# two slots: a lapsed claim would be read again by the idle one
	my $h = start_worker('slow', '--queue', 'slow', '--concurrency', '2',
		'--visibility-timeout', '2',
		'--', 'sh', '-c',
		"echo \"\$MQ_MSG_ID \$MQ_ATTEMPTS\" >> '$starts'; sleep 5; cat >> '$dir/slow.out'");
	ok( $node->poll_query_until(
			'postgres',
			"SELECT total_acked = 1 AND depth = 0 AND in_flight = 0 FROM mq.metrics('slow')"),
		'slow: the message is acked') or show_log('slow');
	my ($rc) = stop_worker($h);
	is($rc, 0, 'slow: exit status 0 after SIGTERM');
	my @s = lines_of($starts);
	is(scalar(@s), 1, 'slow: a 5 s command under a 2 s visibility timeout ran once');
	like($s[0] // '', qr/^\d+ 1$/, 'slow: at its first attempt');
	is(scalar(lines_of("$dir/slow.out")), 1, 'slow: processed once');
}

# ---- 4. graceful SIGTERM ---------------------------------------------------
{
	$node->safe_psql('postgres', "SELECT mq.create_queue('term')");
	send_n('term', 6);
	my $starts = "$dir/term.starts";
	my $out = "$dir/term.out";
	my $h = start_worker('term', '--queue', 'term', '--concurrency', '4',
		'--', 'sh', '-c', "echo \$MQ_MSG_ID >> '$starts'; sleep 2; cat >> '$out'");
	ok(wait_until(sub { lines_of($starts) >= 4 }), 'term: 4 commands in flight') or show_log('term');
	my ($rc, $took) = stop_worker($h);
	is($rc, 0, 'term: exit status 0 after SIGTERM');
	is(scalar(lines_of($starts)), 4, 'term: no claims after SIGTERM');
	my @done = map { /"n": (\d+)/ ? $1 : -1 } lines_of($out);
	is(scalar(@done), 4, 'term: the in-flight commands finished within the grace period');
	is($node->safe_psql('postgres',
			"SELECT total_acked || ' ' || depth || ' ' || in_flight FROM mq.metrics('term')"),
		'4 2 0', 'term: 4 acked, 2 still queued, none in flight');
	my @left = split /\n/,
	  $node->safe_psql('postgres', "SELECT payload->>'n' FROM mq.read('term', 10)");
	is_deeply([ sort { $a <=> $b } @done, @left ], [ 1 .. 6 ],
		'term: every message either processed once or still queued');

	# past the grace period: killed, released, nothing processed
	$node->safe_psql('postgres', "SELECT mq.create_queue('term2')");
	send_n('term2', 2);
	$starts = "$dir/term2.starts";
	$h = start_worker('term2', '--queue', 'term2', '--concurrency', '2', '--grace', '1',
		'--', 'sh', '-c', "echo \$MQ_MSG_ID >> '$starts'; sleep 60; cat >> '$dir/term2.out'");
	ok(wait_until(sub { lines_of($starts) >= 2 }), 'term2: 2 commands in flight') or show_log('term2');
	($rc, $took) = stop_worker($h);
	is($rc, 0, 'term2: exit status 0 after SIGTERM');
	cmp_ok($took, '<', 10, "term2: the worker stopped soon after its 1 s grace period (${took}s)");
	ok(!-e "$dir/term2.out", 'term2: the killed commands did not complete');
	is($node->safe_psql('postgres',
			"SELECT total_acked || ' ' || depth || ' ' || in_flight FROM mq.metrics('term2')"),
		'0 2 0', 'term2: both messages released and visible again at once');
	show_log('term2') unless Test::More->builder->is_passing;
}

# ---- 5. partitioned mode (when this mq has mq.poll) ------------------------
if (mq_has_poll($node))
{
	$node->safe_psql('postgres', "SELECT mq.create_queue('parts', partitions => 2)");
	$node->safe_psql('postgres',
		"SELECT count(*) FROM mq.send_batch('parts', "
		  . "(SELECT array_agg(jsonb_build_object('n', i) ORDER BY i) FROM generate_series(1, 20) i), "
		  . "(SELECT array_agg('k' || i % 4 ORDER BY i) FROM generate_series(1, 20) i))");
	my $out = "$dir/parts.out";
	my $h = start_worker('parts', '--queue', 'parts', '--group', 'g', '--concurrency', '4',
		'--wait', '1', '--', 'sh', '-c',
		"p=\$(cat); sleep 0.0\$((\$\$ % 5)); echo \"\$MQ_PARTITION \$MQ_OFFSET \$p\" >> '$out'");
	ok(wait_until(sub { lines_of($out) >= 20 }), 'parts: 20 messages processed') or show_log('parts');
	my ($rc) = stop_worker($h);
	is($rc, 0, 'parts: exit status 0 after SIGTERM');
	my (%last, @n, $in_order);
	$in_order = 1;
	foreach (lines_of($out))
	{
		my ($p, $o, $n) = /^(\d+) (\d+) \{"n": (\d+)\}$/ or next;
		$in_order = 0 if defined $last{$p} && $o <= $last{$p};
		$last{$p} = $o;
		push @n, $n;
	}
	ok($in_order, 'parts: each partition processed in offset order, one at a time');
	is_deeply([ sort { $a <=> $b } @n ], [ 1 .. 20 ], 'parts: each message processed once');
	is($node->safe_psql('postgres', "SELECT count(*) FROM mq.poll('parts', 'g', 'other', 100)"),
		'0', 'parts: all committed (the worker left; a new member gets nothing)');
}

# ---- 6. options ------------------------------------------------------------
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ $worker, '--help' ], '>', \$out, '2>', \$err);
	is($?, 0, '--help exits 0');
	foreach my $opt (qw(--dsn --connection --queue --concurrency --batch --visibility-timeout
		--wait --grace --consumer-id --group --member --progress --quiet --help
		MQ_QUEUE MQ_MSG_ID MQ_RECEIPT MQ_KEY MQ_ATTEMPTS MQ_HEADERS MQ_ENQUEUED_AT))
	{
		like($out, qr/\Q$opt\E/, "--help documents $opt");
	}

	IPC::Run::run([ $worker, '--dsn', $dsn, '--queue', 'nosuchqueue', '--', 'true' ],
		'<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout($timeout));
	is($? >> 8, 1, 'an unknown queue exits 1');
	like($err, qr/queue "nosuchqueue" does not exist/, 'and says so');

	IPC::Run::run([ $worker, '--queue', 'acks', '--concurrency', '0', '--', 'true' ],
		'<', \undef, '>', \$out, '2>', \$err);
	is($? >> 8, 2, 'a bad option value exits 2');

	if (!mq_has_poll($node))
	{
		IPC::Run::run([ $worker, '--dsn', $dsn, '--queue', 'acks', '--group', 'g', '--', 'true' ],
			'<', \undef, '>', \$out, '2>', \$err, IPC::Run::timeout($timeout));
		is($? >> 8, 1, '--group without mq.poll exits 1');
		like($err, qr/partitioned queues need mq\.poll \(not in this version\)/,
			'--group without mq.poll says why');
	}
}

$node->stop;
done_testing();
