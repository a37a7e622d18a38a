#!/usr/bin/env bash
# clients/python/test.sh: the Python client's tests (pytest) against the
# server that the PG* variables name, as test/run.sh runs them against its
# cluster; they make and drop a database mq_client_py there.  Needs the
# Debian packages python3-psycopg and python3-pytest (test/setup.sh
# installs them).  Exit 0 passed, 77 skipped (no python3), else failed
# (psycopg or pytest missing included, as test/run.sh treats pgmq-js
# without node_modules).
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
# Debian's interpreter, where the packages are, even when another python3
# comes first in PATH
PYTHON=${PYTHON:-$(command -v /usr/bin/python3 || command -v python3)}
if [ -z "$PYTHON" ]; then
	echo "clients/python/test.sh: python3 not found" >&2
	exit 77
fi
if ! "$PYTHON" -c 'import psycopg, pytest' 2>/dev/null; then
	echo "clients/python/test.sh: $PYTHON lacks psycopg or pytest: run test/setup.sh (python3-psycopg, python3-pytest)" >&2
	exit 1
fi
# no __pycache__ or .pytest_cache in the checkout
PYTHONDONTWRITEBYTECODE=1 exec "$PYTHON" -m pytest -p no:cacheprovider -q tests "$@"
