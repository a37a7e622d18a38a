# A session's claims are released when the session ends, registered or not
# (mq.release_on_session_end, on by default), with the attempt counted.
#
# The messages are claimed for 10 minutes and the background maintenance
# runs once an hour (mq.maintenance_interval), so a message readable again
# within the test's wait was released by its session's end, through the
# pass the ending session asks the launcher for, not by its visibility
# timeout nor by a periodic pass.  The elapsed times are printed (diag),
# not asserted: a bound on the clock would fail under load.
#
#   1. an unregistered session that claims, then quits;
#   2. ... is terminated (pg_terminate_backend);
#   3. ... loses its client (psql killed with SIGKILL: the connection drops);
#   4. ... is cut by an immediate restart of the server (claims from
#      before the restart);
#   5. with mq.release_on_session_end off, claims outlive their session;
#   6. an unregistered group member's partition leases are freed when the
#      session that polled ends, though a heartbeat came from another one;
#   7. mq-worker with a long command (sleep 60), killed with SIGKILL: its
#      message is readable by another reader, its command is gone (the
#      watchdog killed it: no second concurrent run), and the worker's
#      long-polling read (its second slot) did not keep the session alive
#      for its 600 s wait;
#   8. mq-worker's control connection terminated while a command runs:
#      nothing is released (the claim belongs to the read connection's
#      session), the worker reconnects and acks;
#   9. mq-worker's read connection terminated while a command runs: the
#      claim is released, another reader takes the message, and the
#      worker's late ack is refused as stale, which its log says;
#  10. more sessions end than there are records, with no maintenance
#      meanwhile: no release is lost.
# Every wait polls, never a fixed sleep.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

my $bindir = `pg_config --bindir`;
chomp $bindir;
my $mq_worker = "$bindir/mq-worker";
my $dir = PostgreSQL::Test::Utils::tempdir;
my $timeout = $PostgreSQL::Test::Utils::timeout_default;

my $node = PostgreSQL::Test::Cluster->new('session_end');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'mq'
mq.database = 'postgres'
mq.maintenance_interval = '1h'
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION mq;
SELECT mq.create_queue('jobs', visibility_timeout => '10 minutes');
});

sub send_two
{
	$node->safe_psql('postgres', "SELECT mq.send('jobs', '{}') FROM generate_series(1, 2)");
}

# An unregistered session that claims both messages; returns it and its pid.
sub claimer
{
	my $bg = $node->background_psql('postgres');
	my $pid = $bg->query_safe('SELECT pg_backend_pid()');
	is($bg->query_safe("SELECT count(*) FROM mq.read('jobs', 10)"), '2',
		'an unregistered session claims two messages');
	return ($bg, $pid);
}

# Poll until both messages are read again at attempt 2 (and ack them);
# says how long it took from $t0.
sub released
{
	my ($what, $t0) = @_;
	my $ok = $node->poll_query_until('postgres', q{
WITH r AS (SELECT * FROM mq.read('jobs', 10))
SELECT count(*) FILTER (WHERE attempts = 2 AND mq.ack('jobs', msg_id)) = 2 FROM r});
	diag(sprintf('%s: readable again after %.2f s', $what, time - $t0));
	return $ok;
}

# 1. quits
send_two();
my ($bg, $pid) = claimer();
my $t0 = time;
$bg->quit;
ok(released('quit', $t0), 'quit: its claims are released at once, attempt counted');

# 2. terminated
send_two();
($bg, $pid) = claimer();
$t0 = time;
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok(released('terminated', $t0), 'pg_terminate_backend: its claims are released');
eval { $bg->quit };

# 3. its client is killed: the backend sees the connection drop and exits
send_two();
($bg, $pid) = claimer();
$t0 = time;
$bg->{run}->signal('KILL');
eval { $bg->{run}->finish };
ok(released('client killed', $t0), 'client killed with SIGKILL: its claims are released');

# 4. an immediate restart of the server
send_two();
($bg, $pid) = claimer();
$node->stop('immediate');
eval { $bg->{run}->finish };
$t0 = time;
$node->start;
ok(released('immediate restart', $t0),
	'immediate restart: the claims from before it are released by the first pass');

# 5. opted out: plain visibility-timeout semantics
send_two();
$bg = $node->background_psql('postgres');
$bg->query_safe('SET mq.release_on_session_end = off');
is($bg->query_safe("SELECT count(*) FROM mq.read('jobs', 10)"), '2', 'an opted-out session claims two');
$bg->quit;
$node->safe_psql('postgres', 'SELECT mq.maintain()');
is($node->safe_psql('postgres', "SELECT count(*) FROM mq.read('jobs', 10)"), '0',
	'mq.release_on_session_end off: its claims outlive the session');
$node->safe_psql('postgres', 'SELECT mq.purge(\'jobs\')');

# 6. an unregistered group member's partitions are freed when the session
# that polled ends, though another session sent its heartbeat meanwhile
$node->safe_psql('postgres', "SELECT mq.create_queue('log', partitions => 2, session_timeout => '1 hour')");
$bg = $node->background_psql('postgres');
$bg->query_safe("SELECT count(*) FROM mq.poll('log', 'g', 'm1')");
is($node->safe_psql('postgres', "SELECT count(*) FROM mq.consumer_groups WHERE member = 'm1'"),
	'2', 'an unregistered member m1 holds both partitions');
is($node->safe_psql('postgres', "SELECT mq.heartbeat('log', 'g', 'm1')"), '2',
	'a heartbeat for m1 from another session');
$bg->quit;
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM mq.consumer_groups WHERE member IS NOT NULL"),
	'its partitions are freed when the polling session ends');
is($node->safe_psql('postgres', "SELECT mq.heartbeat('log', 'g', 'm2')"), '2',
	'another member takes them at once');

# ---- mq-worker ------------------------------------------------------------
SKIP:
{
	skip "mq-worker not installed in $bindir", 1 unless -x $mq_worker;
	# the tests' PGAPPNAME would override mq-worker's fallback_application_name
	my $dsn = $node->connstr('postgres') . ' application_name=mq-worker';
	$node->safe_psql('postgres', "SELECT mq.create_queue('work', visibility_timeout => '10 minutes')");

	# a command that records its pid, then waits for $go (or 60 s)
	sub start_worker
	{
		my ($name, $concurrency, $go) = @_;
		my $log = $PostgreSQL::Test::Utils::log_path . "/mq_worker_$name.log";
		unlink "$dir/$name.pid";
		my $h = IPC::Run::start(
			[
				$mq_worker, '--dsn', $dsn, '--queue', 'work',
				'--concurrency', $concurrency, '--visibility-timeout', '600', '--wait', '600',
				'--', 'sh', '-c',
				"echo \$\$ > '$dir/$name.pid'; i=0; while [ ! -e '$go' ] && [ \$i -lt 600 ]; do sleep 0.1; i=\$((i+1)); done"
			],
			'<', \undef, '>>', $log, '2>>', $log);
		return ($h, $log);
	}

	sub wait_file
	{
		my ($file) = @_;
		my $deadline = time + $timeout;
		while (time < $deadline)
		{
			return 1 if -s $file;
			usleep(20_000);
		}
		return 0;
	}

	sub command_pid
	{
		my ($name) = @_;
		my $p = slurp_file("$dir/$name.pid");
		chomp $p;
		return $p;
	}

	# 7. kill -9 of mq-worker running a long command
	$node->safe_psql('postgres', "SELECT mq.send('work', '{}')");
	my ($h, $log) = start_worker('killed', 2, "$dir/never");
	ok(wait_file("$dir/killed.pid"), 'mq-worker runs the command');
	my $cmd = command_pid('killed');
	# the second slot's read is waiting (600 s long poll)
	ok($node->poll_query_until('postgres', q{
SELECT count(*) = 1 FROM pg_stat_activity WHERE application_name = 'mq-worker' AND query LIKE '%mq.read%' AND state = 'active'}),
		'its second slot waits in a long-polling read');
	$t0 = time;
	$h->signal('KILL');
	eval { $h->finish };
	ok($node->poll_query_until('postgres', q{
SELECT count(*) = 1 FROM mq.read('work', 1) WHERE attempts = 2}),
		'mq-worker killed with SIGKILL: its message is readable by another reader');
	diag(sprintf('mq-worker killed: message readable again after %.2f s', time - $t0));
	my $deadline = time + $timeout;
	usleep(20_000) while kill(0, $cmd) && time < $deadline;
	ok(!kill(0, $cmd), 'its command died with it (no second concurrent run)');
	ok($node->poll_query_until('postgres',
			"SELECT count(*) = 0 FROM pg_stat_activity WHERE application_name = 'mq-worker'"),
		'both of its sessions ended, the long-polling one before its wait was over');
	$node->safe_psql('postgres', "SELECT mq.purge('work')");

	# 8. the control connection drops: nothing is released
	$node->safe_psql('postgres', "SELECT mq.send('work', '{}')");
	($h, $log) = start_worker('ctl', 1, "$dir/ctl.go");
	ok(wait_file("$dir/ctl.pid"), 'mq-worker runs the command');
	# its connections: the read connection first, then the control one
	my ($read_pid, $ctl_pid) = split /\n/, $node->safe_psql('postgres', q{
SELECT pid FROM pg_stat_activity WHERE application_name = 'mq-worker' ORDER BY backend_start, pid});
	$node->safe_psql('postgres', "SELECT pg_terminate_backend($ctl_pid)");
	$node->safe_psql('postgres', 'SELECT mq.maintain()');
	is($node->safe_psql('postgres', "SELECT count(*) FROM mq.read('work', 1)"), '0',
		'control connection terminated: the running message stays claimed');
	# it notices when it next uses the connection: the ack, after the command
	open my $fh, '>', "$dir/ctl.go" or die;
	close $fh;
	ok($node->poll_query_until('postgres',
			"SELECT count(*) = 0 FROM mq.metrics('work') WHERE depth + in_flight > 0"),
		'the command ends and the worker acks its message over a new control connection');
	ok(grep(/^\Q$read_pid\E$/, split /\n/, $node->safe_psql('postgres',
				"SELECT pid FROM pg_stat_activity WHERE application_name = 'mq-worker'")),
		'it kept its read connection');
	$h->signal('TERM');
	$h->finish;
	like(slurp_file($log), qr/connection lost during mq\.ack; reconnecting/, 'its log says it reconnected');
	unlike(slurp_file($log), qr/refused/, 'no ack was refused');

	# 9. the read connection drops: released, and the late ack is refused
	$node->safe_psql('postgres', "SELECT mq.send('work', '{}')");
	($h, $log) = start_worker('read', 1, "$dir/read.go");
	ok(wait_file("$dir/read.pid"), 'mq-worker runs the command');
	($read_pid) = split /\n/, $node->safe_psql('postgres', q{
SELECT pid FROM pg_stat_activity WHERE application_name = 'mq-worker' ORDER BY backend_start, pid});
	$node->safe_psql('postgres', "SELECT pg_terminate_backend($read_pid)");
	ok($node->poll_query_until('postgres', q{
SELECT count(*) = 1 FROM mq.read('work', 1) WHERE attempts = 2}),
		'read connection terminated: its running message is released to another reader');
	open $fh, '>', "$dir/read.go" or die;
	close $fh;
	$deadline = time + $timeout;
	usleep(50_000) while slurp_file($log) !~ /refused/ && time < $deadline;
	like(slurp_file($log), qr/ack of message \d+ refused: its receipt is stale/,
		"the worker's late ack is refused, and its log says why");
	$h->signal('TERM');
	$h->finish;
	is($h->result(0), 0, 'the worker carried on and stops cleanly');
}

$node->stop;

# 10. the records of ended sessions are full: none is lost.  No background
# maintenance here (mq.database = ''), so records pile up; a session
# claims two messages and ends, then 1,100 sessions that claim nothing
# come and go (pgbench, a connection per transaction), overflowing the
# 1,024 records: the database gives them up for a sweep, and the next
# mq.maintain() still releases the first session's claims.
my $full = PostgreSQL::Test::Cluster->new('records_full');
$full->init;
$full->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'mq'
mq.database = ''
max_connections = 20
});
$full->start;
$full->safe_psql('postgres', q{
CREATE EXTENSION mq;
SELECT mq.create_queue('jobs', visibility_timeout => '1 hour');
SELECT mq.send('jobs', '{}') FROM generate_series(1, 2);
SELECT mq.maintain();
});
is($full->safe_psql('postgres', "SELECT count(*) FROM mq.read('jobs', 10)"), '2',
	'a session claims two messages and ends');
my $script = "$dir/churn.sql";
open my $sfh, '>', $script or die;
print $sfh "SELECT count(*) FROM mq.read('jobs', 1);\n";
close $sfh;
$full->command_ok([ 'pgbench', '-n', '-C', '-c', '2', '-t', '550', '-f', $script, 'postgres' ],
	'1,100 sessions that claim nothing come and go');
is($full->safe_psql('postgres', 'SELECT mq.maintain()'), '2',
	'records full: the sweep that replaced them releases the two claims');
is($full->safe_psql('postgres', "SELECT count(*) FROM mq.read('jobs', 10) WHERE attempts = 2"), '2',
	'both are readable again, attempt counted');
$full->stop;
done_testing();
