# Consumer liveness (mq preloaded, background worker every 200 ms).
#
# A registered consumer's claims become readable again, with the attempt
# counted, as soon as its session ends, whether it quits, is terminated or
# its backend is killed with SIGKILL (a crash restart); and when it stops
# heartbeating for longer than its timeout while still connected, after
# which its stale receipt can no longer ack.  A dead group member's
# partitions are freed the same way.  The background worker comes back
# after a crash (its launcher is restarted).  Every wait is poll_query_until, never a sleep.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('liveness');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'mq'
mq.maintenance_interval = '200ms'
restart_after_crash = on
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION mq;
SELECT mq.create_queue('jobs', visibility_timeout => '1 hour');
SELECT mq.create_queue('log', partitions => 2, session_timeout => '1 hour');
-- the messages of jobs wherever they are: its segments and delayed table
CREATE VIEW jobs AS SELECT * FROM mq.q_1_0 UNION ALL SELECT * FROM mq.q_1_1
  UNION ALL SELECT * FROM mq.q_1_2 UNION ALL SELECT * FROM mq.q_1_3 UNION ALL SELECT * FROM mq.q_1_d;
});

sub send_two
{
	$node->safe_psql('postgres', "SELECT mq.send('jobs', '{}') FROM generate_series(1, 2)");
}

# Wait until the two messages a dead consumer held are readable again, read
# once more (attempt 2); returns their attempts as "2,2".
sub wait_released
{
	$node->poll_query_until('postgres', q{
SELECT count(*) = 2 FROM mq.read('jobs', 10) WHERE attempts = 2})
	  or return 'not released';
	return '2,2';
}

sub worker_bg
{
	my ($timeout) = @_;
	my $bg = $node->background_psql('postgres');
	$bg->query_safe("SELECT mq.register_consumer('w', '$timeout')");
	my $pid = $bg->query_safe('SELECT pg_backend_pid()');
	is($bg->query_safe("SELECT count(*) FROM mq.read('jobs', 10)"), '2', 'the consumer claims two messages');
	return ($bg, $pid);
}

# 1. the session quits
send_two();
my ($bg, $pid) = worker_bg('1 hour');
is($node->safe_psql('postgres', "SELECT state || ':' || in_flight FROM mq.consumers"),
	'alive:2', 'the registry shows the consumer and its two messages');
$bg->quit;
is(wait_released(), '2,2', 'quit: its messages are readable again, attempt counted');
$node->safe_psql('postgres', "SELECT mq.ack('jobs', msg_id) FROM jobs");

# 2. the session is terminated
send_two();
($bg, $pid) = worker_bg('1 hour');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
is(wait_released(), '2,2', 'terminated: its messages are readable again');
$node->safe_psql('postgres', "SELECT mq.ack('jobs', msg_id) FROM jobs");
eval { $bg->quit };

# 3. heartbeat lapses while connected; the stale receipt cannot ack
send_two();
($bg, $pid) = worker_bg('1 second');
is(wait_released(), '2,2', 'lapsed heartbeat: its messages are readable again');
is($node->safe_psql('postgres', "SELECT DISTINCT state FROM mq.consumers"), 'lapsed',
	'the registry shows the consumer as lapsed');
is($bg->query_safe("SELECT bool_or(mq.ack('jobs', msg_id, 1)) FROM jobs"), 'f',
	'its stale receipts no longer ack');
$bg->quit;
$node->safe_psql('postgres', "SELECT mq.ack('jobs', msg_id) FROM jobs");

# 4. a dead group member's partitions are freed
$bg = $node->background_psql('postgres');
$bg->query_safe("SELECT mq.register_consumer('m1')");
$bg->query_safe("SELECT count(*) FROM mq.poll('log', 'g', 'm1')");
is($node->safe_psql('postgres', "SELECT count(*) FROM mq.consumer_groups WHERE member = 'm1'"),
	'2', 'member m1 holds both partitions');
$bg->quit;
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 0 FROM mq.consumer_groups WHERE member IS NOT NULL"),
	'its partitions are freed when its session ends');
is($node->safe_psql('postgres', "SELECT mq.heartbeat('log', 'g', 'm2')"), '2',
	'another member takes them at once');

# 5. SIGKILL of a consumer backend: crash restart, then release
send_two();
($bg, $pid) = worker_bg('1 hour');
my $worker_pid = $node->safe_psql('postgres',
	"SELECT pid FROM pg_stat_activity WHERE backend_type = 'mq maintenance launcher'");
ok($worker_pid > 0, 'the maintenance launcher runs');
kill 'KILL', $pid;
eval { $bg->quit };
$node->poll_query_until('postgres', 'SELECT true') or die 'no restart';
is(wait_released(), '2,2', 'SIGKILL: after the crash restart its messages are readable again');
ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'mq maintenance launcher' AND pid <> $worker_pid"),
	'the maintenance launcher is back after the crash');

# the messages case 5 read again came back when that reading session ended
$node->safe_psql('postgres', "SELECT mq.purge('jobs')");

# 6. an unregistered reader opted out of release at session end keeps
# plain visibility-timeout semantics (that sessions that did not register
# are released when they end is t/016_session_end_release.pl's)
send_two();
$bg = $node->background_psql('postgres');
$bg->query_safe('SET mq.release_on_session_end = off');
$bg->query_safe("SELECT count(*) FROM mq.read('jobs', 10)");
$bg->quit;
$node->safe_psql('postgres', 'SELECT mq.maintain()');
is($node->safe_psql('postgres', "SELECT count(*) FROM mq.read('jobs', 10)"), '0',
	'an unregistered reader with mq.release_on_session_end off keeps plain visibility-timeout semantics');

$node->stop;
done_testing();
