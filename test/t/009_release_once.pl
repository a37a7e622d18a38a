# Releases of dead consumers' claims run one at a time per database.
#
# Two mq.maintain() passes releasing the same dead consumer's claims at once
# updated the rows in different orders (synchronized seq scans of a large
# segment start where the other scan is) and deadlocked (40P01, seen in
# t/007 between the background worker and a maintainer).  So a pass takes
# the database's release lock, without waiting, and a pass that finds it
# taken releases nothing and leaves the work to the next one.  Here a
# maintenance pass is held open in a transaction; a consumer dies; a second
# pass releases nothing; after the first commits, a pass releases the
# consumer's claims.  No background worker (mq.database = ''): its pass
# would hold the release lock whenever it runs, and could be the one to
# release the claims.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('release_once');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'mq'
mq.database = ''
});
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION mq;
SELECT mq.create_queue('jobs', visibility_timeout => '1 hour');
SELECT mq.send('jobs', '{}') FROM generate_series(1, 2);
});

# a maintenance pass, held open: it holds the release lock until COMMIT
my $held = $node->background_psql('postgres');
$held->query_safe('BEGIN');
$held->query_safe('SELECT mq.maintain()');

# a registered consumer claims both messages and dies
my $worker = $node->background_psql('postgres');
$worker->query_safe(q{SELECT mq.register_consumer('w', '1 hour')});
my $pid = $worker->query_safe('SELECT pg_backend_pid()');
is($worker->query_safe(q{SELECT count(*) FROM mq.read('jobs', 10)}), '2', 'the consumer claims two messages');
$node->safe_psql('postgres', "SELECT pg_terminate_backend($pid)");
ok($node->poll_query_until('postgres', q{SELECT state = 'dead' FROM mq.consumers WHERE consumer_id = 'w'}),
	'the consumer shows as dead');
$worker->quit;

is($node->safe_psql('postgres', q{SET lock_timeout = '60s'; SELECT mq.maintain()}), '0',
	'a second pass releases nothing while the first one is open, and does not wait for it');
is($node->safe_psql('postgres', q{SELECT count(*) FROM mq.read('jobs', 10)}), '0',
	'the claims are still held');

$held->query_safe('COMMIT');
$held->quit;
is($node->safe_psql('postgres', 'SELECT mq.maintain()'), '2', 'the next pass releases both claims');
is($node->safe_psql('postgres', q{SELECT string_agg(attempts::text, ',') FROM mq.read('jobs', 10)}), '2,2',
	'both are readable again, with the attempt counted');

$node->stop;
done_testing();
