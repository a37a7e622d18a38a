#!/usr/bin/env bash
# test/setup.sh: make a Debian 12 machine ready for mq and install it.
#
#   test/setup.sh            # as root, or as a user with sudo
#
# 1. Installs the Debian packages mq needs to build and test (skipped when
#    they are all installed already, so a second run is fast and offline).
# 2. Builds and installs the extension (`make && make install` at the top)
#    and the signup example when it has a Makefile.
# 3. Installs the npm packages of test/pgmq-js and clients/node (npm ci,
#    from their lockfiles) for their tests; Node.js and npm come from
#    Debian (step 1) when the machine has none.
# 4. Builds and installs Citus when ../shared/tools/build-citus.sh exists
#    (MQ_SKIP_CITUS=1: not), for the cluster test.
# Safe to run again at any time.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
PG_MAJOR=15
PG_BIN=/usr/lib/postgresql/$PG_MAJOR/bin
PG_CONFIG=$PG_BIN/pg_config

PACKAGES=(
	postgresql-$PG_MAJOR            # server, initdb, pg_ctl
	postgresql-server-dev-$PG_MAJOR # PGXS, pg_regress, isolationtester, TAP modules
	postgresql-$PG_MAJOR-pgtap      # pgTAP, loaded by the regression tests
	libpq-dev
	libkrb5-dev                     # gssapi.h, which the server's libpq/scram.h includes (src/citus.c)
	libipc-run-perl                 # needed by PostgreSQL::Test::Cluster
	perl                            # prove
	pgbouncer                       # t/080_pgbouncer.pl runs its own (never the service)
	prometheus-postgres-exporter    # t/090_postgres_exporter.pl runs its own exporter
	prometheus                      # promtool, for the example alert rules (t/090)
	build-essential
	make
	ca-certificates                 # npm's registry over https (no longer a recommend)
	# test/package.sh: dpkg-buildpackage, debian/rules' dh and pg_buildext
	# (Rules-Requires-Root: no, so no fakeroot)
	dpkg-dev
	debhelper
	git                             # package.sh's file list, t/040's v0.1.0 sources
	postgresql-server-dev-all
	python3                         # test/reference-examples.py (make installcheck-regress)
	python3-psycopg                 # clients/python and its tests
	python3-pytest
)
# Node.js and npm for the pgmq-js and clients/node tests, from Debian unless the machine has
# them already (a newer Node.js of its own)
if ! command -v node >/dev/null 2>&1 || ! command -v npm >/dev/null 2>&1; then
	PACKAGES+=(nodejs npm)
fi

say() { printf 'setup: %s\n' "$*"; }

# Run a command as root: directly, through sudo, or not at all.
as_root() {
	if [ "$(id -u)" -eq 0 ]; then
		"$@"
	elif command -v sudo >/dev/null 2>&1; then
		sudo "$@"
	else
		return 127
	fi
}

missing=()
for p in "${PACKAGES[@]}"; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed'; then
		missing+=("$p")
	fi
done
if [ ${#missing[@]} -gt 0 ]; then
	say "installing packages: ${missing[*]}"
	if ! command -v apt-get >/dev/null 2>&1; then
		say "apt-get not found: this script supports Debian 12; install ${missing[*]} by hand" >&2
		exit 1
	fi
	if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
		say "not root and no sudo: as root run" >&2
		say "  apt-get update && apt-get install -y --no-install-recommends ${missing[*]}" >&2
		exit 1
	fi
	export DEBIAN_FRONTEND=noninteractive
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q
	# Recommends are left out (prometheus would bring node_exporter, postgresql
	# sysstat); where systemd runs, the services these packages start are
	# stopped: every test runs its own server, pooler and exporter.
	as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
		-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
		"${missing[@]}"
	for s in pgbouncer prometheus-postgres-exporter prometheus; do
		if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$s" 2>/dev/null; then
			say "stopping the $s service its install started"
			as_root systemctl stop "$s" || true
		fi
	done
else
	say "packages already installed"
fi

if [ ! -x "$PG_CONFIG" ]; then
	say "$PG_CONFIG missing after install" >&2
	exit 1
fi

# Build as the invoking user; install into the PostgreSQL directories, which
# need root unless they are writable.
install_dirs_writable() {
	[ -w "$("$PG_CONFIG" --sharedir)/extension" ] && [ -w "$("$PG_CONFIG" --pkglibdir)" ]
}

build_and_install() {
	local dir=$1
	say "building $dir"
	make -C "$dir" PG_CONFIG="$PG_CONFIG"
	if [ "$(id -u)" -eq 0 ] || install_dirs_writable; then
		make -C "$dir" PG_CONFIG="$PG_CONFIG" install
	elif command -v sudo >/dev/null 2>&1; then
		sudo make -C "$dir" PG_CONFIG="$PG_CONFIG" install
	else
		say "cannot install: run as root: make -C $dir PG_CONFIG=$PG_CONFIG install" >&2
		exit 1
	fi
}

build_and_install "$REPO"
if [ -f "$REPO/examples/signup/Makefile" ]; then
	build_and_install "$REPO/examples/signup"
fi
say "mq installed ($("$PG_CONFIG" --version))"

# 3. pgmq-js, the pgmq client that test/run.sh drives mq_pgmq with.  A
#    failure does not stop the setup: run.sh then counts that test failed.
#    clients/node, the Node.js client, the same way for its tests.
if command -v npm >/dev/null 2>&1; then
	for dir in test/pgmq-js clients/node; do
		say "npm ci in $dir"
		(cd "$REPO/$dir" && npm ci --prefer-offline --no-audit --no-fund) ||
			say "npm ci failed: the tests of $dir will fail"
	done
else
	say "npm not found: the pgmq-js and clients/node tests will be skipped"
fi

# 4. Citus, for t/100_citus_cluster.pl (which skips without it): built from
#    its source tarball by ../shared/tools/build-citus.sh when that script
#    is there (a few minutes; it does nothing when Citus 13.2 is installed).
#    MQ_SKIP_CITUS=1 skips this step; a failed build only makes that test
#    skip.
CITUS_BUILD=$REPO/../shared/tools/build-citus.sh
if [ "${MQ_SKIP_CITUS:-0}" = 1 ] || [ ! -f "$CITUS_BUILD" ]; then
	say "not building Citus (MQ_SKIP_CITUS=1 or no $CITUS_BUILD)"
elif [ -f "$("$PG_CONFIG" --pkglibdir)/citus.so" ]; then
	say "citus already installed"
elif as_root true; then
	say "building Citus with $CITUS_BUILD"
	# its apt-get install needs a fresh package list
	as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q >/dev/null || true
	as_root env PG_CONFIG="$PG_CONFIG" bash "$CITUS_BUILD" ||
		say "building Citus failed: t/100_citus_cluster.pl will skip"
else
	say "not root and no sudo: not building Citus (t/100_citus_cluster.pl will skip)"
fi
