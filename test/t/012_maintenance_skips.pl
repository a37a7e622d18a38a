# One failing queue never stops the maintenance of the others, and a queue
# dropped under a dead consumer's claim makes no pass fail.
#
# In a database other than postgres (mq.database = '*'), a registered
# consumer holds a message of each of three queues: "bad", whose tables a
# superuser gave a trigger that fails every UPDATE and DELETE, "good", and
# "gone", dropped while the message is held.  Its backend is terminated:
# the background worker releases its claim in "good" with no manual
# mq.maintain(), logs a WARNING naming "bad", and nothing about "gone".
# Then lapsed last attempts: "good1" still dead-letters while "bad1"
# (same trigger) fails its upkeep, logged with its name.  mq.maintain()
# called by hand succeeds, and no pass of the background worker errors.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('skips');
$node->init;
$node->append_conf('postgresql.conf', qq{
shared_preload_libraries = 'mq'
mq.database = '*'
mq.maintenance_interval = '100ms'
});
$node->start;
$node->safe_psql('postgres', 'CREATE DATABASE app');

sub sql { return $node->safe_psql('app', $_[0]); }

sql(q{
CREATE EXTENSION mq;
SELECT mq.create_queue('bad', visibility_timeout => '1 hour');
SELECT mq.create_queue('good', visibility_timeout => '1 hour');
SELECT mq.create_queue('gone', visibility_timeout => '1 hour');
SELECT mq.create_queue('dlq');
SELECT mq.create_queue('bad1', max_attempts => 1, dead_letter_queue => 'dlq');
SELECT mq.create_queue('good1', max_attempts => 1, dead_letter_queue => 'dlq');
SELECT mq.send(q, '{}') FROM unnest(ARRAY['bad', 'good', 'gone']) q;
CREATE FUNCTION public.boom() RETURNS trigger LANGUAGE plpgsql
AS $$BEGIN RAISE EXCEPTION 'boom in %', TG_TABLE_NAME; END$$;
});

# the trigger on every table of a queue
sub break_queue
{
	my ($name) = @_;
	my $id = sql("SELECT queue_id FROM mq.queue WHERE queue_name = '$name'");
	for my $t ('0', '1', '2', '3', 'd')
	{
		sql("CREATE TRIGGER boom BEFORE UPDATE OR DELETE ON mq.q_${id}_$t FOR EACH ROW EXECUTE FUNCTION public.boom()");
	}
}

# the consumer reads bad first: its release comes first
my $bg = $node->background_psql('app');
$bg->query_safe("SELECT mq.register_consumer('w', '1 hour')");
my $pid = $bg->query_safe('SELECT pg_backend_pid()');
for my $q ('bad', 'good', 'gone')
{
	is($bg->query_safe("SELECT count(*) FROM mq.read('$q', 10)"), '1', "the consumer holds a message of $q");
}
sql("SELECT mq.drop_queue('gone')");
break_queue('bad');

my $log_offset = -s $node->logfile;
sql("SELECT pg_terminate_backend($pid)");
eval { $bg->quit };

ok($node->poll_query_until('app', q{SELECT count(*) = 1 FROM mq.read('good', 10) WHERE attempts = 2}),
	'good: the dead consumer\'s message is released although bad\'s release fails and gone was dropped');
ok($node->wait_for_log(qr/WARNING:  skipping the release of dead consumers' claims in queue "bad": boom in q_\d+_0/,
		$log_offset),
	'the failure in bad is logged with the queue name');

# lapsed last attempts: good1 dead-letters, bad1 fails and is logged.  The
# claims must lapse, not be released when their sessions end (which would
# let a release pass dead-letter bad1's message before it is broken)
sql(q{SELECT mq.send(q, '{}') FROM unnest(ARRAY['bad1', 'good1']) q});
my $lapsing = 'SET mq.release_on_session_end = off;';
is(sql(qq{$lapsing SELECT count(*) FROM mq.read('bad1', 10, visibility_timeout => '1 second')})
	  . sql(qq{$lapsing SELECT count(*) FROM mq.read('good1', 10, visibility_timeout => '1 second')}),
	'11', 'last attempts of bad1 and good1 claimed for a second');
break_queue('bad1');
ok($node->poll_query_until('app', q{SELECT dead_lettered = 1 FROM mq.metrics('good1')}),
	'good1: its lapsed last attempt is dead-lettered by the background worker');
ok($node->wait_for_log(qr/WARNING:  skipping maintenance of queue "bad1": boom in q_\d+_/, $log_offset),
	'the failure in bad1 is logged with the queue name');

my ($rc, $out, $err) = $node->psql('app', 'SELECT mq.maintain()');
is($rc, 0, 'mq.maintain() by hand succeeds');
like($err, qr/WARNING:  skipping maintenance of queue "bad1"/, 'and warns about bad1');
unlike($err, qr/ERROR/, 'without an error');

# the dropped queue alone: a dead consumer's claim in a dropped queue
sql(q{SELECT mq.drop_queue(q) FROM unnest(ARRAY['bad', 'bad1']) q});
sql(q{SELECT mq.create_queue('gone2', visibility_timeout => '1 hour'); SELECT mq.send('gone2', '{}'); SELECT mq.send('good', '{}')});
$bg = $node->background_psql('app');
$bg->query_safe("SELECT mq.register_consumer('w2', '1 hour')");
$pid = $bg->query_safe('SELECT pg_backend_pid()');
$bg->query_safe("SELECT count(*) FROM unnest(ARRAY['gone2', 'good']) q, LATERAL mq.read(q, 10)");
sql("SELECT mq.drop_queue('gone2')");
my $log_dropped = -s $node->logfile;
sql("SELECT pg_terminate_backend($pid)");
eval { $bg->quit };
ok($node->poll_query_until('app', q{SELECT count(*) = 1 FROM mq.read('good', 10) WHERE attempts = 2}),
	'a claim of a dropped queue holds up no release');
($rc, $out, $err) = $node->psql('app', 'SELECT mq.maintain()');
is($rc . $err, '0', 'mq.maintain() succeeds with no warning (no 42P01)');

my $log = slurp_file($node->logfile, $log_offset);
unlike($log, qr/ERROR/, 'no pass of the background worker failed');
unlike(slurp_file($node->logfile, $log_dropped), qr/WARNING|ERROR/, 'nothing logged for the dropped queue');

$node->stop;
done_testing();
