#!/usr/bin/env bash
# test/run.sh: run every mq test on a throwaway PostgreSQL 15 cluster.
#
#   test/run.sh                  # setup (packages, build, install), then tests
#   MQ_SKIP_SETUP=1 test/run.sh  # tests only; mq must be installed already
#
# Runs, in order:
#   1. test/setup.sh (unless MQ_SKIP_SETUP=1)
#   2. a private cluster: initdb in a temporary directory, settings from
#      test/mq.conf, Unix socket only (no TCP), run by the `postgres` OS user
#      when we are root
#   3. `make installcheck` against it: pg_regress (test/sql/*.sql) and then
#      isolationtester (test/specs/*.spec), each run even if the other fails
#   4. every TAP test test/t/*.pl with prove (PostgreSQL::Test::Cluster makes
#      its own nodes; as root the tests run as `postgres` from a copy;
#      t/040_upgrade.pl gets copies of the checkout and of its tag v0.1.0
#      through MQ_SOURCE_DIR and MQ_SOURCE_0_1_0)
#   5. test/pgmq-js: the pgmq-js client from npm against mq_pgmq, with
#      node's test runner, one test (skipped without node, listed)
#   6. clients/python/test.sh and clients/node/test.sh: each client's own
#      tests (pytest, node's test runner) against this cluster, one test
#      each (skipped without python3 or node, listed)
#   7. test/package.sh: the Debian package built and checked, one test
# and ends with one line `N passed, N failed` counting regression tests,
# isolation tests and TAP files (a TAP file that skips entirely, like
# t/100_citus_cluster.pl without Citus, counts as neither and is listed).
# Exits non-zero if anything failed.
# The cluster is stopped and removed on every exit.  On failure the diffs are
# printed and kept in regression.diffs; TAP and server logs go to tmp_check/.
#
# Environment: MQ_SKIP_SETUP=1, PG_CONFIG, MQ_TEST_PORT (default 55400 + pid % 100),
# MQ_TEST_KEEP=1 keeps the temporary directory.
set -uo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_MAJOR=15
# the commit tagged v0.1.0, for checkouts without tags (t/040_upgrade.pl)
RELEASE_0_1_0=8b81fc92262abd6a66189354771b8340bc0e24a4
# PG_CONFIG may point at another installation of PostgreSQL 15 (a private
# copy, so that several builds can be tested side by side).
PG_CONFIG=${PG_CONFIG:-/usr/lib/postgresql/$PG_MAJOR/bin/pg_config}

say() { printf 'run.sh: %s\n' "$*"; }

if [ "${MQ_SKIP_SETUP:-0}" != 1 ]; then
	"$REPO/test/setup.sh" || { say "test/setup.sh failed"; echo "0 passed, 1 failed"; exit 1; }
fi

PG_BIN=$("$PG_CONFIG" --bindir 2>/dev/null)
PGXS_TEST=$(dirname "$("$PG_CONFIG" --pgxs 2>/dev/null)")/../test
for f in "$PG_BIN/initdb" "$PG_BIN/pg_ctl" "$PGXS_TEST/regress/pg_regress" \
		"$PGXS_TEST/isolation/pg_isolation_regress"; do
	if [ ! -x "$f" ]; then
		say "$f missing: run test/setup.sh first"
		echo "0 passed, 1 failed"
		exit 1
	fi
done

# As root the server and the TAP tests run as `postgres` (initdb refuses root).
if [ "$(id -u)" -eq 0 ]; then
	RUN_USER=postgres
	AS_PG=(runuser -u postgres --)
else
	RUN_USER=$(id -un)
	AS_PG=()
fi

WORK=$(mktemp -d "${TMPDIR:-/tmp}/mq-test.XXXXXX")
chmod 755 "$WORK"
[ "$(id -u)" -eq 0 ] && chown "$RUN_USER": "$WORK"
DATA=$WORK/data
PORT=${MQ_TEST_PORT:-$((55400 + $$ % 100))}
server_started=0

cleanup() {
	if [ "$server_started" = 1 ]; then
		"${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$DATA" -m fast -w stop >/dev/null 2>&1 ||
			"${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$DATA" -m immediate -w stop >/dev/null 2>&1
		server_started=0
	fi
	if [ "${MQ_TEST_KEEP:-0}" = 1 ]; then
		say "kept $WORK"
	else
		rm -rf "$WORK"
	fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

passed=0
failed=0
failures=()
skipped=()

# Tests write results/, regression.diffs and tmp_check/ where they run: the
# checkout, or a copy of it when we cannot write there.
if [ -w "$REPO" ]; then
	TESTROOT=$REPO
else
	TESTROOT=$WORK/src
	cp -a "$REPO" "$TESTROOT"
	say "$REPO is not writable: running from a copy"
fi
rm -rf "$TESTROOT/results" "$TESTROOT/output_iso" "$TESTROOT/tmp_check"
rm -f "$TESTROOT/regression.diffs" "$TESTROOT/regression.out"

# ---- the cluster -----------------------------------------------------------
if ! "${AS_PG[@]}" "$PG_BIN/initdb" -D "$DATA" -U postgres -A trust \
		--no-locale -E UTF8 --no-sync >"$WORK/initdb.log" 2>&1; then
	cat "$WORK/initdb.log"
	say "initdb failed"
	echo "0 passed, 1 failed"
	exit 1
fi
{
	echo
	echo "# test/run.sh"
	echo "port = $PORT"
	echo "listen_addresses = ''"
	echo "unix_socket_directories = '$WORK'"
	if [ -f "$REPO/test/mq.conf" ]; then
		echo "# from test/mq.conf"
		cat "$REPO/test/mq.conf"
	fi
} >"$WORK/extra.conf"
# the postgres user may not be able to read the checkout: copy, don't include
"${AS_PG[@]}" sh -c "cat '$WORK/extra.conf' >> '$DATA/postgresql.conf'"
[ -f "$REPO/test/mq.conf" ] && cp "$REPO/test/mq.conf" "$WORK/mq.conf" && chmod 644 "$WORK/mq.conf"

say "starting a PostgreSQL $PG_MAJOR cluster in $DATA, port $PORT"
if ! "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$DATA" -l "$WORK/server.log" -w -t 120 start >/dev/null; then
	cat "$WORK/server.log"
	say "the server did not start"
	echo "0 passed, 1 failed"
	exit 1
fi
server_started=1

export PGHOST=$WORK PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
unset PGSERVICE PGPASSWORD PGOPTIONS

# ---- pg_regress and isolation ----------------------------------------------
# Count "... ok" / "... FAILED" lines of one pg_regress log.  Echoes "P F".
count_regress() {
	local log=$1 rc=$2 p f
	p=$(grep -cE '\.\.\. +ok( |$)|\.\.\. +failed \(ignored\)' "$log")
	f=$(grep -cE '\.\.\. +FAILED' "$log")
	# pg_regress failed before running a test (no database, no pgtap...)
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1
	fi
	echo "$p $f"
}

all_diffs=$WORK/all.diffs
: >"$all_diffs"

run_suite() {
	local name=$1 log=$WORK/$1.log rc p f
	shift
	say "make installcheck ($name)"
	(cd "$TESTROOT" && make -s --no-print-directory PG_CONFIG="$PG_CONFIG" installcheck "$@") 2>&1 | tee "$log"
	rc=${PIPESTATUS[0]}
	read -r p f < <(count_regress "$log" "$rc")
	passed=$((passed + p))
	failed=$((failed + f))
	if [ "$f" -ne 0 ]; then
		failures+=("$name")
		[ -f "$TESTROOT/regression.diffs" ] && cat "$TESTROOT/regression.diffs" >>"$all_diffs"
	fi
}

# Two runs so that a failing regression test does not skip the isolation
# tests (PGXS stops at the first failing command).  An empty list runs nothing.
if ls "$REPO"/test/sql/*.sql >/dev/null 2>&1; then
	run_suite regress ISOLATION=
fi
if ls "$REPO"/test/specs/*.spec >/dev/null 2>&1; then
	run_suite isolation REGRESS=
fi

if [ -s "$all_diffs" ]; then
	cp "$all_diffs" "$TESTROOT/regression.diffs"
fi
if [ "$failed" -ne 0 ]; then
	mkdir -p "$TESTROOT/tmp_check"
	cp "$WORK/server.log" "$TESTROOT/tmp_check/server.log" 2>/dev/null
fi

# ---- TAP -------------------------------------------------------------------
shopt -s nullglob
tap_files=("$REPO"/test/t/*.pl)
if [ ${#tap_files[@]} -gt 0 ]; then
	TAPDIR=$WORK/tap
	mkdir -p "$TAPDIR"
	cp -r "$REPO/test/t" "$TAPDIR/t"
	# t/040_upgrade.pl builds this checkout and mq 0.1.0: copies the test
	# user can read, 0.1.0 from git here: its tag, or its commit when the
	# checkout has no tags (a clone of one branch).  safe.directory: as
	# root, in a checkout (or a worktree's git directory) root does not
	# own, git refuses "dubious ownership"; archive only reads.
	mkdir -p "$TAPDIR/mq-src" "$TAPDIR/mq-0.1.0"
	tar -C "$REPO" --exclude=./.git --exclude=./tmp_check --exclude=./results \
		--exclude=./output_iso -cf - . | tar -C "$TAPDIR/mq-src" -xf -
	git_ro() { git -c safe.directory='*' -C "$REPO" "$@"; }
	v010=""
	for rev in v0.1.0 "$RELEASE_0_1_0"; do
		if git_ro cat-file -e "$rev^{commit}" 2>/dev/null; then
			v010=$rev
			break
		fi
	done
	if [ -z "$v010" ] || ! git_ro archive "$v010" | tar -x -C "$TAPDIR/mq-0.1.0"; then
		why=$(git_ro rev-parse --is-shallow-repository 2>&1 | head -n 1)
		say "neither tag v0.1.0 nor commit $RELEASE_0_1_0 here (git: $why): t/040_upgrade.pl will skip"
		rm -rf "$TAPDIR/mq-0.1.0"
	fi
	[ "$(id -u)" -eq 0 ] && chown -R "$RUN_USER": "$TAPDIR"
	tap_env=(
		PATH="$PG_BIN:$PATH"
		PERL5LIB="$PGXS_TEST/perl${PERL5LIB:+:$PERL5LIB}"
		PG_REGRESS="$PGXS_TEST/regress/pg_regress"
		TESTDIR="$TAPDIR"
		HOME="$TAPDIR"
		MQ_SOURCE_DIR="$TAPDIR/mq-src"
		MQ_SOURCE_0_1_0="$TAPDIR/mq-0.1.0"
	)
	[ -f "$WORK/mq.conf" ] && tap_env+=(TEMP_CONFIG="$WORK/mq.conf")
	for t in "${tap_files[@]}"; do
		name=t/$(basename "$t")
		say "prove $name"
		(cd "$TAPDIR" && "${AS_PG[@]}" env "${tap_env[@]}" prove -I "$PGXS_TEST/perl" "$name") 2>&1 |
			tee "$WORK/tap.log"
		rc=${PIPESTATUS[0]}
		if [ "$rc" -eq 0 ] && grep -q '^Result: PASS' "$WORK/tap.log"; then
			passed=$((passed + 1))
		elif [ "$rc" -eq 0 ] && grep -q '^Result: NOTESTS' "$WORK/tap.log"; then
			# plan skip_all, saying why (t/100_citus_cluster.pl without
			# Citus): counted neither passed nor failed, listed at the end
			skipped+=("$name")
		else
			failed=$((failed + 1))
			failures+=("$name")
		fi
	done
	if [ -d "$TAPDIR/tmp_check/log" ]; then
		mkdir -p "$TESTROOT/tmp_check"
		cp -r "$TAPDIR/tmp_check/log" "$TESTROOT/tmp_check/" 2>/dev/null
	fi
fi

# ---- pgmq-js ---------------------------------------------------------------
# pgmq's client from npm against mq_pgmq (installed by test/setup.sh with
# npm ci); it makes its own database in this cluster.
if ! command -v node >/dev/null 2>&1; then
	say "node not found: not running test/pgmq-js"
	skipped+=("pgmq-js")
elif [ ! -d "$REPO/test/pgmq-js/node_modules/pgmq-js" ]; then
	say "test/pgmq-js has no node_modules: run test/setup.sh (npm ci)"
	failed=$((failed + 1))
	failures+=("pgmq-js")
else
	say "node --test test/pgmq-js"
	if (cd "$REPO/test/pgmq-js" && timeout 300 node --test pgmq.test.js); then
		passed=$((passed + 1))
	else
		failed=$((failed + 1))
		failures+=("pgmq-js")
	fi
fi

# ---- clients ---------------------------------------------------------------
# The Python and Node.js clients' tests; each script makes its own
# databases in this cluster and exits 77 when its runtime is missing.
for client in python node; do
	say "clients/$client/test.sh"
	timeout 600 "$REPO/clients/$client/test.sh"
	rc=$?
	if [ "$rc" -eq 0 ]; then
		passed=$((passed + 1))
	elif [ "$rc" -eq 77 ]; then
		skipped+=("clients/$client")
	else
		failed=$((failed + 1))
		failures+=("clients/$client")
	fi
done

# ---- package ---------------------------------------------------------------
# The Debian package (debian/, pg_buildext) built from a copy and checked:
# one test.
say "test/package.sh"
if timeout 300 "$REPO/test/package.sh"; then
	passed=$((passed + 1))
else
	failed=$((failed + 1))
	failures+=("package")
fi

# ---- summary ---------------------------------------------------------------
if [ "$failed" -ne 0 ]; then
	if [ -s "$all_diffs" ]; then
		echo "======================== regression diffs ========================"
		cat "$all_diffs"
		echo "=================================================================="
		say "diffs kept in $TESTROOT/regression.diffs"
	fi
	say "failed: ${failures[*]}; logs in $TESTROOT/tmp_check/"
fi
[ ${#skipped[@]} -gt 0 ] && say "skipped (see their output above): ${skipped[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
