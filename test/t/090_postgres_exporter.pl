# mq's Prometheus series through the real prometheus-postgres-exporter
# (Debian package, installed by test/setup.sh) with the queries file
# monitoring/postgres_exporter.yml.
#
# The exporter runs as this test's own process on a free loopback port
# (never the Debian service), against the test node, as a login role whose
# only mq right is membership in mq_monitor.  Each check scrapes /metrics
# over HTTP and compares the mq series with what was done to the queues:
#   1. the queries file loads and every query runs (no scrape error);
#   2. a work queue after 5 sends and 2 claims: depth 3, in flight 2,
#      sent 5, acked 0, oldest age > 0; after one ack: in flight 1, acked 1;
#   3. a message nacked on its last attempt: dead_lettered_total 1 on its
#      queue, depth 1 on the dead-letter queue;
#   4. a partitioned queue: lag and lease ownership per consumer group and
#      partition, as mq.consumer_groups has them;
#   5. a transaction holding a snapshot shows in mq_xmin_horizon_age_seconds
#      and mq.warnings names its pid to the exporter's role, until it ends;
#      (5b: a claim held open past its visibility timeout shows in
#      mq_claim_stuck_age_seconds, and goes);
#   6. the exporter's role can read the metrics but no message;
#   7. the example alert rules in docs/monitoring.md pass
#      monitoring/alerts_test.yml, when promtool (Debian package
#      prometheus) is installed.
# The test skips, saying why, when the exporter binary is missing.
use strict;
use warnings;

use File::Basename qw(dirname);
use Cwd qw(abs_path);
use HTTP::Tiny;
use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my ($exporter) = grep { -x $_ }
  map { ("$_/prometheus-postgres-exporter", "$_/postgres_exporter") }
  (split(/:/, $ENV{PATH}), '/usr/bin');
plan skip_all =>
  'prometheus-postgres-exporter not found (Debian package prometheus-postgres-exporter; test/setup.sh installs it)'
  unless defined $exporter;

my $repo = $ENV{MQ_SOURCE_DIR} // abs_path(dirname(abs_path(__FILE__)) . '/../..');
my $queries = "$repo/monitoring/postgres_exporter.yml";
plan skip_all => "no $queries: set MQ_SOURCE_DIR to the source tree to test"
  unless -r $queries;

my $node = PostgreSQL::Test::Cluster->new('exported');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'mq'");
# the claims the metrics count are made by one-statement sessions and must
# stay in flight after them (registered consumers are released regardless)
$node->append_conf('postgresql.conf', 'mq.release_on_session_end = off');
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION mq;
CREATE ROLE regress_exporter LOGIN IN ROLE mq_monitor;
SELECT mq.create_queue('jobs');
SELECT mq.create_queue('fail_dlq');
SELECT mq.create_queue('fail', max_attempts => 1, dead_letter_queue => 'fail_dlq');
SELECT mq.create_queue('log', partitions => 2);
});

# ---- the exporter ------------------------------------------------------------
my $dir = PostgreSQL::Test::Utils::tempdir;
my $eport = PostgreSQL::Test::Cluster::get_free_port();
my ($host, $port) = ($node->host, $node->port);
local $ENV{DATA_SOURCE_NAME} =
  "host=$host port=$port user=regress_exporter dbname=postgres sslmode=disable";
# only mq's series: the default metrics need rights the role has not
my $h = IPC::Run::start(
	[
		$exporter, "--extend.query-path=$queries",
		'--disable-default-metrics', '--disable-settings-metrics',
		'--no-collector.database', '--no-collector.bgwriter',
		"--web.listen-address=127.0.0.1:$eport"
	],
	'>', "$dir/stdout", '2>', "$dir/stderr");
# stopped however the test ends
END { $h->kill_kill if $h; }
my $http = HTTP::Tiny->new(timeout => 10);

# One scrape: { "name{label=value,...}" (labels sorted, server left out) => value }
sub scrape
{
	my $res = $http->get("http://127.0.0.1:$eport/metrics");
	return undef unless $res->{success};
	my %series;
	for my $line (split /\n/, $res->{content})
	{
		next if $line =~ /^#/;
		my ($name, $labels, $value) = $line =~ /^([a-zA-Z_:][\w:]*)(?:\{(.*)\})?\s+(\S+)$/
		  or next;
		my @labels = grep { !/^server=/ } split /,(?=[a-zA-Z_]\w*=")/, $labels // '';
		$series{ $name . '{' . join(',', sort @labels) . '}' } = $value;
	}
	return \%series;
}

# The value of a series of the latest scrape, e.g. one('mq_queue_depth', kind => 'work', queue => 'jobs').
my $last;
sub one
{
	my ($name, %labels) = @_;
	my $key = $name . '{' . join(',', map { qq{$_="$labels{$_}"} } sort keys %labels) . '}';
	return $last->{$key};
}

# Scrape until a series has a value (the exporter starting, or a change).
sub scrape_until
{
	my ($want, $name, %labels) = @_;
	for (1 .. 300)
	{
		$last = scrape();
		if ($last)
		{
			my $v = one($name, %labels);
			return 1 if defined $v && (!defined $want || $v == $want);
		}
		select(undef, undef, undef, 0.1);
	}
	diag("last scrape:\n" . join("\n", map { "$_ $last->{$_}" } sort keys %{ $last // {} }));
	diag('exporter stderr: ' . slurp_file("$dir/stderr"));
	return 0;
}

# ---- 1. the queries file loads and runs --------------------------------------
ok(scrape_until(undef, 'mq_queue_depth', kind => 'work', queue => 'jobs'), 'the exporter serves mq_queue_depth');
is(one('pg_up'), 1, 'pg_up 1');
is($last->{'pg_exporter_last_scrape_error{}'}, 0, 'no query of the scrape failed');
# labelled with the file's name and hash
my @load = map { $last->{$_} } grep { /^pg_exporter_user_queries_load_error\{/ } keys %$last;
is_deeply(\@load, [0], 'the queries file loaded');
is(one('mq_queue_depth', kind => 'work', queue => 'jobs'), 0, 'a new queue: depth 0');
is(one('mq_consumers_count', state => 'alive'), 0, 'no registered consumer');

# ---- 2. depth, in flight, counters -------------------------------------------
$node->safe_psql('postgres', q{
SELECT mq.send_batch('jobs', ARRAY['1', '2', '3', '4', '5']::jsonb[]);
SELECT count(*) FROM mq.read('jobs', 2, visibility_timeout => '1 hour');
});
ok(scrape_until(2, 'mq_queue_in_flight', kind => 'work', queue => 'jobs'), 'in flight after 2 claims');
my %jobs = (kind => 'work', queue => 'jobs');
is(one('mq_queue_depth', %jobs), 3, 'depth 3 after 5 sends and 2 claims');
is(one('mq_queue_in_flight', %jobs), 2, 'in flight 2');
is(one('mq_queue_delayed', %jobs), 0, 'delayed 0');
is(one('mq_queue_sent_total', %jobs), 5, 'sent_total 5');
is(one('mq_queue_acked_total', %jobs), 0, 'acked_total 0');
cmp_ok(one('mq_queue_oldest_age_seconds', %jobs), '>', 0, 'oldest ready message has an age');
cmp_ok(one('mq_queue_oldest_age_seconds', %jobs), '<', 600, 'and it is the age of this test\'s message');

$node->safe_psql('postgres', q{
SELECT mq.ack('jobs', (SELECT min(msg_id) FROM mq.read('jobs', 1, visibility_timeout => '1 hour')));
SELECT mq.send('jobs', '6', delay => '1 hour');
});
ok(scrape_until(1, 'mq_queue_acked_total', %jobs), 'acked_total 1 after one ack');
is(one('mq_queue_in_flight', %jobs), 2, 'in flight 2 (one claimed, one acked)');
is(one('mq_queue_depth', %jobs), 2, 'depth 2');
is(one('mq_queue_delayed', %jobs), 1, 'delayed 1');
is(one('mq_queue_sent_total', %jobs), 6, 'sent_total 6');

# ---- 3. dead letters ---------------------------------------------------------
$node->safe_psql('postgres', q{
SELECT mq.send('fail', '{"doomed": true}');
SELECT mq.nack('fail', msg_id, receipt) FROM mq.read('fail');
});
ok(scrape_until(1, 'mq_queue_dead_lettered_total', kind => 'work', queue => 'fail'),
	'dead_lettered_total 1 after a nack on the last attempt');
is(one('mq_queue_depth', kind => 'work', queue => 'fail_dlq'), 1, 'the dead letter waits in the dead-letter queue');
is(one('mq_queue_depth', kind => 'work', queue => 'fail'), 0, 'and not in its queue');

# ---- 4. consumer groups of a partitioned queue -------------------------------
$node->safe_psql('postgres', q{
SELECT count(*) FROM mq.send_batch('log', ARRAY['1', '2', '3', '4', '5', '6']::jsonb[],
                                   ARRAY['a', 'b', 'c', 'd', 'e', 'f']);
SELECT count(*) FROM mq.poll('log', 'g', 'm1');
SELECT mq.commit('log', 'g', 0, 1);
});
my %cg = map { my ($p, $lag, $owned) = split /\|/; ($p => [ $lag, $owned ]) }
  split /\n/, $node->safe_psql('postgres', q{
SELECT partition, lag, (member IS NOT NULL AND lease_until > clock_timestamp())::int
  FROM mq.consumer_groups WHERE queue_name = 'log' AND consumer_group = 'g' ORDER BY partition});
is(scalar(keys %cg), 2, 'the group has both partitions');
ok(scrape_until($cg{0}[0], 'mq_consumer_group_lag', group => 'g', partition => 0, queue => 'log'),
	"lag of partition 0 is mq.consumer_groups' ($cg{0}[0])");
for my $p (0, 1)
{
	is(one('mq_consumer_group_lag', group => 'g', partition => $p, queue => 'log'), $cg{$p}[0],
		"partition $p: lag $cg{$p}[0]");
	is(one('mq_consumer_group_owned', group => 'g', partition => $p, queue => 'log'), 1,
		"partition $p: owned by the polling member");
}
cmp_ok($cg{0}[0] + $cg{1}[0], '==', 6 - 1, 'lags add up to the 6 sent less the 1 committed');
is(one('mq_queue_sent_total', kind => 'partitioned', queue => 'log'), 6, 'partitioned: sent_total 6');
is(one('mq_queue_depth', kind => 'partitioned', queue => 'log'), 6, 'partitioned: depth = offsets retained');

my ($ret, $out, $err);
# ---- 5. the xmin horizon: a held snapshot shows, and goes ---------------------
my $holder = $node->background_psql('postgres');
$holder->query_safe('BEGIN ISOLATION LEVEL REPEATABLE READ');
$holder->query_safe('SELECT 1');
my $holder_pid = $holder->query_safe('SELECT pg_backend_pid()');
my $held = 0;
for (1 .. 300)
{
	$last = scrape();
	$held = 1, last if $last && (one('mq_xmin_horizon_age_seconds') // 0) >= 1;
	select(undef, undef, undef, 0.1);
}
ok($held, 'mq_xmin_horizon_age_seconds grows while a snapshot is held');
($ret, $out, $err) = $node->psql('postgres', q{SELECT pid FROM mq.warnings('0') WHERE warning = 'xmin_horizon'},
	extra_params => [ '-U', 'regress_exporter' ]);
is($out, $holder_pid, 'mq.warnings names the holder to the exporter role');
$holder->query_safe('COMMIT');
$holder->quit;
$held = 1;
for (1 .. 300)
{
	$last = scrape();
	$held = 0, last if $last && (one('mq_xmin_horizon_age_seconds') // 1) < 1;
	select(undef, undef, undef, 0.1);
}
ok(!$held, 'and falls back once it ends');

# ---- 5b. a claim held open past its visibility timeout shows, and goes ------
$node->safe_psql('postgres', q{SELECT mq.create_queue('held'); SELECT mq.send('held', '{"n": 1}')});
my $reader = $node->background_psql('postgres');
$reader->query_safe('BEGIN');
$reader->query_safe(q{SELECT msg_id FROM mq.read('held', 1, '0 seconds')});
my $reader_pid = $reader->query_safe('SELECT pg_backend_pid()');
my $stuck = 0;
for (1 .. 300)
{
	$last = scrape();
	$stuck = 1, last if $last && (one('mq_claim_stuck_age_seconds', queue => 'held') // 0) > 0;
	select(undef, undef, undef, 0.1);
}
ok($stuck, 'mq_claim_stuck_age_seconds grows while a claim is held open past its timeout');
is(one('mq_claim_stuck_age_seconds', queue => 'jobs'), 0, '... and is 0 for a queue with none');
($ret, $out, $err) = $node->psql('postgres',
	q{SELECT pid, queue_name FROM mq.warnings() WHERE warning = 'claim_stuck'},
	extra_params => [ '-U', 'regress_exporter' ]);
is($out, "$reader_pid|held", 'mq.warnings names the session holding it to the exporter role');
# queue ids are per database: another database's queue with held's id is not named
my $held_id = $node->safe_psql('postgres', q{SELECT queue_id FROM mq.queue WHERE queue_name = 'held'});
$node->safe_psql('postgres', 'CREATE DATABASE other');
$node->safe_psql('other', "CREATE EXTENSION mq; SELECT mq.create_queue('other_' || g) FROM generate_series(1, $held_id) g");
is($node->safe_psql('other', q{SELECT count(*) FROM mq.warnings() WHERE warning = 'claim_stuck'}), 0,
	"... and not in another database, to a queue there with the same id ($held_id)");
$reader->query_safe('COMMIT');
$reader->quit;
ok(scrape_until(0, 'mq_claim_stuck_age_seconds', queue => 'held'), 'and falls back to 0 once it commits');
$node->safe_psql('postgres', q{SELECT mq.drop_queue('held')});

# ---- 6. the exporter's role reads no message ---------------------------------
($ret, $out, $err) = $node->psql('postgres', q{SELECT * FROM mq.read('jobs')},
	extra_params => [ '-U', 'regress_exporter' ]);
isnt($ret, 0, 'the exporter role cannot read messages');
like($err, qr/permission denied for queue "jobs"/, '... permission denied');
($ret, $out, $err) = $node->psql('postgres', q{SELECT count(*) FROM mq.metrics_all()},
	extra_params => [ '-U', 'regress_exporter' ]);
is($out, 4, 'but sees all 4 queues in mq.metrics_all');

$h->kill_kill;
undef $h;
$node->stop;

# ---- 7. the example alert rules of docs/monitoring.md --------------------------
SKIP:
{
	my ($promtool) = grep { -x $_ } map { "$_/promtool" } (split(/:/, $ENV{PATH}), '/usr/bin');
	skip 'promtool not found (Debian package prometheus): alert rules not checked', 2
	  unless defined $promtool;
	my $doc = slurp_file("$repo/docs/monitoring.md");
	my ($rules) = $doc =~ /^## Alert rules\n.*?^```yaml\n(.*?)^```/ms;
	PostgreSQL::Test::Utils::append_to_file("$dir/alerts.yml", $rules // '');
	PostgreSQL::Test::Utils::append_to_file("$dir/alerts_test.yml",
		slurp_file("$repo/monitoring/alerts_test.yml"));
	my ($out, $err) = ('', '');
	IPC::Run::run([ $promtool, 'check', 'rules', "$dir/alerts.yml" ], '>', \$out, '2>', \$err);
	like($out, qr/SUCCESS: 9 rules found/, 'promtool check rules: the 9 example rules are valid')
	  or diag($out . $err);
	($out, $err) = ('', '');
	IPC::Run::run([ $promtool, 'test', 'rules', "$dir/alerts_test.yml" ], '>', \$out, '2>', \$err);
	like($out, qr/SUCCESS/, 'promtool test rules: they fire on the series they are about') or diag($out . $err);
}
done_testing();
