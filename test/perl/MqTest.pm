# test/perl/MqTest.pm: scaffolding shared by mq's TAP tests (test/t/*.pl):
# a node with mq, and the installed mq-worker run against it with a log of
# its own.  A test loads it with
#
#   use FindBin;
#   use lib "$FindBin::RealBin/../perl";
#   use MqTest;
#
# since PGXS's prove puts only the source directory and PostgreSQL's
# src/test/perl on @INC (PG_PROVE_FLAGS), and a test may also be run by
# hand with prove or perl from anywhere.  One test file is one process with
# one node and one worker binary, so the worker's connection and logs are
# kept here rather than passed to every call.
package MqTest;

use strict;
use warnings;

use Exporter 'import';
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;
use Time::HiRes qw(time usleep);

our @EXPORT = qw(mq_node mq_has_poll mq_worker_setup start_worker stop_worker
  worker_log show_log lines_of wait_until);

# what start_worker runs, with what, and where its logs went
my ($worker, $dsn, $log_prefix, %logs);

# mq_node(NAME): a started node with mq preloaded (long polls are woken
# through shared memory, the background workers run) and CREATE EXTENSION mq
# done in database postgres.
sub mq_node
{
	my ($name) = @_;
	my $node = PostgreSQL::Test::Cluster->new($name);
	$node->init;
	$node->append_conf('postgresql.conf', "shared_preload_libraries = 'mq'");
	$node->start;
	$node->safe_psql('postgres', 'CREATE EXTENSION mq');
	return $node;
}

# mq_has_poll(NODE): whether this mq has mq.poll (partitioned queues), which
# the worker's --group mode needs.
sub mq_has_poll
{
	my ($node) = @_;
	return $node->safe_psql('postgres',
		"SELECT EXISTS (SELECT FROM pg_proc WHERE proname = 'poll' AND pronamespace = 'mq'::regnamespace)"
	) eq 't';
}

# mq_worker_setup(NAME): for a test of mq-worker, the one `make install` put
# in pg_config's bindir (the test's first check: the test stops if it is
# missing), and mq_node(NAME) for it to work on.  Returns (node, path of
# mq-worker, conninfo of database postgres); start_worker uses the last two.
sub mq_worker_setup
{
	my ($name) = @_;
	local $Test::Builder::Level = $Test::Builder::Level + 1;
	my $bindir = `pg_config --bindir`;
	chomp $bindir;
	$worker = "$bindir/mq-worker";
	ok(-x $worker, "mq-worker is installed in $bindir")
	  or BAIL_OUT("mq-worker not found in $bindir: run make install");
	my $node = mq_node($name);
	$dsn = $node->connstr('postgres');
	$log_prefix = "mq_$name";
	return ($node, $worker, $dsn);
}

# start_worker(NAME, ARGS...): mq-worker ARGS in the background, connected
# with --dsn to mq_worker_setup's node unless ARGS hold '--no-dsn' (which is
# dropped: the test gives the connection itself, or DATABASE_URL does).
# stdout and stderr are appended to the log worker_log(NAME), in the test's
# log directory.  Returns the IPC::Run handle, whose timeout (3x the TAP
# default) ends a worker that never stops.
sub start_worker
{
	my ($name, @args) = @_;
	my $log = $PostgreSQL::Test::Utils::log_path . "/${log_prefix}_$name.log";
	$logs{$name} = $log;
	my @conn = grep({ $_ eq '--no-dsn' } @args) ? () : ('--dsn', $dsn);
	@args = grep { $_ ne '--no-dsn' } @args;
	return IPC::Run::start([ $worker, @conn, @args ],
		'<', \undef, '>>', $log, '2>>', $log,
		IPC::Run::timeout(3 * $PostgreSQL::Test::Utils::timeout_default));
}

# stop_worker(HANDLE): SIGTERM, then wait for the exit.  Returns its exit
# code; in list context (exit code, seconds the stop took), for checks of
# the grace period.
sub stop_worker
{
	my ($h) = @_;
	my $t0 = time;
	$h->signal('TERM');
	$h->finish;
	return wantarray ? ($h->result(0), time - $t0) : $h->result(0);
}

# worker_log(NAME): the log file of start_worker(NAME).
sub worker_log
{
	my ($name) = @_;
	return $logs{$name};
}

# show_log(NAME): the log of start_worker(NAME) as a diagnostic, for a check
# that failed.
sub show_log
{
	my ($name) = @_;
	diag("mq-worker log ($name):\n" . slurp_file($logs{$name}))
	  if $logs{$name} && -e $logs{$name};
}

# lines_of(FILE): the lines of FILE, none while it does not exist yet (the
# commands of a test write them); in scalar context their number.
sub lines_of
{
	my ($file) = @_;
	my @l = -e $file ? split(/\n/, slurp_file($file)) : ();
	return @l;
}

# wait_until(COND): call COND every 50 ms until it returns true or the TAP
# timeout passed; returns its last value (false on timeout).  Tests wait on
# what the database, the worker or its commands did, never a fixed time.
sub wait_until
{
	my ($cond) = @_;
	my $deadline = time + $PostgreSQL::Test::Utils::timeout_default;
	while (time < $deadline)
	{
		my $v = $cond->();
		return $v if $v;
		usleep(50_000);
	}
	return 0;
}

1;
