#!/usr/bin/env bash
# bench/citus.sh -- the price of routing: mq's partitioned queues and work
# queues on one server against the same queues distributed on a 3-node
# Citus cluster (coordinator + 2 workers) on this machine
# (docs/scale-out.md).
#
#   bench/citus.sh                 # 10 s per run, 2 rounds
#   DUR=5 ROUNDS=1 bench/citus.sh  # quicker
#
# Needs Citus 13.2 and mq installed for PG_CONFIG (default: the private copy
# /opt/pgZ; ../shared/tools/build-citus.sh builds Citus).  Run as root: the
# servers run as the `postgres` OS user.  Installs nothing; all four servers
# live in a mktemp directory removed on exit.
#
# Same 2 cores for every node, so a cluster cannot be faster here: the
# figures show the cost of one more hop per statement, not a scale-out.
# Settings on every node: shared_buffers 128MB, citus.node_conninfo =
# 'sslmode=disable' (no TLS between nodes), and fsync and
# synchronous_commit off unless FSYNC=on: on this shared machine a durable
# commit costs more than anything routing adds, which would hide it.
#
# Workloads (pgbench -M prepared -n -c $CLIENTS -j 2 -T $DUR, queue of 4
# partitions):
#   send    SELECT mq.send('bench', '{"x": 1}', 'k' || random key of 1000)
#   poll    SELECT count(*) FROM mq.poll('bench', <a new group each time>, 'm', 100):
#           joins the group (catalog writes, on the coordinator on both
#           sides) and reads 100 messages from the earliest; each partition
#           costs one routed statement for its end and one for its rows
#   wsend   SELECT mq.send('wbench', '{"x": 1}'): a work queue (on the
#           cluster distributed by queue, on one worker)
#   wread   SELECT mq.ack('wbench', msg_id, receipt) FROM mq.read('wbench', 1):
#           a claim and an ack per transaction, from a queue prefilled with
#           $WPREFILL messages; reported as messages acked per second
#           (mq.metrics' total_acked over the run), not transactions
# Then the statements' plans on the cluster (Task Count: 1 = one shard).
# Raw pgbench output goes to bench/results/citus-<UTC timestamp>/.
set -euo pipefail

PG_CONFIG=${PG_CONFIG:-/opt/pgZ/usr/lib/postgresql/15/bin/pg_config}
PGBIN=$("$PG_CONFIG" --bindir)
DUR=${DUR:-10}
ROUNDS=${ROUNDS:-2}
CLIENTS=${CLIENTS:-4}
FSYNC=${FSYNC:-off}
PREFILL=${PREFILL:-20000}
WPREFILL=${WPREFILL:-60000}
BASE=${PORT_BASE:-55460}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
OUT=$HERE/results/citus-$(date -u +%Y%m%dT%H%M%SZ)

if [ ! -f "$("$PG_CONFIG" --pkglibdir)/citus.so" ]; then
	echo "citus.sh: Citus is not installed for $PG_CONFIG (../shared/tools/build-citus.sh)" >&2
	exit 2
fi
mkdir -p "$OUT"
W=$(mktemp -d /tmp/mq-citus-bench.XXXXXX)
chown postgres: "$W"
chmod 755 "$W"
ports=()
cleanup() {
	for d in "$W"/n*; do
		[ -d "$d" ] && runuser -u postgres -- "$PGBIN/pg_ctl" -D "$d" -m immediate -w stop >/dev/null 2>&1 || true
	done
	rm -rf "$W"
}
trap cleanup EXIT

# node NAME PORT PRELOAD: initdb and start a server on the loopback and a socket in $W
node() {
	local d=$W/$1
	runuser -u postgres -- "$PGBIN/initdb" -D "$d" -U postgres -A trust --no-sync >/dev/null
	cat >>"$d/postgresql.conf" <<EOF
port = $2
listen_addresses = '127.0.0.1'
unix_socket_directories = '$W'
shared_preload_libraries = '$3'
max_connections = 100
max_prepared_transactions = 50
shared_buffers = 128MB
max_wal_size = 4GB
citus.node_conninfo = 'sslmode=disable'
fsync = $FSYNC
synchronous_commit = $FSYNC
jit = off
EOF
	runuser -u postgres -- "$PGBIN/pg_ctl" -D "$d" -l "$W/$1.log" -w start >/dev/null || { cat "$W/$1.log" >&2; return 1; }
}
q() { local port=$1; shift; runuser -u postgres -- "$PGBIN/psql" -X -q -At -h "$W" -p "$port" -d postgres -v ON_ERROR_STOP=1 "$@"; }

node n0single $BASE mq
node n1coord $((BASE + 1)) citus,mq
node n2worker $((BASE + 2)) citus,mq
node n3worker $((BASE + 3)) citus,mq
for p in $((BASE + 1)) $((BASE + 2)) $((BASE + 3)); do q $p -c 'CREATE EXTENSION citus'; done
C=$((BASE + 1))
q $C -c "SELECT citus_set_coordinator_host('127.0.0.1', $C)" >/dev/null
q $C -c "SELECT citus_add_node('127.0.0.1', $((BASE + 2)))" -c "SELECT citus_add_node('127.0.0.1', $((BASE + 3)))" >/dev/null
q $BASE -c 'CREATE EXTENSION mq'
q $C -c 'CREATE EXTENSION mq' -c 'SELECT mq.citus_distribute()' >/dev/null

cat >"$W/send.sql" <<'EOF'
\set k random(1, 1000)
SELECT mq.send('bench', '{"x": 1}', 'k' || :k);
EOF
cat >"$W/poll.sql" <<'EOF'
\set g random(1, 1000000000)
SELECT count(*) FROM mq.poll('bench', 'g' || :client_id || '_' || :g, 'm', 100);
EOF
cat >"$W/wsend.sql" <<'EOF'
SELECT mq.send('wbench', '{"x": 1}');
EOF
cat >"$W/wread.sql" <<'EOF'
SELECT mq.ack('wbench', msg_id, receipt) FROM mq.read('wbench', 1);
EOF
chmod 644 "$W"/*.sql

fresh() {
	q "$1" -c "SELECT mq.drop_queue('bench')" -c "SELECT mq.create_queue('bench', partitions => 4)" >/dev/null
}
prefill() {
	local n=0
	while [ $n -lt "$PREFILL" ]; do
		# one key per batch: a transaction may send to one worker only
		q "$1" -c "SELECT count(*) FROM mq.send_batch('bench', array_fill('{\"x\": 1}'::jsonb, ARRAY[1000]),
		           array_fill('k$n'::text, ARRAY[1000]))" >/dev/null
		n=$((n + 1000))
	done
	q "$1" -c 'CHECKPOINT'
}
wfresh() {
	q "$1" -c "SELECT mq.drop_queue('wbench')" -c "SELECT mq.create_queue('wbench')" >/dev/null
}
wprefill() {
	local n=0
	while [ $n -lt "$WPREFILL" ]; do
		q "$1" -c "SELECT count(*) FROM mq.send_batch('wbench', array_fill('{\"x\": 1}'::jsonb, ARRAY[1000]))" >/dev/null
		n=$((n + 1000))
	done
	q "$1" -c 'CHECKPOINT'
}
acked() { q "$1" -c "SELECT total_acked FROM mq.metrics('wbench')"; }
bench() { # PORT SCRIPT LABEL
	runuser -u postgres -- "$PGBIN/pgbench" -h "$W" -p "$1" -M prepared -n -c "$CLIENTS" -j 2 -T "$DUR" \
		-f "$W/$2.sql" postgres >"$OUT/$3.txt" 2>&1
	grep -oP 'tps = \K[0-9.]+(?= \(without)' "$OUT/$3.txt" | cut -d. -f1
}

declare -A res
for r in $(seq 1 "$ROUNDS"); do
	for side in single cluster; do
		port=$BASE
		[ $side = cluster ] && port=$C
		fresh $port
		res[send_${side}_$r]=$(bench $port send send-$side-$r)
		fresh $port
		prefill $port
		res[poll_${side}_$r]=$(bench $port poll poll-$side-$r)
		wfresh $port
		res[wsend_${side}_$r]=$(bench $port wsend wsend-$side-$r)
		wfresh $port
		wprefill $port
		a0=$(acked $port)
		bench $port wread wread-$side-$r >/dev/null
		a1=$(acked $port)
		left=$(q $port -c "SELECT depth FROM mq.metrics('wbench')")
		[ "$left" -gt 0 ] || echo "citus.sh: wread emptied the queue (raise WPREFILL)" >&2
		res[wread_${side}_$r]=$(((a1 - a0) / DUR))
	done
done

{
	echo "mq on one server vs a 3-node Citus cluster on the same machine ($(nproc) cores)"
	echo "pgbench -M prepared -c $CLIENTS -j 2 -T $DUR; queue of 4 partitions; fsync $FSYNC; no TLS between nodes; load average $(cut -d' ' -f1-3 /proc/loadavg)"
	echo
	printf '%-34s %s\n' "workload (transactions/s)" "one server | cluster (each round)"
	for w in send poll wsend wread; do
		s=""; c=""
		for r in $(seq 1 "$ROUNDS"); do s="$s ${res[${w}_single_$r]}"; c="$c ${res[${w}_cluster_$r]}"; done
		case $w in
			send) label="mq.send with a key" ;;
			poll) label="mq.poll of 100 (new group)" ;;
			wsend) label="work queue: mq.send" ;;
			wread) label="work queue: read + ack (msgs/s)" ;;
		esac
		printf '%-34s %s |%s\n' "$label" "$s" "$c"
	done
	echo
	echo "Plans on the cluster (generic plans, as mq keeps them):"
	id=$(q $C -c "SELECT queue_id FROM mq.queue WHERE queue_name = 'bench'")
	q $C <<EOF
SET plan_cache_mode = force_generic_plan;
PREPARE s(int, text, jsonb) AS INSERT INTO mq.p_${id}_0 (segment, partition, key, payload) VALUES (0, \$1, \$2, \$3) RETURNING "offset";
PREPARE e(int, int, bool) AS SELECT mq._local_end(\$1, \$2, \$3) FROM mq.p_${id}_head WHERE partition = \$2;
PREPARE f(int, bigint, bigint, int) AS SELECT partition, "offset", key, payload FROM mq.p_${id}
  WHERE partition = \$1 AND "offset" > \$2 AND "offset" < \$3 ORDER BY "offset" LIMIT \$4;
\echo -- send: the routed INSERT (the trigger assigns the offset on the worker)
EXPLAIN (COSTS OFF) EXECUTE s(1, 'k', '{}');
\echo -- poll, 1: the visible end of the partition, computed on its worker
EXPLAIN (COSTS OFF) EXECUTE e($id, 1, true);
\echo -- poll, 2: the fetch below it
EXPLAIN (COSTS OFF) EXECUTE f(1, 0, 100, 100);
EOF
	wid=$(q $C -c "SELECT queue_id FROM mq.queue WHERE queue_name = 'wbench'")
	q $C <<EOF
SET plan_cache_mode = force_generic_plan;
PREPARE c(int, timestamptz, int, bigint, timestamptz, bigint, bigint) AS
UPDATE mq.q_${wid}_0 AS m SET vt = CASE WHEN m.attempts < \$3 THEN \$2 ELSE '-infinity'::timestamptz END,
  attempts = CASE WHEN m.attempts < \$3 THEN m.attempts + 1 ELSE m.attempts END,
  claimed = m.attempts < \$3, consumer = \$4, lapsed = m.claimed
 WHERE m.ctid = ANY (ARRAY(SELECT ctid FROM mq.q_${wid}_0 WHERE msg_id >= \$6 AND msg_id < \$7 AND vt < \$5
                          AND NOT blocked ORDER BY msg_id LIMIT \$1 FOR NO KEY UPDATE SKIP LOCKED))
 RETURNING m.msg_id;
\echo -- work queue read: the claim (storage.c), routed to the worker of the queue
EXPLAIN (COSTS OFF) EXECUTE c(1, now(), 5, NULL, now(), 1, 100);
EOF
} | tee "$OUT/summary.txt"
echo "results in $OUT"
