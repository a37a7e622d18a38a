# Maintenance in every database where mq is installed (mq.database = '*'),
# with no setting per database and no manual mq.maintain().
#
# mq is installed in two databases created after the server started (so
# CREATE EXTENSION is picked up without a restart), a third has no mq.  A
# registered consumer's backend is terminated in each of the two: its
# claims become readable again in both, the attempt counted.  The database
# without mq is left alone (no error in the log), templates get no worker
# (CREATE DATABASE from template1 works), and a database with mq can be
# dropped while maintenance runs every 100 ms.  Then mq.database is
# changed to one name and reloaded: only that database is maintained.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('databases');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'mq'
mq.database = '*'
mq.maintenance_interval = '100ms'
});
$node->start;

ok($node->poll_query_until('postgres',
		"SELECT count(*) = 1 FROM pg_stat_activity WHERE backend_type = 'mq maintenance launcher' AND datid IS NULL"),
	'one launcher runs, connected to no database');

for my $db ('app1', 'app2', 'plain')
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
}
for my $db ('app1', 'app2')
{
	$node->safe_psql($db, q{
CREATE EXTENSION mq;
SELECT mq.create_queue('jobs', visibility_timeout => '1 hour');
SELECT mq.send('jobs', '{}') FROM generate_series(1, 2);
});
}

# a registered consumer in each database claims the two messages
my %pid;
my @bg;
for my $db ('app1', 'app2')
{
	my $bg = $node->background_psql($db);
	$bg->query_safe("SELECT mq.register_consumer('w-$db', '1 hour')");
	$pid{$db} = $bg->query_safe('SELECT pg_backend_pid()');
	is($bg->query_safe("SELECT count(*) FROM mq.read('jobs', 10)"), '2', "$db: the consumer claims two messages");
	push @bg, $bg;
}
for my $db ('app1', 'app2')
{
	$node->safe_psql($db, "SELECT pg_terminate_backend($pid{$db})");
}
eval { $_->quit } for @bg;

for my $db ('app1', 'app2')
{
	ok($node->poll_query_until($db,
			"SELECT count(*) = 2 FROM mq.read('jobs', 10) WHERE attempts = 2"),
		"$db: the dead consumer's messages are readable again, attempt counted, without mq.maintain()");
	is($node->safe_psql($db, "SELECT count(*) FROM mq.consumers"), '0',
		"$db: the dead consumer is gone from mq.consumers");
}

# a database without mq: its worker looks and exits quietly (checked in
# the log below)
my $log_offset = -s $node->logfile;

# templates get none: CREATE DATABASE copies template1 while it runs
for my $i (1 .. 5)
{
	$node->safe_psql('postgres', "CREATE DATABASE copy$i");
}
pass('CREATE DATABASE from template1 is never blocked by a maintenance worker');

# a database with mq, maintained every 100 ms, can be dropped (PostgreSQL
# gives up after 5 seconds if a backend stays connected)
for my $i (1 .. 5)
{
	$node->safe_psql('postgres', "CREATE DATABASE gone$i");
	$node->safe_psql("gone$i", q{
CREATE EXTENSION mq;
SELECT mq.create_queue('jobs');
SELECT mq.send('jobs', '{}');
});
	# maintained there: a dead consumer's claim is released
	my $bg = $node->background_psql("gone$i");
	$bg->query_safe("SELECT mq.register_consumer('w', '1 hour')");
	my $p = $bg->query_safe('SELECT pg_backend_pid()');
	$bg->query_safe("SELECT count(*) FROM mq.read('jobs', 10, visibility_timeout => '1 hour')");
	$node->safe_psql("gone$i", "SELECT pg_terminate_backend($p)");
	eval { $bg->quit };
	ok($node->poll_query_until("gone$i",
			"SELECT count(*) = 1 FROM mq.read('jobs', 10) WHERE attempts = 2"),
		"gone$i is maintained");
	my ($rc, $out, $err) = $node->psql('postgres', "DROP DATABASE gone$i");
	is($rc, 0, "a database with mq, maintained, can be dropped ($i)") or diag($err);
}
$node->safe_psql('app2', 'DROP EXTENSION mq CASCADE');
my ($rc, $out, $err) = $node->psql('postgres', 'DROP DATABASE app2');
is($rc, 0, 'and so can the database whose consumer died') or diag($err);

my $log = slurp_file($node->logfile, $log_offset);
# a worker that was starting as its database was dropped cannot connect
$log =~ s/^.*FATAL:  database \d+ does not exist\n//mg;
$log =~ s/^.*FATAL:  terminating connection due to administrator command\n//mg;
unlike($log, qr/ERROR|FATAL|WARNING/, 'no worker error in the log');

# mq.database as a filter, changed by a reload
$node->append_conf('postgresql.conf', "mq.database = 'postgres'");
$node->reload;
# a pass of the launcher starts after the reload
$node->safe_psql('postgres', 'SELECT pg_sleep(0.5)');
$node->safe_psql('app1', q{
SELECT mq.ack('jobs', msg_id) FROM mq.read('jobs', 10, visibility_timeout => '1 hour');
SELECT mq.send('jobs', '{}');
});
my $bg = $node->background_psql('app1');
$bg->query_safe("SELECT mq.register_consumer('w', '1 hour')");
my $p = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_safe("SELECT count(*) FROM mq.read('jobs', 10)");
$node->safe_psql('app1', "SELECT pg_terminate_backend($p)");
eval { $bg->quit };
$node->poll_query_until('app1', "SELECT state = 'dead' FROM mq.consumers");
$node->safe_psql('app1', 'SELECT pg_sleep(1)');
is($node->safe_psql('app1', "SELECT state || ':' || in_flight FROM mq.consumers"), 'dead:1',
	'filtered out of mq.database: app1 is no longer maintained');
is($node->safe_psql('app1', 'SELECT mq.maintain()'), '1', 'mq.maintain() releases it by hand');

$node->stop;
done_testing();
