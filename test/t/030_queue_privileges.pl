# Per-queue rights beyond one session (the rest is in test/sql/hostile_roles.sql).
#
# 1. Grants survive pg_dump / pg_restore: into a new database of the same
#    cluster, and into another cluster whose roles were created in another
#    order (so they have other OIDs: a grant kept as a bare role OID would
#    point at the wrong role or at none).  mq.queue_privileges is the same
#    after the restore, a revoked grant stays revoked, and the grantees can
#    still do exactly what they could.
# 2. A revoke takes effect at once in another session that is connected and
#    has used the queue (kept plans and caches), for mq.read and for the
#    steady-state mq.poll; and so does revoking the role mq_consumer.  A
#    grant does too.
use strict;
use warnings;

use PostgreSQL::Test::Cluster;
use PostgreSQL::Test::Utils;
use Test::More;

my $node = PostgreSQL::Test::Cluster->new('privileges');
$node->init;
$node->append_conf('postgresql.conf', "shared_preload_libraries = 'mq'");
$node->start;

# "ok:<output>" or the SQLSTATE of the error
sub as_role
{
	my ($n, $db, $role, $sql) = @_;
	my ($ret, $out, $err) = $n->psql($db, "\\set VERBOSITY verbose\n$sql",
		extra_params => [ '-U', $role ]);
	return "ok:$out" if $ret == 0;
	return $err =~ /ERROR:  ([0-9A-Z]{5}):/ ? $1 : "error: $err";
}

# output of a superuser query, or the error (without dying)
sub query_or_error
{
	my ($n, $db, $sql) = @_;
	my ($ret, $out, $err) = $n->psql($db, $sql);
	return $ret == 0 ? $out : "error: $err";
}

# Runs SQL as the superuser; returns whether it worked (without dying, so
# that a missing mq.grant fails the checks instead of ending the test).
sub try_sql
{
	my ($n, $db, $sql, $name) = @_;
	my ($ret, $out, $err) = $n->psql($db, $sql);
	is($ret, 0, $name) or diag($err);
	return $ret == 0;
}

$node->safe_psql('postgres', q{
CREATE ROLE tap_q1consume LOGIN;
CREATE ROLE tap_q1send LOGIN;
CREATE ROLE tap_q1admin LOGIN;
CREATE ROLE tap_grantee LOGIN;
CREATE ROLE tap_rolecons LOGIN;
CREATE DATABASE src;
});
$node->safe_psql('src', q{
CREATE EXTENSION mq;
SELECT mq.create_queue('q1'), mq.create_queue('q2'), mq.create_queue('l1', partitions => 2);
SELECT count(*) FROM mq.send_batch('q1', ARRAY['{"n": 1}', '{"n": 2}', '{"n": 3}']::jsonb[]);
SELECT count(*) FROM mq.send_batch('q2', ARRAY['{"secret": 1}']::jsonb[]);
SELECT count(*) FROM mq.send_batch('l1', ARRAY['{}', '{}']::jsonb[], keys => ARRAY['k1', 'k3']);
});
try_sql($node, 'src', q{
SELECT mq.grant('q1', 'tap_q1consume', 'consume');
SELECT mq.grant('l1', 'tap_q1consume', 'consume');
SELECT mq.grant('q1', 'tap_q1send', 'send');
SELECT mq.grant('q1', 'tap_q1admin', 'admin');
SELECT mq.grant('q2', 'tap_grantee', 'consume');
SELECT mq.revoke('q2', 'tap_grantee', 'consume');
}, 'grants and a revoke');

my $privileges_sql = q{
SELECT string_agg(format('%s %s %s', queue_name, grantee, privilege), ', '
                  ORDER BY queue_name, grantee, privilege) FROM mq.queue_privileges};
my $privileges = 'l1 tap_q1consume consume, q1 tap_q1admin admin, q1 tap_q1consume consume, q1 tap_q1send send';
is(query_or_error($node, 'src', $privileges_sql), $privileges, 'mq.queue_privileges before the dump');

# ---- 1. dump and restore ----------------------------------------------------
my $dump = "$PostgreSQL::Test::Utils::tmp_check/privileges.dump";
$node->command_ok([ 'pg_dump', '-Fc', '-f', $dump, '-d', $node->connstr('src') ], 'pg_dump');

# what each grantee may do, in a restored database
sub check_restored
{
	my ($n, $db, $where) = @_;
	is(query_or_error($n, $db, $privileges_sql), $privileges, "$where: mq.queue_privileges as dumped");
	is(as_role($n, $db, 'tap_q1consume', "SELECT count(*) FROM mq.read('q1', 10)"), 'ok:3',
		"$where: the consume grantee reads q1");
	is(as_role($n, $db, 'tap_q1consume', "SELECT count(*) FROM mq.poll('l1', 'g', 'm')"), 'ok:2',
		"$where: and polls l1");
	is(as_role($n, $db, 'tap_q1consume', "SELECT count(*) FROM mq.read('q2', 10)"), '42501',
		"$where: but cannot read q2");
	is(as_role($n, $db, 'tap_grantee', "SELECT count(*) FROM mq.read('q2', 10)"), '42501',
		"$where: the revoked grant stays revoked");
	is(as_role($n, $db, 'tap_q1send', "SELECT mq.send('q1', '{}') > 0"), 'ok:t',
		"$where: the send grantee sends to q1");
	is(as_role($n, $db, 'tap_q1send', "SELECT mq.send('q2', '{}')"), '42501',
		"$where: but not to q2");
	is(as_role($n, $db, 'tap_q1admin', "SELECT mq.purge('q1')"), 'ok:4',
		"$where: the admin grantee purges q1");
	is(as_role($n, $db, 'tap_q1admin', "SELECT mq.purge('q2')"), '42501',
		"$where: but not q2");
	is(as_role($n, $db, 'tap_q1admin', "SELECT mq.grant('q1', 'tap_grantee', 'send')"), 'ok:',
		"$where: and grants on q1");
	is(as_role($n, $db, 'tap_grantee', "SELECT mq.send('q1', '{}') > 0"), 'ok:t',
		"$where: which works");
}

$node->safe_psql('postgres', 'CREATE DATABASE dst');
$node->command_ok([ 'pg_restore', '-d', $node->connstr('dst'), $dump ],
	'pg_restore into a new database');
check_restored($node, 'dst', 'same cluster');

# another cluster: other role OIDs
my $other = PostgreSQL::Test::Cluster->new('restored');
$other->init;
$other->append_conf('postgresql.conf', "shared_preload_libraries = 'mq'");
$other->start;
$other->safe_psql('postgres', q{
CREATE ROLE tap_filler1; CREATE ROLE tap_filler2; CREATE ROLE tap_filler3;
CREATE ROLE tap_rolecons LOGIN;
CREATE ROLE tap_grantee LOGIN;
CREATE ROLE tap_q1admin LOGIN;
CREATE ROLE tap_q1send LOGIN;
CREATE ROLE tap_q1consume LOGIN;
CREATE DATABASE dst;
});
my $oids_sql = q{SELECT string_agg(oid::text, ',' ORDER BY rolname) FROM pg_roles WHERE rolname LIKE 'tap_q1%'};
isnt($other->safe_psql('postgres', $oids_sql), $node->safe_psql('postgres', $oids_sql),
	'the grantees have other OIDs in the other cluster');
$other->command_ok([ 'pg_restore', '-d', $other->connstr('dst'), $dump ],
	'pg_restore into the other cluster');
check_restored($other, 'dst', 'other cluster');
$other->stop;

# ---- 2. revocation seen at once by a live session ------------------------------
$node->safe_psql('src', q{SELECT count(*) FROM mq.send_batch('q1', ARRAY['{}', '{}', '{}', '{}']::jsonb[])});
my $bg = $node->background_psql('src', on_error_stop => 0, extra_params => [ '-U', 'tap_q1consume' ]);
$bg->query_safe('\set VERBOSITY verbose');

# the SQLSTATE of the session's last error, or "ok:<output>"
sub bg_query
{
	my ($session, $sql) = @_;
	my ($out, $failed) = $session->query($sql);
	my $err = $session->{stderr};
	$session->{stderr} = '';
	return "ok:$out" unless $failed;
	return $err =~ /ERROR:  ([0-9A-Z]{5}):/ ? $1 : "error: $err";
}

is(bg_query($bg, "SELECT count(*) FROM mq.read('q1', 1)"), 'ok:1', 'live session: reads q1');
is(bg_query($bg, "SELECT count(*) FROM mq.read('q1', 1)"), 'ok:1', 'live session: reads q1 again (plans kept)');
is(bg_query($bg, "SELECT count(*) FROM mq.poll('l1', 'live', 'm')"), 'ok:2', 'live session: polls l1');
is(bg_query($bg, "SELECT count(*) FROM mq.poll('l1', 'live', 'm')"), 'ok:0',
	'live session: polls l1 in the steady state');
try_sql($node, 'src', "SELECT mq.revoke('q1', 'tap_q1consume', 'consume')", 'revoke consume on q1');
is(bg_query($bg, "SELECT count(*) FROM mq.read('q1', 1)"), '42501', 'live session: read refused at once');
is(bg_query($bg, "SELECT mq.ack('q1', 1)"), '42501', 'live session: ack refused at once');
try_sql($node, 'src', "SELECT mq.revoke('l1', 'tap_q1consume', 'consume')", 'revoke consume on l1');
is(bg_query($bg, "SELECT count(*) FROM mq.poll('l1', 'live', 'm')"), '42501',
	'live session: steady-state poll refused at once');
is(bg_query($bg, "SELECT mq.commit('l1', 'live', 0, 1, 'm')"), '42501', 'live session: commit refused at once');
try_sql($node, 'src', "SELECT mq.grant('q1', 'tap_q1consume', 'consume')", 'grant consume on q1 again');
is(bg_query($bg, "SELECT count(*) FROM mq.read('q1', 1)"), 'ok:1', 'live session: reads q1 at once after the grant');
$bg->quit;

# the roles are grants too: revoking mq_consumer from a connected role
$node->safe_psql('postgres', 'GRANT mq_consumer TO tap_rolecons');
$bg = $node->background_psql('src', on_error_stop => 0, extra_params => [ '-U', 'tap_rolecons' ]);
$bg->query_safe('\set VERBOSITY verbose');
is(bg_query($bg, "SELECT count(*) FROM mq.read('q2', 1)"), 'ok:1', 'mq_consumer member: reads q2');
$node->safe_psql('postgres', 'REVOKE mq_consumer FROM tap_rolecons');
is(bg_query($bg, "SELECT count(*) FROM mq.read('q2', 1)"), '42501',
	'mq_consumer revoked: read refused at once');
$bg->quit;

$node->stop;
done_testing();
