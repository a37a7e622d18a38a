#!/usr/bin/env bash
# clients/node/test.sh: the Node.js client's tests (node's test runner)
# against the server that the PG* variables name, as test/run.sh runs them
# against its cluster; they make and drop the databases
# mq_client_node_send and mq_client_node_consumer there.  Needs
# node_modules from `npm ci` (test/setup.sh runs it).  Exit 0 passed, 77
# skipped (no node), else failed.
set -uo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
if ! command -v node >/dev/null 2>&1; then
	echo "clients/node/test.sh: node not found" >&2
	exit 77
fi
if [ ! -d node_modules/pg ]; then
	echo "clients/node/test.sh: no node_modules: run npm ci in clients/node (test/setup.sh does)" >&2
	exit 1
fi
exec node --test test/*.test.js
