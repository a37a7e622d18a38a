# mq-worker in partitioned mode across a rebalance (issue 13): a member
# that starts while the first one runs commands must not get a partition
# before the first one finished and committed what it polled of it.
#
# Member a (concurrency 2) runs the first offset of both partitions of a
# queue, each command held until the test lets it go, so that it does not
# poll but heartbeats; member b starts meanwhile, and a
# syncs with the group (renews its leases) after b joined, which is when a
# rebalance used to hand partition 1 over at once.  Then more messages are
# sent to both partitions and the commands are let go.  Every command
# appends "start|end PARTITION OFFSET MEMBER PID" to a ledger; from it the
# test checks that
#   - no offset ran twice (so none ran twice at the same time, and nothing
#     committed was run again),
#   - the runs of one partition never overlap and go in offset order,
#   - partition 1 stayed leased to a while its command ran,
#   - b did get a partition once a's work on it was done.
# Waits poll the database or the ledger, never a fixed sleep.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";
use MqTest;
use PostgreSQL::Test::Utils;
use Test::More;

my ($node) = mq_worker_setup('worker_handover');
my $dir = PostgreSQL::Test::Utils::tempdir;

# Keys that go to partition 0 and to partition 1 of a 2-partition queue
# (hash(key) mod 2, found by sending them to a scratch queue).
$node->safe_psql('postgres', "SELECT mq.create_queue('probe', partitions => 2)");
$node->safe_psql('postgres',
	"SELECT mq.send('probe', '{}', 'k' || i) FROM generate_series(1, 20) i");
my %key_of;
foreach (split /\n/,
	$node->safe_psql('postgres',
		"SELECT partition, key FROM mq.poll('probe', 'g', 'm', 100) ORDER BY \"offset\""))
{
	my ($p, $k) = split /\|/;
	$key_of{$p} //= $k;
}
ok(defined $key_of{0} && defined $key_of{1}, 'a key for each partition');

# One run of the scenario above, on queue $q, member a with concurrency
# $concurrency: 2 keeps both its slots busy (it only heartbeats), 3 leaves
# one free (it polls meanwhile, and must not take new offsets of the
# partition it is to give back).
sub handover
{
	my ($q, $concurrency) = @_;

	$node->safe_psql('postgres',
		"SELECT mq.create_queue('$q', partitions => 2, session_timeout => '3 seconds')");
	my $queue_id = $node->safe_psql('postgres',
		"SELECT queue_id FROM mq.queue WHERE queue_name = '$q'");
	my $send_to = sub {
		my ($p, $n) = @_;
		$node->safe_psql('postgres',
			"SELECT mq.send('$q', jsonb_build_object('n', i), '$key_of{$p}') FROM generate_series(1, $n) i");
	};
	$send_to->(0, 1);
	$send_to->(1, 1);

	my $ledger = "$dir/$q.ledger";
	my $hold = "$dir/$q.hold";
	open(my $fh, '>', $hold) or die;
	close($fh);
	# offset 1 of each partition waits for the test; the others run at once
	my $cmd = "echo \"start \$MQ_PARTITION \$MQ_OFFSET \$MQ_MEMBER \$\$\" >> '$ledger'; "
	  . "if [ \"\$MQ_OFFSET\" = 1 ]; then while [ -e '$hold' ]; do sleep 0.05; done; fi; "
	  . "echo \"end \$MQ_PARTITION \$MQ_OFFSET \$MQ_MEMBER \$\$\" >> '$ledger'";

	my $wa = start_worker("$q-a", '--queue', $q, '--group', 'g', '--member', 'a',
		'--concurrency', $concurrency, '--wait', '1', '--', 'sh', '-c', $cmd);
	ok(wait_until(sub { scalar(grep { /^start/ } lines_of($ledger)) >= 2 }),
		"$q: a runs offset 1 of both partitions")
	  or show_log("$q-a");

	my $wb = start_worker("$q-b", '--queue', $q, '--group', 'g', '--member', 'b',
		'--concurrency', '3', '--wait', '1', '--', 'sh', '-c', $cmd);
	ok( wait_until(
			sub {
				$node->safe_psql('postgres',
					"SELECT count(*) FROM mq.group_member WHERE queue_id = $queue_id AND consumer_group = 'g' AND member = 'b'"
				) == 1;
			}),
		"$q: b joined the group");
	my $joined = $node->safe_psql('postgres', 'SELECT clock_timestamp()');

	# a renews its leases (every quarter of the session timeout) in the same
	# sync that rebalances: after that, a rebalance that does not wait has
	# handed partition 1 over
	ok( wait_until(
			sub {
				$node->safe_psql('postgres',
					"SELECT bool_and(lease_until > '$joined'::timestamptz + interval '3 seconds') "
					  . "FROM mq.group_partition WHERE queue_id = $queue_id AND consumer_group = 'g' AND member = 'a'"
				) eq 't';
			}),
		"$q: a synced with the group after b joined");
	my $owner = $node->safe_psql('postgres',
		"SELECT coalesce(member, '(none)') FROM mq.group_partition WHERE queue_id = $queue_id AND consumer_group = 'g' AND partition = 1"
	);
	if ($owner ne 'a')
	{
		# the hand-over happened at once: let b run what it got, so that the
		# ledger shows it (the old behaviour)
		wait_until(sub { scalar(grep { /^start 1 1 b/ } lines_of($ledger)) });
	}
	is($owner, 'a', "$q: partition 1 stays leased to a while its offset 1 runs there");

	# later offsets of both partitions, sent while offset 1 still runs
	$send_to->(0, 3);
	$send_to->(1, 3);
	unlink $hold;
	ok(wait_until(sub { scalar(grep { /^end/ } lines_of($ledger)) >= 8 }),
		"$q: all 8 messages processed")
	  or show_log("$q-a"), show_log("$q-b");
	ok( wait_until(
			sub {
				$node->safe_psql('postgres',
					"SELECT string_agg(committed_offset::text, ',' ORDER BY partition) FROM mq.consumer_groups WHERE queue_name = '$q' AND consumer_group = 'g'"
				) eq '4,4';
			}),
		"$q: both partitions committed through offset 4");
	$wa->signal('TERM');
	$wb->signal('TERM');
	$wa->finish;
	$wb->finish;

	# the ledger
	my (%runs, %running, %last_start, @overlap, @order, $b_ran);
	foreach (lines_of($ledger))
	{
		my ($what, $p, $o, $m, $pid) = split / /;
		if ($what eq 'start')
		{
			$runs{"$p $o"}++;
			push @overlap, "$p $o ($m) started while $running{$p} ran" if $running{$p};
			push @order, "$p $o after $last_start{$p}"
			  if defined $last_start{$p} && $o <= $last_start{$p};
			$running{$p} = "$p $o ($m)";
			$last_start{$p} = $o;
			$b_ran = 1 if $m eq 'b';
		}
		else
		{
			$running{$p} = undef;
		}
	}
	is_deeply([ grep { $runs{$_} > 1 } sort keys %runs ], [],
		"$q: no offset ran twice (none twice at once, nothing committed run again)");
	is(scalar(keys %runs), 8, "$q: each of the 8 offsets ran");
	is_deeply(\@overlap, [], "$q: the runs of a partition never overlap");
	is_deeply(\@order, [], "$q: a partition runs in offset order");
	ok($b_ran, "$q: b got a partition once a was done with it");
	if (!Test::More->builder->is_passing)
	{
		diag("ledger:\n" . slurp_file($ledger));
		show_log("$q-a");
		show_log("$q-b");
	}
}

handover('hand2', 2);
handover('hand3', 3);

$node->stop;
done_testing();
