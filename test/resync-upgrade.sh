#!/usr/bin/env bash
# test/resync-upgrade.sh: re-sync the unreleased update script
# sql/mq--0.1.0--0.2.0.sql with sql/mq.sql, as steps 1 and 2 of that
# script's header describe: its two "BEGIN copy" blocks get the current
# lines of sql/mq.sql.  Catalog-table, role and per-queue-table changes
# (step 3) stay a job by hand; test/t/040_upgrade.pl checks the result.
# Delete this file when 0.2.0 is released and its update script frozen.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
python3 - <<'PY'
import re
src = open('sql/mq.sql').read().split('\n')
upd = open('sql/mq--0.1.0--0.2.0.sql').read().split('\n')

def index(lines, prefix, start=0):
    for i in range(start, len(lines)):
        if lines[i].startswith(prefix):
            return i
    raise SystemExit('resync-upgrade: no line starting with %r' % prefix)

rights = index(src, '-- Rights: whether the caller may use a queue')
privs = index(src, '-- Privileges.')
end = len(src) - (1 if src[-1] == '' else 0)
blocks = {
    'functions and views': src[rights:privs],
    'privileges': src[privs:end],
}
for name, lines in blocks.items():
    b = index(upd, '-- BEGIN copy of sql/mq.sql: ' + name)
    e = index(upd, '-- END copy of sql/mq.sql: ' + name, b)
    # a trailing blank line of the block is kept outside the copy
    while lines and lines[-1] == '':
        lines = lines[:-1]
    upd = upd[:b + 1] + lines + [''] * (upd[e - 1] == '') + upd[e:]
open('sql/mq--0.1.0--0.2.0.sql', 'w').write('\n'.join(upd))
PY
