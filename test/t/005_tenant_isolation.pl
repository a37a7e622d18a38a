# One tenant cannot stall or starve another (mq preloaded).
#
# Each case failed on mq 0.1.0:
#  1. an open send to a partitioned queue in one database held back the
#     consumers of the queue with the same id in another database;
#  2. rate-limit buckets were never freed and the table grew into the
#     server's free shared memory (pg_shmem_allocations shows it);
#  3. sessions that registered as consumers and disconnected, in a database
#     without maintenance, used up the server-wide registry, after which
#     register_consumer failed in every database;
#  4. a keyed send_batch (and a batch ack) of 20,000 distinct keys took one
#     lock per key and ran out of lock space (53200).
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('tenants');
$node->init;
# no maintenance worker: nothing frees what the tests leave behind but mq
# itself
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'mq'
mq.database = ''
max_connections = 40
autovacuum = off
});
$node->start;
for my $db ('tenant_a', 'tenant_b')
{
	$node->safe_psql('postgres', "CREATE DATABASE $db");
	$node->safe_psql($db, 'CREATE EXTENSION mq');
}

# 1. partition holds are per database
$node->safe_psql($_, q{SELECT mq.create_queue('log', partitions => 1)})
  for ('tenant_a', 'tenant_b');
is($node->safe_psql('tenant_a', q{SELECT queue_id FROM mq.queue WHERE queue_name = 'log'}),
	$node->safe_psql('tenant_b', q{SELECT queue_id FROM mq.queue WHERE queue_name = 'log'}),
	'both databases gave their queue the same id');
my $open = $node->background_psql('tenant_a');
$open->query_safe(q{BEGIN; SELECT mq.send('log', '{"open": true}')});
$node->safe_psql('tenant_b', q{SELECT mq.send('log', '{"b": 1}')});
is($node->safe_psql('tenant_b', q{SELECT count(*) FROM mq.poll('log', 'g', 'm', 10)}),
	'1', 'an open send in another database does not hold back this one');
$open->query_safe('ROLLBACK');
$open->quit;

# 2. rate-limit buckets live in a fixed table, at most 1,024 per database.
# A bucket that is not full (its queue took a token of a 1/h limit) holds
# state; a full one does not and is reused.  0.1.0 let the table grow into
# the server's free shared memory without limit and never freed a bucket,
# so dropped queues ate that memory for good (43,100 cycles exhausted it).
$node->safe_psql('tenant_a', join('', map { "SELECT mq.create_queue('fast$_', rate_limit => '1000000/s');"
	  . "SELECT count(*) FROM mq.read('fast$_');" } 1 .. 200));
my $active = join('', map { "SELECT mq.create_queue('rl$_', rate_limit => '1/h');"
	  . "SELECT mq.send('rl$_', '{}'); SELECT count(*) FROM mq.read('rl$_');" } 1 .. 1024);
my ($ret, $out, $err) = $node->psql('tenant_a', $active);
is($ret, 0, '1,024 limits that are not full fit, 200 of them in buckets of others that had refilled')
  or diag($err);
($ret, $out, $err) = $node->psql('tenant_a', q{
SELECT mq.create_queue('rl_more', rate_limit => '1/h');
SELECT mq.send('rl_more', '{}');
SELECT count(*) FROM mq.read('rl_more')});
like($err, qr/too many rate-limited queues in use/,
	'the 1,025th limit that is not full is refused clearly');
is($node->safe_psql('tenant_a', q{SELECT depth FROM mq.metrics('rl_more')}), '1',
	'the refused read took nothing');
$node->safe_psql('tenant_b', q{SELECT mq.create_queue('rl_b', rate_limit => '1/h');
SELECT mq.send('rl_b', '{}')});
is($node->safe_psql('tenant_b', q{SELECT count(*) FROM mq.read('rl_b')}), '1',
	'another database still gets its rate limits: a database holds at most its share');
# dropping them frees their buckets: 1,024 more fit
$node->safe_psql('tenant_a', join('', map { "SELECT mq.drop_queue('rl$_');" } 1 .. 1024));
($ret, $out, $err) = $node->psql('tenant_a', $active);
is($ret, 0, 'after dropping those queues, 1,024 new ones get their limits') or diag($err);

# 3. the consumer registry: sessions that register and go away in a
# database where nothing runs maintenance
# (psql's \c ends the previous session each time)
$node->psql('tenant_a',
	join("\n", map { "\\c tenant_a\nSELECT mq.register_consumer('c$_');" } 1 .. 1100));
($ret, $out, $err) = $node->psql('tenant_b', q{SELECT mq.register_consumer('other')});
is($ret, 0, 'register_consumer still works in another database after 1,100 registered sessions ended')
  or diag($err);
# the session that registered in tenant_b has ended too
ok($node->poll_query_until('tenant_b', q{SELECT count(*) = 1 FROM mq.consumers WHERE state = 'dead'}),
	'the ended session of the other database awaits its release');
# when the 1,024 records were full, this database, which had the most,
# gave them all up for a sweep at its next pass (no release is lost), and
# the sessions that ended after that have records again
my $dead_a = $node->safe_psql('tenant_a', q{SELECT count(*) FROM mq.consumers WHERE state = 'dead'});
ok($dead_a > 0 && $dead_a < 1024,
	"the ended sessions of this one gave up their records for a sweep when they were full ($dead_a left)");

# 4. keyed batches of 20,000 distinct keys
$node->safe_psql('tenant_b', q{SELECT mq.create_queue('k', ordering => 'key')});
is($node->safe_psql('tenant_b', q{
SELECT count(*) FROM mq.send_batch('k',
    (SELECT array_agg(jsonb_build_object('i', i)) FROM generate_series(1, 20000) i),
    (SELECT array_agg('key' || i) FROM generate_series(1, 20000) i))}),
	'20000', 'a keyed send_batch of 20,000 distinct keys');
is($node->safe_psql('tenant_b', q{
SELECT mq.ack('k', (SELECT array_agg(msg_id) FROM mq.read('k', 10000)))}),
	'10000', 'a keyed batch ack of 10,000 distinct keys');
is($node->safe_psql('tenant_b', q{
SELECT count(*) FROM pg_locks WHERE locktype = 'advisory'}),
	'0', 'the key locks ended with their transactions');

$node->stop;
done_testing();
