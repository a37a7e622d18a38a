#!/usr/bin/env bash
# test/package.sh: build the Debian package (debian/, pg_buildext) from a
# copy of the checkout and check what it holds.
#
#   test/package.sh          # as root or not; needs dpkg-dev, debhelper,
#                            # postgresql-server-dev-all (test/setup.sh)
#
# The tracked files of the working tree (edits included, untracked files
# not) are copied to a temporary directory, so the build never writes into
# the checkout, and `dpkg-buildpackage -us -uc -b` runs there; pg_buildext
# builds against the system's PostgreSQL of each version in
# debian/pgversions.  The .deb must then hold mq.so (with PostgreSQL's
# magic block), both control files, every script the Makefile installs,
# the JIT bitcode when that PostgreSQL has LLVM, and mq-worker, at the
# version of debian/changelog whose upstream part is the Makefile's
# EXTVERSION.  MQ_KEEP_PACKAGE=1 keeps the temporary directory.
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
say() { printf 'package: %s\n' "$*"; }
fail() { printf 'package: FAIL: %s\n' "$*" >&2; exit 1; }

for tool in dpkg-buildpackage dpkg-deb dpkg-parsechangelog pg_buildext nm git; do
	command -v "$tool" >/dev/null 2>&1 ||
		fail "$tool not found: install dpkg-dev, debhelper, postgresql-server-dev-all, binutils (test/setup.sh)"
done

TMP=$(mktemp -d "${TMPDIR:-/tmp}/mq-package.XXXXXX")
if [ "${MQ_KEEP_PACKAGE:-}" = 1 ]; then
	trap 'say "kept $TMP"' EXIT
else
	trap 'rm -rf "$TMP"' EXIT
fi

# pg_buildext passes each version's pg_config on make's command line; a
# PG_CONFIG from the caller's environment (a private PostgreSQL) must not
# reach the Makefiles' defaults either
unset PG_CONFIG

SRC=$TMP/mq
mkdir "$SRC"
git -c safe.directory='*' -C "$REPO" ls-files -z | (cd "$REPO" && tar --null -T - -cf -) | tar -xf - -C "$SRC"

EXTVERSION=$(sed -n 's/^EXTVERSION[[:space:]]*=[[:space:]]*//p' "$SRC/Makefile")
[ -n "$EXTVERSION" ] || fail "no EXTVERSION in the Makefile"
DEBVERSION=$(dpkg-parsechangelog -l "$SRC/debian/changelog" -S Version)
[ "${DEBVERSION%-*}" = "$EXTVERSION" ] ||
	fail "debian/changelog's version $DEBVERSION is not EXTVERSION $EXTVERSION plus a Debian revision"

say "dpkg-buildpackage -us -uc -b ($DEBVERSION; log: $TMP/build.log)"
if ! (cd "$SRC" && dpkg-buildpackage -us -uc -b) >"$TMP/build.log" 2>&1; then
	tail -n 40 "$TMP/build.log" >&2
	fail "dpkg-buildpackage failed (last lines above)"
fi

ARCH=$(dpkg --print-architecture)
checked=0
for PG_MAJOR in $(cd "$SRC" && pg_buildext supported-versions); do
	PKG=postgresql-$PG_MAJOR-mq
	DEB=$TMP/${PKG}_${DEBVERSION}_$ARCH.deb
	[ -f "$DEB" ] || fail "$DEB was not built"
	say "checking $(basename "$DEB")"

	version=$(dpkg-deb -f "$DEB" Version)
	[ "$version" = "$DEBVERSION" ] || fail "$PKG: version $version, expected $DEBVERSION"
	dpkg-deb -I "$DEB" >/dev/null || fail "$PKG: dpkg-deb -I cannot read it"

	LIB=usr/lib/postgresql/$PG_MAJOR/lib
	EXT=usr/share/postgresql/$PG_MAJOR/extension
	BIN=usr/lib/postgresql/$PG_MAJOR/bin
	want=("$LIB/mq.so" "$EXT/mq.control" "$EXT/mq_pgmq.control" "$BIN/mq-worker" usr/bin/mq-worker)
	# the scripts the Makefile installs: DATA_built (mq--EXTVERSION.sql,
	# from sql/mq.sql) and DATA (the other mq--*.sql, all mq_pgmq--*.sql)
	want+=("$EXT/mq--$EXTVERSION.sql")
	for f in "$SRC"/sql/mq--*.sql "$SRC"/sql/mq_pgmq--*.sql; do
		[ -e "$f" ] && want+=("$EXT/$(basename "$f")")
	done
	# PGXS installs bitcode for the JIT when PostgreSQL was built with LLVM
	pgxs_global=/usr/lib/postgresql/$PG_MAJOR/lib/pgxs/src/Makefile.global
	if grep -Eq '^with_llvm[[:space:]]*=[[:space:]]*yes' "$pgxs_global"; then
		want+=("$LIB/bitcode/mq.index.bc")
		for c in "$SRC"/src/*.c; do
			want+=("$LIB/bitcode/mq/src/$(basename "${c%.c}").bc")
		done
	fi

	dpkg-deb -c "$DEB" | awk '{ print $6 }' | sed 's|^\./||' >"$TMP/$PKG.files"
	missing=()
	for f in "${want[@]}"; do
		grep -qxF "$f" "$TMP/$PKG.files" || missing+=("$f")
	done
	[ ${#missing[@]} -eq 0 ] || fail "$PKG lacks: ${missing[*]}"

	ROOT=$TMP/root-$PG_MAJOR
	dpkg -x "$DEB" "$ROOT"
	nm -D --defined-only "$ROOT/$LIB/mq.so" | grep -qw Pg_magic_func ||
		fail "$PKG: mq.so does not export Pg_magic_func (not a PostgreSQL module)"
	"$ROOT/$BIN/mq-worker" --help >/dev/null ||
		fail "$PKG: mq-worker --help failed"
	# on PATH: /usr/bin/mq-worker, a relative link to the bindir's
	[ "$(readlink -f "$ROOT/usr/bin/mq-worker")" = "$(readlink -f "$ROOT/$BIN/mq-worker")" ] ||
		fail "$PKG: usr/bin/mq-worker is not a link to $BIN/mq-worker"
	"$ROOT/usr/bin/mq-worker" --version >/dev/null ||
		fail "$PKG: usr/bin/mq-worker --version failed"
	say "$PKG $DEBVERSION: ${#want[@]} files present, mq.so has its magic block, mq-worker runs, also as /usr/bin/mq-worker"
	checked=$((checked + 1))
done
[ "$checked" -gt 0 ] || fail "no PostgreSQL version to build for (debian/pgversions, installed postgresql-server-dev-NN)"
say "ok"
