# Sourced by scripts: starts a private PostgreSQL on loopback for the tests and exports its URL in
# APPLIANCE_TEST_PG_URL. Does nothing when the URL is already set or the server binaries are missing.
pg_start_if_possible() {
  [ -n "${APPLIANCE_TEST_PG_URL:-}" ] && return 0
  command -v initdb >/dev/null && command -v pg_ctl >/dev/null || { echo "no PostgreSQL here: its tests will skip" >&2; return 0; }
  PG_DIR=$(mktemp -d /tmp/appliance-pg.XXXXXX)
  PG_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  local as=()
  if [ "$(id -u)" = 0 ]; then chown postgres "$PG_DIR"; as=(runuser -u postgres --); fi
  "${as[@]}" initdb -D "$PG_DIR/data" -U app --auth=trust --no-sync >/dev/null
  "${as[@]}" pg_ctl -w -D "$PG_DIR/data" -l "$PG_DIR/log" -o "-c listen_addresses=127.0.0.1 -p $PG_PORT -k $PG_DIR -c fsync=on" start >/dev/null
  export APPLIANCE_TEST_PG_URL="postgresql+psycopg://app@127.0.0.1:$PG_PORT/postgres"
  export APPLIANCE_TEST_PG_DATA="$PG_DIR/data" APPLIANCE_TEST_PG_AS="${as[*]}"
}

pg_stop() {
  [ -n "${PG_DIR:-}" ] || return 0
  ${APPLIANCE_TEST_PG_AS} pg_ctl -m fast -D "$PG_DIR/data" stop >/dev/null 2>&1 || true
  rm -rf "$PG_DIR"
}
