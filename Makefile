# stripe_sync: PGXS build
MODULE_big = stripe_sync
OBJS = src/stripe_sync.o src/guc.o src/xact.o src/bgw.o \
       src/shmem.o src/catalog.o src/catalog_data.o src/options.o src/ratelimit.o \
       src/text.o src/stripe_api.o src/http.o src/http_post.o src/admin.o \
       src/json_page.o src/nested.o src/jsonb_fast.o src/rowconv.o src/payload.o \
       src/fdw.o src/fdw_import.o src/fdw_quals.o src/fdw_request.o src/fdw_windows.o src/fdw_stats.o src/modify.o \
       src/sync_state.o src/sync_local.o src/children.o src/sync_outbox.o src/sync_events.o src/sync_reread.o \
        src/bf_windows.o src/bf_lists.o src/bf_parents.o src/helpers.o src/backfill.o src/bf_deal.o src/sync_relist.o src/sync_run.o src/connect.o \
       src/manage.o src/launcher.o src/ship_batch.o src/shipper.o src/webhook.o
EXTENSION = stripe_sync
DATA = sql/stripe_sync--0.1.sql sql/stripe_sync--0.1--0.2.sql
PGFILEDESC = "stripe_sync - Stripe in PostgreSQL"

PG_CPPFLAGS = -I$(srcdir)/src
# FDW and fmgr callbacks have fixed signatures (-Wno-unused-parameter), and
# PG_TRY's own _do_rethrow trips -Wclobbered; our variables are volatile.
PG_CFLAGS = -Wall -Wextra -Werror -Wno-unused-parameter -Wno-missing-field-initializers -Wno-clobbered
SHLIB_LINK = -lcurl -ljson-c
# a changed header rebuilds every file that includes it
PG_CFLAGS += -MMD -MP
EXTRA_CLEAN = src/*.d

# pg_regress suite: make installcheck, as an unprivileged user after make install.
# It runs in a temporary instance with the library preloaded, against the fake
# Stripe that test/regress_launcher starts for it.
REGRESS = fdw_1_setup fdw_2_options fdw_3_scan fdw_4_faults fdw_5_pushdown \
          fdw_6_writes fdw_7_catalog fdw_8_readme outbox_1_payload outbox_2_golden sync_1_manage \
          safe_1_crash safe_2_values safe_3_requests safe_4_secrets parse_1_json fdw_9_real log_check
REGRESS_OPTS = --temp-instance=./tmp_check --temp-config=$(CURDIR)/test/regress.conf \
               --launcher=$(CURDIR)/test/regress_launcher

PG_CONFIG ?= pg_config
PGXS := $(shell $(PG_CONFIG) --pgxs)
include $(PGXS)
-include $(OBJS:.o=.d)
