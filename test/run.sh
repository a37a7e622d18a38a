#!/usr/bin/env bash
# test/run.sh: run every mq test on throwaway PostgreSQL 15 instances.
#
#   test/run.sh                  # setup (packages, build, install), then tests
#   MQ_SKIP_SETUP=1 test/run.sh  # tests only; mq must be installed already
#
# Runs, in order:
#   1. test/setup.sh (unless MQ_SKIP_SETUP=1)
#   2. `make installcheck-regress`, `make installcheck-isolation` and
#      `make installcheck-tap` (the Makefile's `installcheck`, one kind at a
#      time so that each is counted and each runs even if another failed):
#      pg_regress (test/sql/*.sql), isolationtester (test/specs/*.spec) and
#      prove (test/t/*.pl), each on temporary instances with test/mq.conf;
#      as root from a copy owned by `postgres`, run by `postgres` (initdb
#      refuses root).  t/040_upgrade.pl gets mq 0.1.0 from git here (its tag,
#      or its commit in a checkout without tags) through MQ_SOURCE_0_1_0.
#   3. a private cluster for the client tests (initdb in a temporary
#      directory, test/mq.conf, Unix socket only, PGHOST/PGPORT exported):
#      test/pgmq-js, the pgmq-js client from npm against mq_pgmq with node's
#      test runner, one test (skipped without node, listed), and
#      clients/python/test.sh and clients/node/test.sh, each client's own
#      tests (pytest, node's test runner), one test each (skipped without
#      python3 or node, listed)
#   4. test/package.sh: the Debian package built and checked, one test
# and ends with one line `N passed, N failed` counting regression tests,
# isolation tests, TAP files and the two above (a TAP file that skips entirely, like
# t/100_citus_cluster.pl without Citus, counts as neither and is listed; one
# prove did not report as passed or skipped counts as failed).
# Exits non-zero if anything failed.
# The cluster is stopped and removed on every exit.  On failure the diffs are
# printed and kept in regression.diffs; the logs are in tmp_check/log (TAP,
# and server.log of the client tests' cluster), tmp_check_regress/log and
# tmp_check_isolation/log (the instances of failed pg_regress runs), copied
# into the checkout when the tests ran from a copy.
#
# Environment: MQ_SKIP_SETUP=1, PG_CONFIG, MQ_TEST_PORT (default 55400 + pid % 100:
# pg_regress's instances and the client tests' cluster), MQ_TEST_KEEP=1 keeps
# the temporary directory.
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

# Tests write results/, regression.diffs and tmp_check*/ where they run: the
# checkout when the test user can write there, else a copy of it (always as
# root: the tests run as postgres).
if [ "$(id -u)" -ne 0 ] && [ -w "$REPO" ]; then
	TESTROOT=$REPO
else
	TESTROOT=$WORK/src
	mkdir -p "$TESTROOT"
	tar -C "$REPO" --exclude=./.git --exclude=./tmp_check --exclude=./results \
		--exclude=./output_iso --exclude='./tmp_check_*' -cf - . | tar -C "$TESTROOT" -xf -
	[ "$(id -u)" -eq 0 ] && chown -R "$RUN_USER": "$TESTROOT"
	say "running the tests from a copy, $TESTROOT"
fi
rm -rf "$TESTROOT/results" "$TESTROOT/output_iso" "$TESTROOT"/tmp_check*
rm -f "$TESTROOT/regression.diffs" "$TESTROOT/regression.out"

# t/040_upgrade.pl builds mq 0.1.0: from git here, its tag, or its commit
# when the checkout has no tags (a clone of one branch).  safe.directory: as
# root, in a checkout (or a worktree's git directory) root does not own, git
# refuses "dubious ownership"; archive only reads.
SRC_0_1_0=$WORK/mq-0.1.0
mkdir -p "$SRC_0_1_0"
git_ro() { git -c safe.directory='*' -C "$REPO" "$@"; }
v010=""
for rev in v0.1.0 "$RELEASE_0_1_0"; do
	if git_ro cat-file -e "$rev^{commit}" 2>/dev/null; then
		v010=$rev
		break
	fi
done
if [ -z "$v010" ] || ! git_ro archive "$v010" | tar -x -C "$SRC_0_1_0"; then
	why=$(git_ro rev-parse --is-shallow-repository 2>&1 | head -n 1)
	say "neither tag v0.1.0 nor commit $RELEASE_0_1_0 here (git: $why): t/040_upgrade.pl will skip"
	rm -rf "$SRC_0_1_0"
fi
[ "$(id -u)" -eq 0 ] && chown -R "$RUN_USER": "$WORK"

# ---- make installcheck: pg_regress, isolation, TAP ---------------------------
# Count "... ok" / "... FAILED" lines of one pg_regress log.  Echoes "P F".
count_regress() {
	local log=$1 rc=$2 p f
	p=$(grep -cE '\.\.\. +ok( |$)|\.\.\. +failed \(ignored\)' "$log")
	f=$(grep -cE '\.\.\. +FAILED' "$log")
	# pg_regress failed before running a test (initdb, no pgtap...)
	if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then
		f=1
	fi
	echo "$p $f"
}

all_diffs=$WORK/all.diffs
: >"$all_diffs"
make_env=(
	HOME="$WORK"
	MQ_SOURCE_0_1_0="$SRC_0_1_0"
)

# make installcheck-KIND as the test user, printing its output (kept in
# $WORK/KIND.log); sets rc.
run_make() {
	local kind=$1
	say "make installcheck-$kind"
	"${AS_PG[@]}" env "${make_env[@]}" make -C "$TESTROOT" -s --no-print-directory \
		PG_CONFIG="$PG_CONFIG" EXTRA_REGRESS_OPTS="--port=$PORT" "installcheck-$kind" 2>&1 |
		tee "$WORK/$kind.log"
	rc=${PIPESTATUS[0]}
}

for kind in regress isolation; do
	case $kind in
	regress) list=("$REPO"/test/sql/*.sql) ;;
	isolation) list=("$REPO"/test/specs/*.spec) ;;
	esac
	[ -e "${list[0]}" ] || continue
	run_make "$kind"
	read -r p f < <(count_regress "$WORK/$kind.log" "$rc")
	passed=$((passed + p))
	failed=$((failed + f))
	if [ "$f" -ne 0 ]; then
		failures+=("$kind")
		[ -f "$TESTROOT/regression.diffs" ] && cat "$TESTROOT/regression.diffs" >>"$all_diffs"
	fi
done
if [ -s "$all_diffs" ]; then
	cp "$all_diffs" "$TESTROOT/regression.diffs"
fi

# One prove for every TAP file: a file counts as passed on prove's
# "NAME .. ok" line, as skipped on "NAME .. skipped: why" (plan skip_all,
# like t/100_citus_cluster.pl without Citus); any other file (failed, died,
# never run) as failed.  prove prints that line once the file is done, after
# the file's own diagnostics, so they cannot split it.
shopt -s nullglob
tap_files=("$REPO"/test/t/*.pl)
if [ ${#tap_files[@]} -gt 0 ]; then
	run_make tap
	for t in "${tap_files[@]}"; do
		name=test/t/$(basename "$t")
		if grep -qxE "$name \.+ ok" "$WORK/tap.log"; then
			passed=$((passed + 1))
		elif grep -qE "^$name \.+ skipped:" "$WORK/tap.log"; then
			skipped+=("$name")
		else
			failed=$((failed + 1))
			failures+=("$name")
		fi
	done
fi

# the logs (not the data directories), into the checkout when the tests
# ran from a copy
if [ "$TESTROOT" != "$REPO" ] && [ -w "$REPO" ]; then
	rm -rf "$REPO"/tmp_check*
	for d in "$TESTROOT"/tmp_check*/log; do
		mkdir -p "$REPO/$(basename "$(dirname "$d")")"
		cp -r "$d" "$REPO/$(basename "$(dirname "$d")")/" 2>/dev/null
	done
	[ -f "$TESTROOT/regression.diffs" ] && cp "$TESTROOT/regression.diffs" "$REPO/"
fi
LOGROOT=$TESTROOT
[ "$TESTROOT" != "$REPO" ] && [ -w "$REPO" ] && LOGROOT=$REPO

# ---- the cluster for the client tests ---------------------------------------
# stops the suite at a failure here: the count so far, plus this one
cluster_failed() {
	say "$1"
	failed=$((failed + 1))
	echo "$passed passed, $failed failed"
	exit 1
}
if ! "${AS_PG[@]}" "$PG_BIN/initdb" -D "$DATA" -U postgres -A trust \
		--no-locale -E UTF8 --no-sync >"$WORK/initdb.log" 2>&1; then
	cat "$WORK/initdb.log"
	cluster_failed "initdb failed"
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

say "starting a PostgreSQL $PG_MAJOR cluster in $DATA, port $PORT"
if ! "${AS_PG[@]}" "$PG_BIN/pg_ctl" -D "$DATA" -l "$WORK/server.log" -w -t 120 start >/dev/null; then
	cat "$WORK/server.log"
	cluster_failed "the server did not start"
fi
server_started=1

export PGHOST=$WORK PGPORT=$PORT PGUSER=postgres PGDATABASE=postgres
unset PGSERVICE PGPASSWORD PGOPTIONS

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
	mkdir -p "$LOGROOT/tmp_check"
	cp "$WORK/server.log" "$LOGROOT/tmp_check/server.log" 2>/dev/null
	if [ -s "$all_diffs" ]; then
		echo "======================== regression diffs ========================"
		cat "$all_diffs"
		echo "=================================================================="
		say "diffs kept in $LOGROOT/regression.diffs"
	fi
	say "failed: ${failures[*]}; logs in $LOGROOT/tmp_check*/"
fi
[ ${#skipped[@]} -gt 0 ] && say "skipped (see their output above): ${skipped[*]}"
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
