# Rate limits: with 8 concurrent readers (pgbench), a queue limited to 20
# messages per second with a burst of 5 never hands out more than
# 20 * T + 5 messages in any window of T seconds.  Each claim records its
# statement's start (s) and the time after the read returned (e); its
# token was taken in between, so a window measured from an s to an e
# contains every token it counts: an upper bound enforced by the server
# with no slack, not a timing assertion.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('rate');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'mq'");
$node->start;
$node->safe_psql('postgres', q{
CREATE EXTENSION mq;
SELECT mq.create_queue('rl', rate_limit => '20/s', rate_limit_burst => 5);
SELECT count(*) FROM mq.send_batch('rl', array_fill('{}'::jsonb, ARRAY[2000]));
CREATE TABLE got (msg_id bigint, s timestamptz, e timestamptz);
});

my $script = "$PostgreSQL::Test::Utils::tmp_check/rate_reader.sql";
open(my $fh, '>', $script) or die $!;
print $fh "INSERT INTO got SELECT msg_id, statement_timestamp(), clock_timestamp() FROM mq.read('rl', 3, NULL, '300 ms');\n";
close $fh;

# The readers' claims outlive them: pgbench's threads close their
# connections one after the other at the end, and a claim released when its
# session ended would be read again by a reader still finishing its last
# (waiting) read, and counted as handed out twice below.
{
	local $ENV{PGOPTIONS} = '-c mq.release_on_session_end=off';
	$node->command_ok(
		[ 'pgbench', '-n', '-c', '8', '-j', '2', '-T', '4', '-f', $script, '-d', $node->connstr('postgres') ],
		'8 readers read the rate-limited queue for 4 seconds');
}

my ($n, $secs) = split /\|/, $node->safe_psql('postgres',
	'SELECT count(*), extract(epoch FROM max(e) - min(s)) FROM got');
diag("$n messages handed out over $secs s");
ok($n > 0, 'messages were handed out');
ok($n <= 20 * $secs + 5, "at most 20/s x window + burst over the whole run ($n)");
is($node->safe_psql('postgres', q{
SELECT count(*) FROM got g1
 WHERE (SELECT count(*) FROM got g2 WHERE g2.s >= g1.s AND g2.e <= g1.e + interval '1 second')
       > 20 * (1 + extract(epoch FROM g1.e - g1.s)) + 5}),
	'0', 'no window of about one second holds more than rate x window + burst');
is($node->safe_psql('postgres', 'SELECT count(*) - count(DISTINCT msg_id) FROM got'), '0',
	'no message handed out twice');

# the limit can be lifted; then the reader takes what it asks for at once
$node->safe_psql('postgres', "SELECT mq.alter_queue('rl', rate_limit => 'none')");
is($node->safe_psql('postgres', "SELECT count(*) FROM mq.read('rl', 100)"), '100',
	'without the limit a read takes 100 at once');

$node->stop;
done_testing();
