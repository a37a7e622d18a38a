# mq through a real PgBouncer in transaction pooling mode, the way most
# production deployments connect: what works as on a direct connection, and
# the patterns docs/clients.md recommends for what is bound to a server
# session (long polls pinning pooled connections, positions of partitioned
# queues).
#
# PgBouncer (Debian package pgbouncer, installed by test/setup.sh) runs as
# this test's own process on a free loopback port, with two pools of two
# server connections each in front of one server, "app" and "app_send" (a
# separate pool for producers), and "app_one" with one.  The test skips, saying why, when the
# pgbouncer binary is missing.
#   1. 6 producers and 6 consumers (pgbench, simple protocol) share each pool
#      of 2: every committed send is read and acked exactly once, sends
#      rolled back are never delivered, the queue ends empty.
#   2. Long polls pin server connections: with both connections of "app"
#      held by two long-polling readers, a send through "app" reaches the
#      server only after a poll ended empty-handed; the same send through
#      its own pool "app_send" wakes a waiting reader, which returns it.
#   3. A partitioned queue polled in explicit transactions through a pool of
#      one server connection: a poll rolled back, or whose client died before
#      COMMIT, skips nothing; the member's next poll, from another client,
#      returns those offsets again.  With mq.autocommit_positions off, an
#      autocommit poll moves no position either.
# No timing assertions: orderings are read from server timestamps, waits
# use poll_query_until.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($pgbouncer) = grep { -x $_ } map { "$_/pgbouncer" } split(/:/, $ENV{PATH}), '/usr/sbin';
plan skip_all => 'pgbouncer not found (Debian package pgbouncer; test/setup.sh installs it)'
  unless defined $pgbouncer;

my $node = PostgreSQL::Test::Cluster->new('pooled');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'mq'");
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION mq;
SELECT mq.create_queue('w');
SELECT mq.create_queue('e');
SELECT mq.create_queue('p', partitions => 1);
CREATE TABLE got (msg_id bigint, payload jsonb);
CREATE TABLE polls (ended timestamptz, n bigint);
CREATE TABLE sends (started timestamptz, msg_id bigint);
});

# PgBouncer: transaction pooling, 2 server connections per pool, trust
# authentication on the loopback (the users file must still list the user).
my $dir = PostgreSQL::Test::Utils::tempdir;
my $bport = PostgreSQL::Test::Cluster::get_free_port();
my ($host, $port) = ($node->host, $node->port);
PostgreSQL::Test::Utils::append_to_file("$dir/users.txt", qq{"postgres" ""\n});
PostgreSQL::Test::Utils::append_to_file("$dir/pgbouncer.ini", <<"INI");
[databases]
app = host=$host port=$port dbname=postgres pool_size=2
app_send = host=$host port=$port dbname=postgres pool_size=2
app_one = host=$host port=$port dbname=postgres pool_size=1
app_safe = host=$host port=$port dbname=postgres pool_size=1 connect_query='SET mq.autocommit_positions = off'
app_pooled = host=$host port=$port dbname=postgres pool_size=1 connect_query='SET mq.pool_mode = transaction'
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = $bport
unix_socket_dir =
auth_type = trust
auth_file = $dir/users.txt
pool_mode = transaction
max_client_conn = 100
default_pool_size = 2
logfile = $dir/pgbouncer.log
pidfile = $dir/pgbouncer.pid
INI
my $bouncer = IPC::Run::start([ $pgbouncer, "$dir/pgbouncer.ini" ],
	'>', "$dir/stdout", '2>', "$dir/stderr");
my $app = "host=127.0.0.1 port=$bport dbname=app user=postgres";
my $app_send = "host=127.0.0.1 port=$bport dbname=app_send user=postgres";
my $app_one = "host=127.0.0.1 port=$bport dbname=app_one user=postgres";
my $app_safe = "host=127.0.0.1 port=$bport dbname=app_safe user=postgres";
my $app_pooled = "host=127.0.0.1 port=$bport dbname=app_pooled user=postgres";

# psql through the pooler
sub pooled
{
	my ($connstr, $sql) = @_;
	return $node->safe_psql('postgres', $sql, connstr => $connstr);
}
# a background psql through the pooler (psql takes the last -d it is given)
sub through_pool
{
	my ($connstr) = @_;
	return $node->background_psql('postgres', extra_params => [ '-d', $connstr ]);
}
my $up = 0;
for (1 .. 100)
{
	my ($ret) = $node->psql('postgres', 'SELECT 1', connstr => $app);
	if ($ret == 0) { $up = 1; last; }
	sleep 0.1;
}
ok($up, 'PgBouncer accepts connections') or BAIL_OUT('PgBouncer did not start: ' . slurp_file("$dir/pgbouncer.log"));

# ---------------------------------------------------------------- 1. load
my $send = "$PostgreSQL::Test::Utils::tmp_check/pooled_send.sql";
PostgreSQL::Test::Utils::append_to_file($send, <<'SQL');
\set rb random(1, 10)
BEGIN;
SELECT mq.send('w', jsonb_build_object('rb', :rb = 1));
\if :rb = 1
ROLLBACK;
\else
COMMIT;
\endif
SQL
my $consume = "$PostgreSQL::Test::Utils::tmp_check/pooled_consume.sql";
PostgreSQL::Test::Utils::append_to_file($consume, <<'SQL');
BEGIN;
INSERT INTO got SELECT m.msg_id, m.payload FROM mq.read('w', 2) m
 WHERE mq.ack('w', m.msg_id, m.receipt);
COMMIT;
SQL
$node->command_ok(
	[ 'pgbench', '-n', '-M', 'simple', '-c', '6', '-j', '2', '-t', '100', '-f', $send, '-d', $app_send ],
	'6 producers through a pool of 2 server connections');
my $committed = $node->safe_psql('postgres', "SELECT depth FROM mq.metrics('w')");
ok($committed > 400, "most sends committed ($committed of 600; about a tenth rolled back)");
for (1 .. 50)
{
	last if $node->safe_psql('postgres', "SELECT depth + in_flight FROM mq.metrics('w')") == 0;
	$node->command_ok(
		[ 'pgbench', '-n', '-M', 'simple', '-c', '6', '-j', '2', '-t', '50', '-f', $consume, '-d', $app ],
		'6 consumers through a pool of 2 server connections');
}
is($node->safe_psql('postgres', q{
SELECT count(*) || '|' || count(DISTINCT msg_id) || '|' || count(*) FILTER (WHERE (payload->>'rb')::boolean)
  FROM got}), "$committed|$committed|0",
	'every committed send acked once through the pool, no rolled-back send delivered');
is($node->safe_psql('postgres', "SELECT depth + in_flight + delayed FROM mq.metrics('w')"), '0',
	'the queue ends empty');

# ---------------------------------------------------------------- 2. long polls
# two readers long-poll queue e through "app": both its server connections
my $poll_sql = q{INSERT INTO polls SELECT clock_timestamp(), count(*) FROM mq.read('e', 1, NULL, '3 s');};
my @readers;
for (1 .. 2)
{
	my $r = through_pool($app);
	$r->query_until(qr/polling/, "\\echo polling\n$poll_sql\n");
	push @readers, $r;
}
$node->poll_query_until('postgres', q{
SELECT count(*) = 2 FROM pg_stat_activity WHERE query LIKE 'INSERT INTO polls%' AND state = 'active'})
  or die 'the long polls did not start';
# the send through the same pool waits in PgBouncer for a server connection
pooled($app, q{INSERT INTO sends SELECT clock_timestamp(), mq.send('e', '{}')});
$node->poll_query_until('postgres', 'SELECT count(*) = 2 FROM polls') or die 'the polls did not end';
is($node->safe_psql('postgres', q{
SELECT (SELECT started FROM sends) >= (SELECT min(ended) FROM polls)
       AND (SELECT min(n) FROM polls) = 0}), 't',
	'a send through the pool of two long polls reached the server only after a poll ended empty-handed');
$node->safe_psql('postgres', q{TRUNCATE polls, sends; SELECT mq.purge('e')});

# with a pool of its own, the producer wakes a waiting reader
$_->query_until(qr/polling/, "\\echo polling\n$poll_sql\n") for @readers;
$node->poll_query_until('postgres', q{
SELECT count(*) = 2 FROM pg_stat_activity WHERE query LIKE 'INSERT INTO polls%' AND state = 'active'})
  or die 'the long polls did not start';
pooled($app_send, q{INSERT INTO sends SELECT clock_timestamp(), mq.send('e', '{}')});
$node->poll_query_until('postgres', 'SELECT count(*) = 2 FROM polls') or die 'the polls did not end';
is($node->safe_psql('postgres', q{
SELECT sum(n) = 1 AND (SELECT max(ended) FILTER (WHERE n = 1) FROM polls) >= (SELECT started FROM sends)
  FROM polls}), 't',
	'a send through its own pool woke a waiting reader, which returned it');
$_->quit for @readers;

# ---------------------------------------------------------------- 3. positions
# Positions of partitioned queues are the server session's, and a poll's
# moves only when its transaction commits.  Through "app_one" (one server
# connection, so every client below shares one server session): a member
# that polls in an explicit transaction and rolls back (its processing
# failed) leaves no trace, and the next client polling as that member gets
# the same offsets.  A client that dies inside that transaction makes
# PgBouncer close the server connection: again nothing is skipped.
pooled($app_send, q{SELECT count(*) FROM mq.send_batch('p', array_fill('{}'::jsonb, ARRAY[5]))});
my $poll3 = q{SELECT string_agg("offset"::text, ',') FROM mq.poll('p', 'g', 'm1', 3)};
is(pooled($app_one, "BEGIN; $poll3; ROLLBACK;"), '1,2,3', 'a poll in a transaction returns offsets 1 to 3');
is(pooled($app_one, "BEGIN; $poll3; COMMIT;"), '1,2,3',
	'after its rollback, another client polling as the member gets offsets 1 to 3 again');
pooled($app_one, q{SELECT mq.commit('p', 'g', 0, 3, 'm1')});
my $lost = through_pool($app_one);
is($lost->query_safe("BEGIN; $poll3;"), '4,5', 'after the commit, a poll returns offsets 4 and 5');
$lost->{run}->kill_kill;    # the client dies before COMMIT
$node->poll_query_until('postgres', q{
SELECT count(*) = 0 FROM pg_stat_activity WHERE state LIKE 'idle in transaction%'})
  or die 'the abandoned transaction did not end';
is(pooled($app_one, "BEGIN; $poll3; COMMIT;"), '4,5',
	'a client that died inside the transaction skipped nothing: offsets 4 and 5 again');

# An autocommit poll commits before its answer is sent.  With
# mq.autocommit_positions off (set for the pool "app_safe" by its
# connect_query), it moves no position: the next client polling as the
# member through the same server connection gets the same offsets.
$node->safe_psql('postgres', q{SELECT mq.create_queue('p2', partitions => 1);
SELECT count(*) FROM mq.send_batch('p2', array_fill('{}'::jsonb, ARRAY[5]))});
my $poll2 = q{SELECT string_agg("offset"::text, ',') FROM mq.poll('p2', 'g', 'm1', 3)};
is(pooled($app_safe, $poll2), '1,2,3', 'an autocommit poll behind the pooler returns offsets 1 to 3');
is(pooled($app_safe, $poll2), '1,2,3',
	'with mq.autocommit_positions off, the next autocommit poll returns them again: none skipped');
is(pooled($app_safe, "BEGIN; $poll2; COMMIT;"), '1,2,3', 'a poll in a committed transaction returns them');
is(pooled($app_safe, $poll2), '4,5', 'and moves the position: the next poll continues after them');

# mq.pool_mode = transaction, set for the pool "app_pooled" by its
# connect_query: registration and LISTEN refuse, autocommit polls move no
# position, and claims are not tied to the shared server session.
my ($ret, $out, $err) = $node->psql('postgres', q{SELECT mq.register_consumer('pooled')},
	connstr => $app_pooled);
like($err, qr/mq.register_consumer is not supported behind a transaction pooler/,
	'through a pool with mq.pool_mode = transaction, mq.register_consumer refuses');
($ret, $out, $err) = $node->psql('postgres', q{SELECT mq.listen('p2')}, connstr => $app_pooled);
like($err, qr/mq.listen is not supported behind a transaction pooler/, 'and so does mq.listen');
$node->safe_psql('postgres', q{SELECT mq.create_queue('p3', partitions => 1);
SELECT count(*) FROM mq.send_batch('p3', array_fill('{}'::jsonb, ARRAY[2]))});
my $poll_p3 = q{SELECT string_agg("offset"::text, ',') FROM mq.poll('p3', 'g', 'm1', 3)};
is(pooled($app_pooled, $poll_p3), '1,2', 'an autocommit poll through that pool returns offsets 1 and 2');
is(pooled($app_pooled, $poll_p3), '1,2', 'and moves no position');
$node->safe_psql('postgres', q{SELECT mq.create_queue('w3'); SELECT mq.send('w3', '{}')});
is(pooled($app_pooled, q{SELECT count(*) FROM mq.read('w3', 1, '1 hour')}), '1', 'a read through that pool claims');
is($node->safe_psql('postgres', q{SELECT count(*) FROM mq.q_} .
	$node->safe_psql('postgres', q{SELECT queue_id FROM mq.queue WHERE queue_name = 'w3'}) .
	q{_0 WHERE claimed AND consumer IS NULL}), '1',
	'and stamps nothing: the claim is not tied to the shared server session');

$bouncer->kill_kill;
$node->stop;
done_testing();
