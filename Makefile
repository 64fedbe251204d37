# stripe_sync: PGXS build
MODULE_big = stripe_sync
OBJS = src/stripe_sync.o src/outbox.o src/payload.o src/http.o src/json_page.o src/options.o src/rowconv.o \
       src/catalog.o src/catalog_data.o src/fdw.o src/fdw_request.o src/modify.o src/admin.o \
       src/ratelimit.o src/sync.o src/worker.o src/jsonb_fast.o src/text.o
EXTENSION = stripe_sync
DATA = sql/stripe_sync--0.1.sql
PGFILEDESC = "stripe_sync - Stripe in PostgreSQL"

PG_CPPFLAGS = -I$(srcdir)/src
# FDW and fmgr callbacks have fixed signatures (-Wno-unused-parameter), and
# PG_TRY's own _do_rethrow trips -Wclobbered; our variables are volatile.
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-clobbered
SHLIB_LINK = -lcurl -ljson-c

# pg_regress suite: make installcheck, as an unprivileged user after make install.
# It runs in a temporary instance with the library preloaded, against the fake
# Stripe that test/regress_launcher starts for it.
REGRESS = fdw_1_setup fdw_2_options fdw_3_scan fdw_4_faults fdw_5_pushdown \
          fdw_6_writes fdw_7_catalog outbox_1_payload \
          safe_1_crash safe_2_values safe_3_requests safe_4_secrets log_check
REGRESS_OPTS = --temp-instance=./tmp_check --temp-config=$(CURDIR)/test/regress.conf \
               --launcher=$(CURDIR)/test/regress_launcher
CONTRIB_TESTDB = stripe_regress

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
