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

# pg_regress: test/sql/NAME.sql against expected/NAME.out
REGRESS = $(sort $(basename $(notdir $(wildcard test/sql/*.sql))))
REGRESS_OPTS = --inputdir=test --load-extension=pgtap

# isolationtester: test/specs/NAME.spec against expected/NAME.out
ISOLATION = $(sort $(basename $(notdir $(wildcard test/specs/*.spec))))
ISOLATION_OPTS = --inputdir=test --outputdir=.

EXTRA_CLEAN = $(DATA_built) results output_iso regression.diffs regression.out tmp_check

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
