#!/usr/bin/env bash
# Start the services the tests need, and print the PostgreSQL URL for OFFMAPS_TEST_POSTGRES_URL.
#
# Debian 12, as root. Idempotent: installs PostgreSQL 15 + PostGIS only when missing, starts the
# cluster only when it is down, creates the role and the database only when absent. Prints
# nothing but the URL on stdout; progress goes to stderr. Usage:
#
#   OFFMAPS_TEST_POSTGRES_URL=$(bash scripts/services.sh) pytest
set -euo pipefail

PG_VERSION=15
PG_CLUSTER=main
PG_PORT=5432
ROLE=offmaps
PASSWORD=offmaps
DATABASE=offmaps_test
URL="postgresql://${ROLE}:${PASSWORD}@127.0.0.1:${PG_PORT}/${DATABASE}"

info() { echo "services.sh: $*" >&2; }

if [[ $EUID -ne 0 ]]; then
    info "run me as root: I install packages and act as the postgres user"
    exit 1
fi

# --- install ------------------------------------------------------------------------------------
if [[ ! -x /usr/lib/postgresql/${PG_VERSION}/bin/postgres ]] ||
    [[ ! -f /usr/share/postgresql/${PG_VERSION}/extension/postgis.control ]]; then
    info "installing PostgreSQL ${PG_VERSION} and PostGIS (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    log=$(mktemp)
    trap 'rm -f "$log"' EXIT
    # apt and dpkg are chatty even with -qq: keep their output, and show it only on failure
    apt_quiet() { "$@" >"$log" 2>&1 || { cat "$log" >&2; return 1; }; }
    if ! apt_quiet apt-get install -y -qq postgresql postgis; then
        info "install failed; updating the package lists and trying again"
        apt_quiet apt-get update -qq
        apt_quiet apt-get install -y -qq postgresql postgis
    fi
fi

# --- start --------------------------------------------------------------------------------------
status=$(pg_lsclusters --no-header 2>/dev/null |
    awk -v v="$PG_VERSION" -v c="$PG_CLUSTER" '$1 == v && $2 == c { print $4 }')
if [[ -z "$status" ]]; then
    info "creating cluster ${PG_VERSION}/${PG_CLUSTER}"
    pg_createcluster "$PG_VERSION" "$PG_CLUSTER" --port "$PG_PORT" >&2
    status=down
fi
if [[ "$status" != online* ]]; then
    info "starting cluster ${PG_VERSION}/${PG_CLUSTER}"
    pg_ctlcluster "$PG_VERSION" "$PG_CLUSTER" start >&2
fi
for _ in $(seq 1 100); do
    pg_isready -q -h 127.0.0.1 -p "$PG_PORT" && break
    sleep 0.1
done
pg_isready -q -h 127.0.0.1 -p "$PG_PORT" || {
    info "PostgreSQL does not answer on 127.0.0.1:${PG_PORT}"
    exit 1
}

# --- role, database, extension -------------------------------------------------------------------
as_postgres() { (cd / && runuser -u postgres -- "$@"); }
psql_admin() {
    as_postgres env PGOPTIONS="--client-min-messages=warning" \
        psql -X -q -v ON_ERROR_STOP=1 -p "$PG_PORT" "$@"
}

psql_admin -d postgres >&2 <<SQL
DO \$\$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '${ROLE}') THEN
        CREATE ROLE ${ROLE} LOGIN CREATEDB PASSWORD '${PASSWORD}';
    END IF;
END
\$\$;
SQL
database_exists() {
    [[ $(psql_admin -d postgres -tA -c "SELECT 1 FROM pg_database WHERE datname = '${DATABASE}'") == 1 ]]
}
if ! database_exists; then
    info "creating database ${DATABASE}"
    # a second copy of this script may have created it meanwhile
    as_postgres createdb -p "$PG_PORT" -O "$ROLE" "$DATABASE" >&2 || database_exists
fi
psql_admin -d "$DATABASE" -c "CREATE EXTENSION IF NOT EXISTS postgis" >&2

echo "$URL"
