#!/usr/bin/env bash
# Start a Redis server (Debian's redis-server) on loopback for the tests, and print its URL for
# OFFMAPS_TEST_REDIS_URL.
#
# Debian 12, as root when redis-server is missing (it is installed with apt-get). Idempotent:
# when a server started by this script answers already, it only prints the URL. Its own port,
# data folder and no persistence: the tests' queues are scratch. Prints nothing but the URL on
# stdout; progress goes to stderr. Usage:
#
#   OFFMAPS_TEST_REDIS_URL=$(bash scripts/redis.sh) pytest tests/jobs
#
# Environment: OFFMAPS_REDIS_DIR (state: pid, log; default /tmp/offmaps-redis),
# OFFMAPS_REDIS_PORT (default 6390). `bash scripts/redis.sh stop` stops it.
set -euo pipefail

STATE=${OFFMAPS_REDIS_DIR:-/tmp/offmaps-redis}
PORT=${OFFMAPS_REDIS_PORT:-6390}
URL="redis://127.0.0.1:${PORT}/0"
PIDFILE="$STATE/redis.pid"

info() { echo "redis.sh: $*" >&2; }

mkdir -p "$STATE"
running() {
    [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

if [[ "${1:-}" == stop ]]; then
    if running; then
        info "stopping redis-server (pid $(cat "$PIDFILE"))"
        redis-cli -p "$PORT" shutdown nosave >/dev/null 2>&1 || kill "$(cat "$PIDFILE")"
    fi
    exit 0
fi

if ! command -v redis-server >/dev/null; then
    if [[ $EUID -ne 0 ]]; then
        info "redis-server is missing; run me as root to install it (apt-get)"
        exit 1
    fi
    info "installing redis-server (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    log=$(mktemp)
    apt_quiet() { "$@" >"$log" 2>&1 || { cat "$log" >&2; return 1; }; }
    if ! apt_quiet apt-get install -y -qq redis-server redis-tools; then
        apt_quiet apt-get update -qq
        apt_quiet apt-get install -y -qq redis-server redis-tools
    fi
    rm -f "$log"
    # Debian starts its own service on 6379; the tests use their own server, on $PORT
fi

if ! running; then
    info "starting redis-server on 127.0.0.1:${PORT}"
    redis-server --bind 127.0.0.1 --port "$PORT" --dir "$STATE" --save '' --appendonly no \
        --daemonize yes --pidfile "$PIDFILE" --logfile "$STATE/redis.log" >&2
fi
for _ in $(seq 1 100); do
    redis-cli -p "$PORT" ping >/dev/null 2>&1 && break
    sleep 0.1
done
redis-cli -p "$PORT" ping >/dev/null 2>&1 || {
    info "redis-server does not answer on 127.0.0.1:${PORT}; see $STATE/redis.log"
    exit 1
}
echo "$URL"
