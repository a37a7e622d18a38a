#!/usr/bin/env bash
# test/resync-upgrade.sh: re-sync the unreleased update script
# sql/mq--0.1.0--0.2.0.sql with sql/mq.sql, as step 1 of that script's
# header describes: its "BEGIN copy" block gets the current lines of
# sql/mq.sql from "-- Functions and views, by feature." to the end.
# Catalog-table, role and per-queue-table changes (step 2) stay a job by
# hand; test/t/040_upgrade.pl checks the result.
# Delete this file when 0.2.0 is released and its update script frozen.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python3 - <<'PY'
src = open('sql/mq.sql').read().split('\n')
upd = open('sql/mq--0.1.0--0.2.0.sql').read().split('\n')

def index(lines, prefix, start=0):
    for i in range(start, len(lines)):
        if lines[i].startswith(prefix):
            return i
    raise SystemExit('resync-upgrade: no line starting with %r' % prefix)

lines = src[index(src, '-- Functions and views, by feature.'):]
# a trailing blank line of the block is kept outside the copy
while lines and lines[-1] == '':
    lines = lines[:-1]
b = index(upd, '-- BEGIN copy of sql/mq.sql: functions and views')
e = index(upd, '-- END copy of sql/mq.sql: functions and views', b)
upd = upd[:b + 1] + lines + [''] * (upd[e - 1] == '') + upd[e:]
open('sql/mq--0.1.0--0.2.0.sql', 'w').write('\n'.join(upd))
PY
