# mq-worker in production conditions (issue 13, "Liveness by default"):
#   1. kill -9 of the worker: its running command, and what that command
#      started, die with it within 2 s (no second copy of a job runs while
#      the message is delivered again);
#   2. SIGHUP drains like SIGTERM (running commands finish and are acked,
#      exit 0) instead of killing the worker with status 129;
#   3. a command that cannot be executed stops the worker with exit 3 and
#      gives its message back (not nacked): a missing program is refused
#      before anything is claimed; an exec failure, or exit 127 or 126 of
#      a command, releases the message at once (in partitioned mode: does
#      not commit its offset);
#   4. conventions: --version; DATABASE_URL and a conninfo argument; no
#      session-level SET on the worker's connections.
# The worker is the installed one (pg_config's bindir).  Waits poll the
# database, files or processes, never a fixed sleep.
use strict;
use warnings;

use FindBin;
use lib "$FindBin::RealBin/../perl";
use IPC::Run;
use MqTest;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my ($node, $worker) = mq_worker_setup('worker_prod');
my $dir = PostgreSQL::Test::Utils::tempdir;

sub alive
{
	my ($pid) = @_;
	return 0 unless $pid;
	# a zombie waiting for its (new) parent counts as gone
	my $stat = -e "/proc/$pid/stat" ? slurp_file("/proc/$pid/stat") : '';
	return 0 if $stat eq '' || $stat =~ /^\d+ \(.*\) [ZX] /s;
	return kill(0, $pid) ? 1 : 0;
}

sub gone_within
{
	my ($seconds, @pids) = @_;
	my $deadline = time + $seconds;
	while (time < $deadline)
	{
		return 1 unless grep { alive($_) } @pids;
		usleep(20_000);
	}
	return 0;
}

sub metrics
{
	my ($queue) = @_;
	return $node->safe_psql('postgres',
		"SELECT total_acked || ' ' || depth || ' ' || in_flight FROM mq.metrics('$queue')");
}

# ---- 1. kill -9: the command dies with the worker ---------------------------
SKIP:
{
	skip 'parent-death signal is Linux-only', 4 unless $^O eq 'linux';
	$node->safe_psql('postgres', "SELECT mq.create_queue('k9')");
	$node->safe_psql('postgres', q{SELECT mq.send('k9', '{"n": 1}')});
	my $pids = "$dir/k9.pids";
	# the command (sh) and a process it started (sleep): both must go
	my $h = start_worker('k9', '--queue', 'k9', '--', 'sh', '-c',
		"sleep 60 & echo \"\$\$ \$!\" >> '$pids'; wait; echo done >> '$dir/k9.out'");
	ok(wait_until(sub { -s $pids && slurp_file($pids) =~ /\n/ }), 'k9: the command is running') or show_log('k9');
	my ($sh, $sleep) = split ' ', slurp_file($pids);
	ok(alive($sh) && alive($sleep), "k9: command $sh and its child $sleep are alive");
	$h->signal('KILL');
	$h->finish;
	ok(gone_within(2, $sh), "k9: the command (pid $sh) died within 2 s of kill -9 of the worker");
	ok(gone_within(2, $sleep), "k9: what the command started (pid $sleep) died too");
	kill('KILL', $sh, $sleep);
}

# ---- 2. SIGHUP drains --------------------------------------------------------
{
	$node->safe_psql('postgres', "SELECT mq.create_queue('hup')");
	$node->safe_psql('postgres',
		q{SELECT count(*) FROM mq.send_batch('hup', ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}']::jsonb[])});
	my $starts = "$dir/hup.starts";
	my $h = start_worker('hup', '--queue', 'hup', '--concurrency', '2', '--', 'sh', '-c',
		"echo \$MQ_MSG_ID >> '$starts'; sleep 2; cat >> '$dir/hup.out'");
	wait_until(sub { lines_of($starts) >= 2 });
	$h->signal('HUP');
	$h->finish;
	is($h->full_result(0), 0, 'hup: exit status 0 after SIGHUP (not killed by it)') or show_log('hup');
	is(metrics('hup'), '2 1 0', 'hup: the 2 running commands finished and were acked, 1 still queued');
}

# ---- 3. a command that cannot be executed ------------------------------------
# The raw wait status of a worker that must exit on its own within $secs,
# or -1 (then it is killed).
sub exit_within
{
	my ($h, $secs) = @_;
	my $deadline = time + $secs;
	my $pid = $h->{KIDS}[0]{PID};
	while (time < $deadline && kill(0, $pid))
	{
		my $stat = -e "/proc/$pid/stat" ? slurp_file("/proc/$pid/stat") : '';
		last if $stat =~ /^\d+ \(.*\) [ZX] /s;
		usleep(50_000);
	}
	my $stat = -e "/proc/$pid/stat" ? slurp_file("/proc/$pid/stat") : '';
	if ($stat ne '' && $stat !~ /^\d+ \(.*\) [ZX] /s)
	{
		$h->kill_kill;
		$h->finish;
		return -1;
	}
	$h->finish;
	return $h->full_result(0);
}

{
	$node->safe_psql('postgres', "SELECT mq.create_queue('noexec', max_attempts => 10)");
	$node->safe_psql('postgres', q{SELECT mq.send('noexec', '{"n": 1}')});

	# a missing program: refused before anything is claimed
	my $h = start_worker('noexec1', '--queue', 'noexec', '--', "$dir/no-such-program");
	is(exit_within($h, 20), 3 << 8, 'noexec: a missing program exits 3') or show_log('noexec1');
	like(slurp_file(worker_log('noexec1')), qr/cannot execute .*no-such-program/,
		'noexec: and says so');

	# a file that is not executable: refused at startup too
	my $f = "$dir/not-executable.sh";
	open(my $fh, '>', $f) or die;
	print $fh "#!/bin/sh\nexit 0\n";
	close($fh);
	chmod 0644, $f;
	$h = start_worker('noexec2', '--queue', 'noexec', '--', $f);
	is(exit_within($h, 20), 3 << 8, 'noexec: a non-executable file exits 3') or show_log('noexec2');
	is(metrics('noexec'), '0 1 0', 'noexec: nothing was claimed');

	# exec itself fails (the interpreter is missing): found only at the
	# first message, which is released
	$f = "$dir/bad-interpreter.sh";
	open($fh, '>', $f) or die;
	print $fh "#!/no/such/interpreter\nexit 0\n";
	close($fh);
	chmod 0755, $f;
	$h = start_worker('noexec3', '--queue', 'noexec', '--', $f);
	is(exit_within($h, 20), 3 << 8, 'noexec: an exec failure stops the worker with exit 3')
	  or show_log('noexec3');
	like(slurp_file(worker_log('noexec3')), qr/cannot execute .*bad-interpreter/, 'noexec: and says so');
	is(metrics('noexec'), '0 1 0', 'noexec: the message is back in the queue at once');

	# the command runs but says it could not run what it was asked to
	foreach my $code (127, 126)
	{
		$h = start_worker("exit$code", '--queue', 'noexec', '--', 'sh', '-c', "exit $code");
		is(exit_within($h, 20), 3 << 8, "noexec: a command exiting $code stops the worker with exit 3")
		  or show_log("exit$code");
		like(slurp_file(worker_log("exit$code")), qr/exit status $code/, "noexec: the log says exit $code");
		is(metrics('noexec'), '0 1 0', "noexec: after exit $code the message is back at once");
	}
	# partitioned mode: not committed, the worker stops
	if (mq_has_poll($node))
	{
		$node->safe_psql('postgres', "SELECT mq.create_queue('noexec_p', partitions => 1)");
		$node->safe_psql('postgres', q{SELECT mq.send('noexec_p', '{"n": 1}')});
		$h = start_worker('exit127p', '--queue', 'noexec_p', '--group', 'g', '--wait', '1',
			'--', 'sh', '-c', 'exit 127');
		is(exit_within($h, 20), 3 << 8, 'noexec: partitioned mode, exit 127 stops the worker with exit 3')
		  or show_log('exit127p');
		is($node->safe_psql('postgres', "SELECT count(*) FROM mq.poll('noexec_p', 'g', 'other', 10)"),
			'1', 'noexec: partitioned mode, the offset was not committed');
	}

	is($node->safe_psql('postgres',
			"SELECT attempts || ' ' || coalesce(last_error, 'none') FROM mq.read('noexec', 1, wait => '5 s')"),
		'4 none',
		'noexec: the message was released, never nacked (no last_error; its 3 deliveries counted)');
}

# ---- 4. conventions ----------------------------------------------------------
{
	my ($out, $err) = ('', '');
	IPC::Run::run([ $worker, '--version' ], '>', \$out, '2>', \$err);
	is($?, 0, '--version exits 0');
	my $v = $node->safe_psql('postgres', "SELECT extversion FROM pg_extension WHERE extname = 'mq'");
	is($out, "mq-worker $v\n", '--version prints "mq-worker VERSION", the installed extension\'s version');

	IPC::Run::run([ $worker, '--help' ], '>', \$out, '2>', \$err);
	like($out, qr/--version/, '--help documents --version');
	like($out, qr/DATABASE_URL/, '--help documents DATABASE_URL');
	like($out, qr/SIGHUP/, '--help documents SIGHUP');
	like($out, qr/3 when\s+COMMAND cannot be executed/, '--help documents exit status 3');

	$node->safe_psql('postgres', "SELECT mq.create_queue('conn')");
	$node->safe_psql('postgres',
		q{SELECT count(*) FROM mq.send_batch('conn', ARRAY['{"n": 1}', '{"n": 2}']::jsonb[])});

	# DATABASE_URL, as a URI
	my $url = sprintf('postgresql:///postgres?host=%s&port=%d', $node->host, $node->port);
	{
		local $ENV{DATABASE_URL} = $url;
		local $ENV{PGPORT} = '1';    # would fail if PG* were used instead
		local $ENV{PGHOST} = '/nonexistent';
		my $h = start_worker('url', '--no-dsn', '--queue', 'conn', '--', 'sh', '-c',
			"cat >> '$dir/url.out'");
		ok($node->poll_query_until('postgres',
				"SELECT total_acked >= 1 FROM mq.metrics('conn')"),
			'DATABASE_URL: the worker connects with it') or show_log('url');

		# no session-level setting: statement_timeout of the read session
		# stays what the server says outside the read's transaction
		ok( $node->poll_query_until(
				'postgres',
				"SELECT count(*) = 1 FROM pg_stat_activity WHERE wait_event_type = 'Extension' "
				  . "AND query LIKE '%FROM mq.read(%'"),
			'the idle worker waits in a long-polling read');
		$h->signal('TERM');
		$h->finish;
		is($h->result(0), 0, 'DATABASE_URL: exit 0 after SIGTERM');
	}

	# a conninfo as the argument of --dsn wins over DATABASE_URL
	{
		local $ENV{DATABASE_URL} = 'postgresql:///nosuchdb?host=/nonexistent';
		my $h = start_worker('arg', '--queue', 'conn', '--', 'sh', '-c', "cat >> '$dir/arg.out'");
		ok($node->poll_query_until('postgres',
				"SELECT total_acked = 2 FROM mq.metrics('conn')"),
			'--dsn wins over DATABASE_URL') or show_log('arg');
		$h->signal('TERM');
		$h->finish;
		is($h->result(0), 0, '--dsn: exit 0 after SIGTERM');
	}

	# no session-level SET: through a transaction pooler it would stay on
	# the server connection for the next client.  The read's own
	# transaction lifts statement_timeout (SET LOCAL), so a role's
	# statement_timeout shorter than --wait does not cancel the long poll.
	$node->safe_psql('postgres', "CREATE ROLE w LOGIN; GRANT mq_consumer TO w; "
		  . "ALTER ROLE w SET statement_timeout = '1500ms'; ALTER ROLE w SET log_statement = 'all'");
	$node->safe_psql('postgres', "SELECT mq.create_queue('st')");
	my $h = start_worker('st', '--no-dsn', '--dsn', $node->connstr('postgres') . ' user=w',
		'--queue', 'st', '--wait', '3', '--', 'true');
	ok( $node->poll_query_until(
			'postgres',
			"SELECT count(*) = 1 FROM pg_stat_activity WHERE usename = 'w' "
			  . "AND wait_event_type = 'Extension' AND query LIKE '%FROM mq.read(%'"),
		'st: the worker of a role with statement_timeout 1.5 s waits in its read') or show_log('st');
	# more than two whole waits: a read cancelled by the timeout would log
	my $t_end = time + 7;
	usleep(100_000) while time < $t_end;
	unlike(slurp_file(worker_log('st')), qr/statement timeout|canceling statement/,
		'st: a 3 s long-polling read is not cancelled by the 1.5 s statement_timeout');
	$node->safe_psql('postgres', "SELECT mq.send('st', '{}')");
	ok($node->poll_query_until('postgres', "SELECT total_acked = 1 FROM mq.metrics('st')"),
		'st: and it processes messages') or show_log('st');
	$h->signal('TERM');
	$h->finish;
	is($h->result(0), 0, 'st: exit 0 after SIGTERM');
	my @sets = grep { /statement: SET (?!LOCAL)/i } split /\n/, slurp_file($node->logfile);
	is_deeply(\@sets, [], 'st: the worker ran no session-level SET');
}

$node->stop;
done_testing();
