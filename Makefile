# mq: PGXS build.  `make && make install`, then CREATE EXTENSION mq (and,
# optionally, CREATE EXTENSION mq_pgmq: pgmq's API, docs/pgmq.md).
EXTENSION = mq mq_pgmq
EXTVERSION = 0.2.0

MODULE_big = mq
OBJS = $(patsubst %.c,%.o,$(wildcard src/*.c))
# the library refuses SQL objects of another version (src/queue.c)
PG_CPPFLAGS = -DMQ_VERSION=\"$(EXTVERSION)\"

# sql/mq.sql is the single source of mq's current version (pgvector's
# DATA_built); mq_pgmq's scripts are plain files.
DATA_built = sql/mq--$(EXTVERSION).sql
DATA = $(filter-out $(DATA_built),$(wildcard sql/mq--*.sql)) $(wildcard sql/mq_pgmq--*.sql)

# ---- tests ------------------------------------------------------------------
# `make install && make installcheck` runs the whole suite against the
# installed mq and the PostgreSQL of $(PG_CONFIG) with no server of yours:
# the tests need mq preloaded and test/mq.conf's settings, so every kind
# runs on temporary instances (pg_regress --temp-instance/--temp-config,
# PostgreSQL::Test::Cluster nodes with TEMP_CONFIG), as contrib modules that
# need shared_preload_libraries do in `make check`:
#   installcheck-regress    pg_regress: test/sql/NAME.sql, expected/NAME.out,
#                           and docs/reference.md's examples (reference_examples)
#   installcheck-isolation  isolationtester: test/specs/NAME.spec,
#                           expected/NAME.out
#   installcheck-tap        prove test/t/*.pl (TAP_TESTS, PROVE_TESTS)
# `installcheck` runs the three in turn, each even if another failed, and
# fails if any did.  It replaces PGXS's (NO_INSTALLCHECK), which would use
# the server at PGHOST/PGPORT and stop at the first failing kind; PGXS
# refuses `make check` for any extension (it must be installed first).
# EXTRA_REGRESS_OPTS reaches both pg_regress programs (--port=N, say);
# PROVE_TESTS='test/t/NAME.pl ...' picks TAP files, PROVE_FLAGS=--verbose.
# TAP files share set-up through test/perl/MqTest.pm, which they find
# with FindBin (PGXS's prove puts only . and src/test/perl on @INC).
# initdb refuses root: as root, test/run.sh runs them as `postgres`.
# REGRESS: test/sql/*.sql, and reference_examples, made from
# docs/reference.md's examples by test/reference-examples.py whenever the
# doc (or the script) is newer (never committed: the doc is their only copy).
MQ_REF_EXAMPLES = test/sql/reference_examples.sql expected/reference_examples.out
REGRESS = $(sort $(basename $(notdir $(wildcard test/sql/*.sql))) reference_examples)
REGRESS_OPTS = --inputdir=test
ISOLATION = $(sort $(basename $(notdir $(wildcard test/specs/*.spec))))
ISOLATION_OPTS = --inputdir=test --outputdir=.
TAP_TESTS = 1
PROVE_TESTS = $(sort $(wildcard test/t/*.pl))
NO_INSTALLCHECK = 1
MQ_TEST_CONF = $(abspath test/mq.conf)
# UTF8 and no locale whatever the caller's environment: the expected
# outputs hold multibyte text, whose column widths psql computes from the
# database's encoding (a fresh machine without LANG would get SQL_ASCII)
MQ_TEMP_INSTANCE = --temp-config='$(MQ_TEST_CONF)' --temp-instance=./tmp_check_$(patsubst installcheck-%,%,$@) \
	--encoding=UTF8 --no-locale

EXTRA_CLEAN = $(DATA_built) results tmp_check_regress tmp_check_isolation $(MQ_REF_EXAMPLES)

# mq-worker's sub-make gets CFLAGS and CPPFLAGS as the caller gave them
# (dpkg-buildpackage's hardening flags, say), captured before PGXS appends
# the server's: make exports a variable that came from the environment with
# its changed value, and the server's -D_GNU_SOURCE and
# -Wmissing-format-attribute then warn in mq-worker.c (errors under CI's
# -Werror).  Not set by the caller, they stay unset there.
MQ_WORKER_FLAGS := $(foreach v,CFLAGS CPPFLAGS,$(if $(filter environment command,$(firstword $(origin $(v)))),$(v)='$($(v))'))

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)

$(DATA_built): sql/mq.sql
	cp $< $@

# PGXS tracks no header dependencies: rebuild every object when a header
# changes, or objects disagree on struct layouts.
$(OBJS): $(wildcard src/*.h)

# mq-worker (src/bin/mq-worker), a libpq program: PGXS's PROGRAM cannot be
# combined with MODULE_big, so it has its own Makefile, run as a sub-make.
all: mq-worker-all
install: mq-worker-install
clean: mq-worker-clean
mq-worker-all mq-worker-install mq-worker-clean:
	$(MAKE) -C src/bin/mq-worker PG_CONFIG='$(PG_CONFIG)' EXTVERSION='$(EXTVERSION)' $(MQ_WORKER_FLAGS) $(patsubst mq-worker-%,%,$@)
.PHONY: mq-worker-all mq-worker-install mq-worker-clean

# The tests (see "tests" above).  pgTAP is created by the tests that use it.
installcheck:
	@rc=0; for kind in regress isolation tap; do \
		$(MAKE) --no-print-directory installcheck-$$kind || rc=1; \
	done; exit $$rc
installcheck installcheck-regress installcheck-isolation installcheck-tap: mq-not-root
installcheck-regress: $(MQ_REF_EXAMPLES)
	$(if $(REGRESS),$(pg_regress_installcheck) $(MQ_TEMP_INSTANCE) $(REGRESS_OPTS) $(REGRESS))
installcheck-isolation:
	$(if $(ISOLATION),$(pg_isolation_regress_installcheck) $(MQ_TEMP_INSTANCE) $(ISOLATION_OPTS) $(ISOLATION))
installcheck-tap: export TEMP_CONFIG = $(MQ_TEST_CONF)
installcheck-tap:
	$(if $(PROVE_TESTS),$(prove_installcheck))
$(MQ_REF_EXAMPLES) &: docs/reference.md test/reference-examples.py
	python3 test/reference-examples.py
# initdb's own refusal comes after a screen of pg_regress output
mq-not-root:
	@if [ "$$(id -u)" = 0 ]; then \
		echo 'make installcheck: initdb refuses root; run it as another user, or test/run.sh (which runs it as postgres)' >&2; \
		exit 1; \
	fi
.PHONY: installcheck installcheck-regress installcheck-isolation installcheck-tap mq-not-root

# `make dist`: the release's source archive for PGXN, mq-EXTVERSION.zip,
# made by git from the committed tree of DIST_REF (the release's tag, or
# HEAD before it is tagged); docs/packaging.md lists what a release is.
DIST_REF ?= HEAD
dist:
	git archive --format=zip --prefix=mq-$(EXTVERSION)/ --output=mq-$(EXTVERSION).zip $(DIST_REF)
.PHONY: dist
