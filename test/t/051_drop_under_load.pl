# drop_queue under load: 50 rounds of dropping and re-creating a work queue
# and a partitioned queue while 4 sessions send, read, ack, poll (some
# waiting), commit offsets, read metrics and the views mq.queues and
# mq.consumer_groups, one session runs mq.maintain() in a loop, and the
# background worker maintains the same database.
#
# Each call runs in its own transaction (one in seven sends to both queues
# and reads the views in one transaction) and records its SQLSTATE.  Asserts: every drop and
# create succeeds; the data path fails only with 42704 (no such queue):
# 0 deadlocks (40P01), 0 XX000, 0 42P01 (an internal table named); no
# maintenance pass fails; nothing hangs (every session ends within the TAP
# timeout).  0.1.0 failed 22 of 90 such drops with deadlocks.
use strict;
use warnings;

use IPC::Run;
use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $rounds = 50;
my $workers = 4;

my $node = PostgreSQL::Test::Cluster->new('drop_load');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'mq'");
$node->start;

$node->safe_psql('postgres', q{
CREATE EXTENSION mq;
SELECT mq.create_queue('wq', visibility_timeout => '1 minute');
SELECT mq.create_queue('lp', partitions => 2);
CREATE TABLE tally (who text, sqlstate text, n integer);
CREATE TABLE stop (done boolean);
INSERT INTO stop VALUES (false);

-- count one outcome
CREATE FUNCTION counted(counts jsonb, state text) RETURNS jsonb LANGUAGE sql AS $$
  SELECT jsonb_set(counts, ARRAY[state], to_jsonb(COALESCE((counts->>state)::integer, 0) + 1))
$$;

CREATE PROCEDURE worker(w integer) LANGUAGE plpgsql AS $$
DECLARE
  v_counts jsonb := '{}';
  v_state text;
  v_detail text;
  v_i integer := w;
BEGIN
  LOOP
    EXIT WHEN (SELECT done FROM stop);
    v_i := v_i + 1;
    BEGIN
      CASE v_i % 7
      WHEN 0 THEN
        PERFORM mq.send('wq', jsonb_build_object('w', w));
      WHEN 1 THEN
        PERFORM mq.ack('wq', m.msg_id) FROM mq.read('wq', 5) m;
      WHEN 2 THEN
        PERFORM mq.send('lp', jsonb_build_object('w', w), key => (v_i % 5)::text);
      WHEN 3 THEN
        PERFORM mq.commit('lp', 'g', p.partition, p."offset", 'm' || w)
           FROM mq.poll('lp', 'g', 'm' || w, 10) p;
      WHEN 4 THEN
        PERFORM count(*) FROM mq.poll('lp', 'g', 'm' || w, 10, wait => '200 ms');
      WHEN 5 THEN
        PERFORM mq.ack('wq', m.msg_id) FROM mq.read('wq', 5, wait => '200 ms') m;
      ELSE
        PERFORM mq.send('wq', jsonb_build_object('w', w));
        PERFORM mq.send('lp', jsonb_build_object('w', w), key => 'both');
        PERFORM * FROM mq.metrics('wq');
        PERFORM count(*) FROM mq.queues;
        PERFORM count(*) FROM mq.consumer_groups;
      END CASE;
      v_state := 'ok';
    EXCEPTION WHEN OTHERS THEN
      v_state := SQLSTATE;
      IF SQLSTATE <> '42704' THEN
        GET STACKED DIAGNOSTICS v_detail = PG_EXCEPTION_DETAIL;
        RAISE LOG 'worker %: % % %', w, SQLSTATE, SQLERRM, v_detail;
      END IF;
      PERFORM pg_sleep(0.001);
    END;
    v_counts := counted(v_counts, v_state);
    COMMIT;
  END LOOP;
  INSERT INTO tally SELECT 'data path', key, value::integer FROM jsonb_each_text(v_counts);
END
$$;

CREATE PROCEDURE maintainer() LANGUAGE plpgsql AS $$
DECLARE
  v_counts jsonb := '{}';
  v_state text;
  v_detail text;
BEGIN
  LOOP
    EXIT WHEN (SELECT done FROM stop);
    BEGIN
      PERFORM mq.maintain();
      v_state := 'ok';
    EXCEPTION WHEN OTHERS THEN
      v_state := SQLSTATE;
      GET STACKED DIAGNOSTICS v_detail = PG_EXCEPTION_DETAIL;
      RAISE LOG 'maintain: % % %', SQLSTATE, SQLERRM, v_detail;
    END;
    v_counts := counted(v_counts, v_state);
    COMMIT;
    PERFORM pg_sleep(0.01);
  END LOOP;
  INSERT INTO tally SELECT 'maintain', key, value::integer FROM jsonb_each_text(v_counts);
END
$$;

CREATE PROCEDURE dropper(rounds integer) LANGUAGE plpgsql AS $$
DECLARE
  v_counts jsonb := '{}';
  v_state text;
  v_detail text;
  v_queue text;
BEGIN
  FOR r IN 1..rounds LOOP
    FOREACH v_queue IN ARRAY ARRAY['wq', 'lp'] LOOP
      BEGIN
        v_state := CASE WHEN mq.drop_queue(v_queue) THEN 'dropped' ELSE 'missing' END;
      EXCEPTION WHEN OTHERS THEN
        v_state := SQLSTATE;
        GET STACKED DIAGNOSTICS v_detail = PG_EXCEPTION_DETAIL;
        RAISE LOG 'drop: % % %', SQLSTATE, SQLERRM, v_detail;
      END;
      v_counts := counted(v_counts, v_state);
      COMMIT;
    END LOOP;
    -- let the data path meet missing queues, then the new ones
    PERFORM pg_sleep(0.02);
    BEGIN
      PERFORM mq.create_queue('wq', visibility_timeout => '1 minute');
      PERFORM mq.create_queue('lp', partitions => 2);
      v_state := 'created';
    EXCEPTION WHEN OTHERS THEN
      v_state := SQLSTATE;
      RAISE LOG 'create: % %', SQLSTATE, SQLERRM;
    END;
    v_counts := counted(v_counts, v_state);
    COMMIT;
    PERFORM pg_sleep(0.1);
  END LOOP;
  UPDATE stop SET done = true;
  INSERT INTO tally SELECT 'drop', key, value::integer FROM jsonb_each_text(v_counts);
END
$$;
});

my $timeout = $PostgreSQL::Test::Utils::timeout_default;
my @sessions;
foreach my $sql ((map { "CALL worker($_)" } 1 .. $workers), 'CALL maintainer()',
	"CALL dropper($rounds)")
{
	my ($out, $err) = ('', '');
	my $h = IPC::Run::start(
		[ 'psql', '-XAtq', '-v', 'ON_ERROR_STOP=1', '-d', $node->connstr('postgres'), '-c', $sql ],
		'>', \$out, '2>', \$err, IPC::Run::timeout(10 * $timeout));
	push @sessions, [ $sql, $h, \$err ];
}
foreach my $s (@sessions)
{
	my ($sql, $h, $err) = @$s;
	my $ok = eval { $h->finish; 1; };
	$h->kill_kill unless $ok;
	ok($ok && $h->result == 0, "$sql ends") or diag($$err);
}

my %tally;
foreach my $row (split /\n/,
	$node->safe_psql('postgres', 'SELECT who, sqlstate, sum(n) FROM tally GROUP BY 1, 2 ORDER BY 1, 2'))
{
	my ($who, $state, $n) = split /\|/, $row;
	$tally{$who}{$state} = $n;
	note("$who: $state $n");
}
is($tally{drop}{dropped}, 2 * $rounds, "all $rounds rounds dropped both queues");
is($tally{drop}{created}, $rounds, "all $rounds rounds created both queues");
is(scalar(keys %{ $tally{drop} }), 2, 'no drop or create failed');
ok($tally{'data path'}{ok} > 0, 'the data path worked');
foreach my $state ('40P01', 'XX000', '42P01')
{
	is($tally{'data path'}{$state} // 0, 0, "data path: 0 errors $state");
}
is(join(',', grep { $_ ne 'ok' && $_ ne '42704' } sort keys %{ $tally{'data path'} }),
	'', 'the data path failed only with 42704');
is(join(',', grep { $_ ne 'ok' } sort keys %{ $tally{maintain} }),
	'', 'no mq.maintain() call failed');
ok($tally{maintain}{ok} > 0, 'mq.maintain() ran');

my $log = slurp_file($node->logfile);
unlike($log, qr/background worker "mq maintenance".*exited with exit code/,
	'no pass of the background worker failed');

$node->stop;
done_testing();
