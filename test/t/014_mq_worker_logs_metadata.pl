# mq-worker (issue 13): --log-format json, and message metadata too large
# for the environment.
#   1. --log-format json: every line of stderr is one JSON object (parsed
#      with JSON::PP) with time, level, pid, msg, queue and consumer_id;
#      lines about a message carry msg_id (or partition and offset) and
#      the command's exit_status; the default stays text;
#   2. a message whose key and a header value are 200 KB each (Linux
#      refuses an environment string over 128 KiB: execve failed with
#      E2BIG) runs: MQ_KEY and MQ_HEADERS are unset and MQ_KEY_FILE and
#      MQ_HEADERS_FILE name files holding them, removed once the command
#      ended; short values stay in the environment, with no *_FILE.
# The worker is the installed one (pg_config's bindir).  Waits poll the
# database or files, never a fixed sleep.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";
use IPC::Run;
use JSON::PP;
use MqTest;
use PostgreSQL::Test::Utils;
use Test::More;

my ($node, $worker) = mq_worker_setup('worker_logs');
my $dir = PostgreSQL::Test::Utils::tempdir;

# Every line of a log parsed as JSON; dies on the first that is not.
sub json_lines
{
	my ($name) = @_;
	my @objects;
	foreach my $line (lines_of(worker_log($name)))
	{
		my $o = eval { JSON::PP->new->decode($line) };
		if (!defined $o || ref $o ne 'HASH')
		{
			fail("$name: a log line that is not a JSON object: $line");
			return ();
		}
		push @objects, $o;
	}
	return @objects;
}

# ---- 1. --log-format json --------------------------------------------------
{
	# a work queue: the first delivery fails (exit 3 would stop the
	# worker: exit 5), the second succeeds
	$node->safe_psql('postgres',
		"SELECT mq.create_queue('jl', retry_delay => '0 seconds')");
	my $msg_id = $node->safe_psql('postgres', "SELECT mq.send('jl', '{\"n\": 1}')");
	my $out = "$dir/jl.out";
	my $h = start_worker('jl', '--queue', 'jl', '--wait', '1', '--log-format', 'json',
		'--', 'sh', '-c',
		"if [ \"\$MQ_ATTEMPTS\" = 1 ]; then exit 5; fi; cat >> '$out'");
	ok(wait_until(sub { scalar(lines_of($out)) >= 1 }), 'jl: processed at the second attempt')
	  or show_log('jl');
	is(stop_worker($h), 0, 'jl: exit status 0 after SIGTERM');
	my @o = json_lines('jl');
	cmp_ok(scalar(@o), '>=', 3, 'jl: start, failure and stop lines, each a JSON object');
	my @bad = grep {
		!(     defined $_->{time}
			&& $_->{time} =~ /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/
			&& ($_->{level} // '') =~ /^(info|warning|error)$/
			&& ($_->{pid} // '') =~ /^\d+$/
			&& defined $_->{msg}
			&& ($_->{queue} // '') eq 'jl'
			&& defined $_->{consumer_id})
	} @o;
	is(scalar(@bad), 0, 'jl: every line has time, level, pid, msg, queue, consumer_id')
	  or diag(explain(\@bad));
	my ($nack) = grep { ($_->{msg} // '') =~ /nacked/ } @o;
	ok($nack, 'jl: a line for the failed attempt') or show_log('jl');
	is($nack->{msg_id}, $msg_id, 'jl: it carries the msg_id as a number');
	is($nack->{exit_status}, 5, 'jl: and the exit status');
	is($nack->{level}, 'info', 'jl: at level info');
	my ($stop) = grep { ($_->{msg} // '') =~ /^stopped:/ } @o;
	ok($stop && !exists $stop->{msg_id}, 'jl: the last line is about no message');

	# partitioned mode: partition and offset, group and member
	$node->safe_psql('postgres', "SELECT mq.create_queue('jp', partitions => 1)");
	$node->safe_psql('postgres', "SELECT mq.send('jp', '{\"n\": 1}')");
	my $marker = "$dir/jp.failed";
	$out = "$dir/jp.out";
	$h = start_worker('jp', '--queue', 'jp', '--group', 'g', '--member', 'm', '--wait', '1',
		'--log-format', 'json', '--', 'sh', '-c',
		"if [ ! -e '$marker' ]; then touch '$marker'; echo 'first \"try\"\tfailed' >&2; exit 4; fi; cat >> '$out'");
	ok(wait_until(sub { scalar(lines_of($out)) >= 1 }), 'jp: processed after a retry')
	  or show_log('jp');
	is(stop_worker($h), 0, 'jp: exit status 0 after SIGTERM');
	@o = json_lines('jp');
	my ($retry) = grep { ($_->{msg} // '') =~ /retrying/ } @o;
	ok($retry, 'jp: a line for the failed attempt') or show_log('jp');
	is_deeply([ map { $retry->{$_} } qw(partition offset exit_status group member) ],
		[ 0, 1, 4, 'g', 'm' ], 'jp: it carries partition, offset, exit status, group, member');
	like($retry->{msg}, qr/first "try"\tfailed/, 'jp: the stderr tail in msg, quotes and tab included');

	# text stays the default
	$h = start_worker('jt', '--queue', 'jl', '--wait', '1', '--', 'true');
	wait_until(sub { scalar(lines_of(worker_log('jt'))) >= 1 });
	stop_worker($h);
	like((lines_of(worker_log('jt')))[0], qr/^\d{4}-\d\d-\d\dT\S+Z mq-worker\[\d+\]: consumer /,
		'without --log-format, lines are text');

	my ($err) = ('');
	IPC::Run::run([ $worker, '--queue', 'jl', '--log-format', 'xml', '--', 'true' ],
		'<', \undef, '>', \my $o1, '2>', \$err);
	is($? >> 8, 2, '--log-format xml is bad usage (exit 2)');
	like($err, qr/expected text or json/, 'and says what is expected');
}

# ---- 2. metadata too large for the environment ------------------------------
{
	my $tmp = "$dir/spill";
	mkdir $tmp or die;
	$node->safe_psql('postgres', "SELECT mq.create_queue('big')");
	my $key = 'k' x 200_000;
	$node->safe_psql('postgres',
		"SELECT mq.send('big', '{\"n\": 1}', repeat('k', 200000), jsonb_build_object('h', repeat('v', 200000)))");
	$node->safe_psql('postgres',
		"SELECT mq.send('big', '{\"n\": 2}', 'short', '{\"h\": \"v\"}')");
	my $out = "$dir/big.out";
	# per message: n, key length from where it is, headers' h length, and
	# which variables are set
	my $cmd = q{n=$(cat | sed 's/[^0-9]//g'); }
	  . q{if [ -n "${MQ_KEY_FILE+x}" ]; then k=$(wc -c < "$MQ_KEY_FILE"); ks=file; else k=${#MQ_KEY}; ks=env; fi; }
	  . q{if [ -n "${MQ_HEADERS_FILE+x}" ]; then h=$(wc -c < "$MQ_HEADERS_FILE"); hs=file; else h=${#MQ_HEADERS}; hs=env; fi; }
	  . q{echo "$n $ks $k $hs $h ${MQ_KEY+key_set} ${MQ_HEADERS+headers_set} $MQ_KEY_FILE" >> } . "'$out'";
	local $ENV{TMPDIR} = $tmp;
	my $h = start_worker('big', '--queue', 'big', '--wait', '1', '--', 'sh', '-c', $cmd);
	ok(wait_until(sub { scalar(lines_of($out)) >= 2 }), 'big: both messages ran')
	  or show_log('big');
	is(stop_worker($h), 0, 'big: exit status 0 after SIGTERM');
	my %by_n = map { my @f = split / /; ($f[0] => [@f]) } lines_of($out);
	my $b1 = $by_n{1} // [];
	is_deeply([ @$b1[ 1 .. 6 ] ], [ 'file', 200000, 'file', 200009, '', '' ],
		'big: the 200 KB key and headers came in MQ_KEY_FILE and MQ_HEADERS_FILE, MQ_KEY and MQ_HEADERS unset')
	  or diag(slurp_file($out));
	like($b1->[7] // '', qr/^\Q$tmp\E\/mq-worker-MQ_KEY-/, 'big: the file is in $TMPDIR');
	is_deeply([ @{ $by_n{2} // [] }[ 1 .. 6 ] ], [ 'env', 5, 'env', 10, 'key_set', 'headers_set' ],
		'big: short values stay in MQ_KEY and MQ_HEADERS, no *_FILE');
	is($node->safe_psql('postgres',
			"SELECT total_acked || ' ' || depth || ' ' || dead_lettered FROM mq.metrics('big')"),
		'2 0 0', 'big: both acked, none dead-lettered');
	my @left = glob("$tmp/*");
	is_deeply(\@left, [], 'big: the files are removed once the commands ended');
}

$node->stop;
done_testing();
