# Shared by the main-job command and the benchmarks: a scratch PostgreSQL
# cluster with stripe_sync preloaded and the fake Stripe, both on free loopback
# ports, run as an unprivileged user when invoked as root.  Source it, then
# call env_setup; everything started is stopped on exit.
set -uo pipefail

ENV_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PG_CONFIG=${PG_CONFIG:-$(command -v pg_config || echo /usr/lib/postgresql/15/bin/pg_config)}
PGBIN=$("$PG_CONFIG" --bindir 2>/dev/null || echo /usr/lib/postgresql/15/bin)
RUNAS=stripe_test

env_log() { printf '== %s\n' "$*" >&2; }

# install packages, build and install the extension (root only)
env_build() {
  if [ "$(id -u)" -eq 0 ]; then
    local need=()
    for pkg in postgresql-15 postgresql-server-dev-15 libcurl4-openssl-dev libjson-c-dev curl python3 make gcc; do
      dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
    done
    if [ ${#need[@]} -gt 0 ]; then
      env_log "installing ${need[*]}"
      apt-get update -qq >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    fi
    PGBIN=$("$PG_CONFIG" --bindir)
    make -C "$ENV_ROOT" -s PG_CONFIG="$PG_CONFIG" >/dev/null && make -C "$ENV_ROOT" -s PG_CONFIG="$PG_CONFIG" install >/dev/null || { echo "build failed" >&2; exit 1; }
    id "$RUNAS" >/dev/null 2>&1 || useradd --system --create-home --shell /bin/bash "$RUNAS"
  fi
}

as_runner() {
  if [ "$(id -u)" -eq 0 ]; then runuser -u "$RUNAS" -- env HOME="$ENV_DIR" "$@"; else "$@"; fi
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

env_cleanup() {
  [ -n "${ENV_PGDATA:-}" ] && [ -f "$ENV_PGDATA/postmaster.pid" ] && as_runner "$PGBIN/pg_ctl" -D "$ENV_PGDATA" -m immediate stop >/dev/null 2>&1
  [ -n "${ENV_FAKE_PID:-}" ] && kill "$ENV_FAKE_PID" 2>/dev/null && wait "$ENV_FAKE_PID" 2>/dev/null
  [ -n "${ENV_INTEMPT_PID:-}" ] && kill "$ENV_INTEMPT_PID" 2>/dev/null && wait "$ENV_INTEMPT_PID" 2>/dev/null
  [ -n "${ENV_DIR:-}" ] && [ -z "${KEEP_TMP:-}" ] && rm -rf "$ENV_DIR"
}

# env_setup "<fake --counts>" "<extra postgresql.conf lines>"
env_setup() {
  local counts=$1 conf=${2:-}
  ENV_DIR=$(mktemp -d "${TMPDIR:-/tmp}/stripe_sync_env.XXXXXX")
  trap env_cleanup EXIT
  [ "$(id -u)" -eq 0 ] && chown "$RUNAS" "$ENV_DIR"
  if [ -n "${STRIPE_API_KEY:-}" ]; then
    ENV_API_URL=https://api.stripe.com
    ENV_API_KEY=$STRIPE_API_KEY
  else
    cp "$ENV_ROOT/test/fake_stripe.py" "$ENV_ROOT/test/fakelib.py" "$ENV_ROOT/test/fixtures/stripe/fixtures3.json" "$ENV_DIR/"
    [ "$(id -u)" -eq 0 ] && chown "$RUNAS" "$ENV_DIR"/*
    env_log "starting the fake Stripe ($counts)"
    # the fake's key: a test key, unless ENV_FAKE_KEY names another (sk_live_… for live mode)
    ENV_API_KEY=${ENV_FAKE_KEY:-sk_test_fake}
    python3 "$ENV_DIR/fake_stripe.py" --port 0 --port-file "$ENV_DIR/fake.port" --api-key "$ENV_API_KEY" \
      --fixtures "$ENV_DIR/fixtures3.json" ${counts:+--counts "$counts"} \
      --rate-limit "${ENV_FAKE_RATE_LIMIT:-0}" --endpoint-rate-limit "${ENV_FAKE_RATE_LIMIT:-0}" \
      --live-rate-limit "${ENV_FAKE_LIVE_RATE_LIMIT:-0}" &
    ENV_FAKE_PID=$!
    for _ in $(seq 600); do [ -s "$ENV_DIR/fake.port" ] && break; sleep 0.1; done
    [ -s "$ENV_DIR/fake.port" ] || { echo "the fake Stripe did not start" >&2; exit 1; }
    ENV_API_URL="http://127.0.0.1:$(cat "$ENV_DIR/fake.port")"
  fi
  ENV_PGDATA=$ENV_DIR/pgdata
  ENV_PGPORT=$(free_port)
  env_log "starting PostgreSQL on port $ENV_PGPORT"
  as_runner "$PGBIN/initdb" -D "$ENV_PGDATA" -A trust -U postgres >/dev/null || exit 1
  cat >> "$ENV_PGDATA/postgresql.conf" <<CONF
port = $ENV_PGPORT
listen_addresses = ''
unix_socket_directories = '$ENV_DIR'
shared_preload_libraries = 'stripe_sync'
$conf
CONF
  as_runner "$PGBIN/pg_ctl" -D "$ENV_PGDATA" -l "$ENV_DIR/postgres.log" -w start >/dev/null || { cat "$ENV_DIR/postgres.log"; exit 1; }
  env_psql -q <<SQL
CREATE EXTENSION stripe_sync;
CREATE SERVER stripe FOREIGN DATA WRAPPER stripe_sync OPTIONS (api_url '$ENV_API_URL');
CREATE USER MAPPING FOR CURRENT_USER SERVER stripe OPTIONS (api_key '$ENV_API_KEY');
CREATE SCHEMA stripe;
IMPORT FOREIGN SCHEMA stripe FROM SERVER stripe INTO stripe;
SQL
}

env_psql() { as_runner "$PGBIN/psql" -X -h "$ENV_DIR" -p "$ENV_PGPORT" -U postgres -d postgres -v ON_ERROR_STOP=1 "$@"; }

# env_intempt: a server "intempt" and a user mapping for Intempt's tracking
# API: the real one when INTEMPT_API_KEY (prefix.secret), INTEMPT_ORG,
# INTEMPT_PROJECT and INTEMPT_SOURCE_ID are set, else the bundled fake
# (ENV_INTEMPT_URL is then its address, for its /_control API).
env_intempt() {
  local url key org project source
  if [ -n "${INTEMPT_API_KEY:-}" ]; then
    url=${INTEMPT_API_URL:-https://api.intempt.com/v1} key=$INTEMPT_API_KEY
    org=${INTEMPT_ORG:?set INTEMPT_ORG} project=${INTEMPT_PROJECT:?set INTEMPT_PROJECT}
    source=${INTEMPT_SOURCE_ID:?set INTEMPT_SOURCE_ID}
    ENV_INTEMPT_URL=
  else
    org=acme project=web source=123456789 key=demo.intempt-secret
    cp "$ENV_ROOT/test/fake_intempt.py" "$ENV_ROOT/test/fakelib.py" "$ENV_DIR/"
    [ "$(id -u)" -eq 0 ] && chown "$RUNAS" "$ENV_DIR/fake_intempt.py" "$ENV_DIR/fakelib.py"
    env_log "starting the fake Intempt"
    python3 "$ENV_DIR/fake_intempt.py" --port 0 --port-file "$ENV_DIR/intempt.port" \
      --org $org --project $project --source-id $source --api-key $key &
    ENV_INTEMPT_PID=$!
    for _ in $(seq 600); do [ -s "$ENV_DIR/intempt.port" ] && break; sleep 0.1; done
    [ -s "$ENV_DIR/intempt.port" ] || { echo "the fake Intempt did not start" >&2; exit 1; }
    ENV_INTEMPT_URL="http://127.0.0.1:$(cat "$ENV_DIR/intempt.port")"
    url=$ENV_INTEMPT_URL/v1
  fi
  ENV_INTEMPT_KEY=$key
  env_psql -q <<SQL
CREATE SERVER intempt FOREIGN DATA WRAPPER intempt
  OPTIONS (api_url '$url', org '$org', project '$project', source_id '$source');
CREATE USER MAPPING FOR CURRENT_USER SERVER intempt OPTIONS (api_key '$key');
SQL
}
