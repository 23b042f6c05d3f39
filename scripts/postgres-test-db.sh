# shellcheck shell=bash
# Sourced by scripts/test.sh (which defines log, as_root and apt_install).
# Makes a PostgreSQL server available to the tests: installs Debian's
# postgresql package when missing, starts the newest cluster with
# pg_ctlcluster when it is down, creates a throwaway role with a random
# password and a throwaway database of the same name (both dropped when the
# script exits; one pair per run, so that runs side by side on one machine
# do not change each other's password), and exports
# PKM_TEST_POSTGRES=postgres://role:password@127.0.0.1:PORT/database.
# Returns non-zero (exporting nothing) when it cannot.

as_postgres() {
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -n -u postgres "$@"; fi
}

pkm_pg_setup() {
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1 || ! command -v pg_ctlcluster >/dev/null 2>&1; then
    apt_install postgresql || return 1
  fi
  local ver cluster port status
  ver=$(ls /usr/lib/postgresql | sort -V | tail -1)
  if ! pg_lsclusters -h 2>/dev/null | awk -v v="$ver" '$1 == v' | grep -q .; then
    as_root pg_createcluster "$ver" main >/dev/null || return 1
  fi
  read -r _ cluster port status _ < <(pg_lsclusters -h | awk -v v="$ver" '$1 == v' | head -1)
  if [ "$status" != online ]; then
    log "starting PostgreSQL $ver/$cluster on port $port"
    # Three replicas and the test processes need more than the default 100
    # connections.
    as_root pg_ctlcluster "$ver" "$cluster" start -- -o "-c max_connections=300" || return 1
  fi
  local role db pw i
  db="pkm_test_$(date +%s)_$$"
  role=$db
  pw=$(head -c 18 /dev/urandom | od -An -tx1 | tr -d ' \n')
  for i in $(seq 1 30); do
    as_postgres psql -qAt -p "$port" -c 'SELECT 1' >/dev/null 2>&1 && break
    sleep 1
  done
  as_postgres psql -q -v ON_ERROR_STOP=1 -p "$port" >/dev/null <<SQL || return 1
CREATE ROLE $role LOGIN PASSWORD '$pw';
CREATE DATABASE $db OWNER $role;
SQL
  PKM_TEST_PG_DROP="$db"
  PKM_TEST_PG_PORT="$port"
  export PKM_TEST_POSTGRES="postgres://$role:$pw@127.0.0.1:$port/$db"
  log "PostgreSQL $ver: throwaway database $db on port $port (PKM_TEST_POSTGRES)"
}

pkm_pg_teardown() {
  if [ -n "${PKM_TEST_PG_DROP:-}" ]; then
    as_postgres psql -q -p "$PKM_TEST_PG_PORT" -c "DROP DATABASE IF EXISTS $PKM_TEST_PG_DROP WITH (FORCE)" >/dev/null 2>&1 || true
    as_postgres psql -q -p "$PKM_TEST_PG_PORT" -c "DROP ROLE IF EXISTS $PKM_TEST_PG_DROP" >/dev/null 2>&1 || true
  fi
}

if pkm_pg_setup; then
  trap 'pkm_pg_teardown' EXIT
else
  unset PKM_TEST_POSTGRES
  false
fi
