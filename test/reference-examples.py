#!/usr/bin/env python3
"""Turn docs/reference.md's examples into the pg_regress test
reference_examples: test/sql/reference_examples.sql (what psql is given)
and expected/reference_examples.out (what it must print).  The Makefile runs
this before installcheck-regress; neither file is committed, so the doc is
the only copy of the examples and cannot drift from what mq does.

An example is a plain ``` block (no info string), written as pg_regress
writes psql's output: each statement as typed, then what psql prints for it.
The .sql gets the block without the printed lines; the .out gets the block
as it is.  A `<!-- example setup: ... -->` comment right before a block
holds statements that bring the database to the state the example starts
from; they run with their results sent to /dev/null (errors still show).
Between blocks the role and VERBOSITY are reset, unseen in the doc."""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOC = 'docs/reference.md'

# The roles the examples use (roles are per cluster: dropped again at the end)
ROLES = [('webapp', 'IN ROLE mq_producer'), ('email_worker', ''), ('ops_lead', ''),
         ('nobody', ''), ('grafana', 'IN ROLE mq_monitor'),
         ('alice', 'LOGIN IN ROLE email_worker')]
PREAMBLE = ['-- generated from %s by test/reference-examples.py: edit the doc, not this' % DOC,
            'CREATE EXTENSION mq;',
            # the doc's settings, not pg_regress's PGDATESTYLE and friends
            "SET datestyle = 'ISO, MDY';", 'SET intervalstyle = postgres;', "SET timezone = 'UTC';",
            'SET client_min_messages = warning;'] + \
    ['CREATE ROLE %s %s;' % (r, o) if o else 'CREATE ROLE %s;' % r for r, o in ROLES] + \
    ['RESET client_min_messages;',
     # the doc shows errors without CONTEXT (DETAIL and HINT stay)
     '\\set SHOW_CONTEXT never']
POSTAMBLE = ['RESET ROLE;', 'SET client_min_messages = warning;', 'DROP EXTENSION mq CASCADE;'] + \
    ['DROP ROLE %s;' % r for r, _ in reversed(ROLES)]

MESSAGE = re.compile(r'(ERROR|WARNING|NOTICE|INFO|DETAIL|HINT|CONTEXT|LINE \d+):|\s+\^$|Asynchronous notification ')
RULE = re.compile(r'-+(\+-+)*$')
FOOTER = re.compile(r'\(\d+ rows?\)$')


# a fenced block, with the setup comment right before it if any
BLOCK = re.compile(r'(?:^<!-- example setup:\n(.*?)^-->\n\s*)?^```(\w*)\n(.*?)^```$', re.M | re.S)


def examples(doc):
    """(line number, setup lines, block lines) of each example, in order."""
    for m in BLOCK.finditer(doc):
        if m.group(2) == '':
            yield (doc.count('\n', 0, m.start(2)) + 1, (m.group(1) or '').splitlines(),
                   m.group(3).splitlines())


def statements(block, where):
    """The block's input lines (everything but what psql printed), and
    whether the block ends in a result (psql prints a blank line after one:
    the doc may leave it out)."""
    out, i, done, result = [], 0, True, False
    while i < len(block):
        line = block[i]
        if done and (i + 1 < len(block) and RULE.match(block[i + 1]) or
                     line.startswith('-[ RECORD ')):
            # a table up to its footer, or \x records up to a blank line;
            # then psql's blank line
            expanded = line.startswith('-[')
            while i < len(block) and not (block[i] == '' if expanded else FOOTER.match(block[i])):
                i += 1
            if i == len(block) and not expanded:
                sys.exit('%s:%d: a result without its footer' % (DOC, where))
            i += 1 if expanded else 2
            result = True
            continue
        result = False
        if done and MESSAGE.match(line):
            i += 1
            continue
        out.append(line)
        code = re.sub(r'\s*--.*$', '', line).rstrip()
        if code:
            done = code.endswith(';') or code.lstrip().startswith('\\') or \
                re.search(r'\\g\w*$', code) is not None
        i += 1
    return out, result and block[-1] != ''


def main():
    with open(os.path.join(ROOT, DOC)) as f:
        doc = f.read()
    sql, expected = list(PREAMBLE), list(PREAMBLE)
    for where, setup, block in examples(doc):
        between = ['-- %s:%d' % (DOC, where), 'RESET ROLE;', '\\set VERBOSITY default']
        if setup:
            between += ['\\o /dev/null'] + setup + ['\\o']
        statements_, blank = statements(block, where)
        sql += between + statements_
        expected += between + block + [''] * blank
    sql += POSTAMBLE
    expected += POSTAMBLE
    for path, text in (('test/sql/reference_examples.sql', sql),
                       ('expected/reference_examples.out', expected)):
        with open(os.path.join(ROOT, path), 'w') as f:
            f.write('\n'.join(text) + '\n')


main()
