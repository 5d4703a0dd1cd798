#!/usr/bin/env bash
# QGIS 3.22 (Debian) as a real client: installs it when missing (as root, ~1.4 GB), serves the
# sample map from a fresh data folder, and runs scripts/qgis_check.py against it.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
PORT=${QGIS_CHECK_PORT:-8766}
/usr/bin/python3 -c "import qgis.core" 2>/dev/null || apt-get install -y qgis python3-qgis >/dev/null
WORK=$(mktemp -d)
trap 'kill $SERVER 2>/dev/null || true; rm -rf "$WORK"' EXIT
OFFMAPS_DATA_DIR="$WORK/data" OFFMAPS_OSM_FILE=${OFFMAPS_DATA:-data}/osm/Helsinki.osm.pbf \
  $BIN/offmaps serve --port "$PORT" > "$WORK/server.log" 2>&1 &
SERVER=$!
for _ in $(seq 1 300); do
  $BIN/python -c "import httpx; httpx.get('http://127.0.0.1:$PORT/conformance').raise_for_status()" \
    2>/dev/null && break
  kill -0 $SERVER 2>/dev/null || { cat "$WORK/server.log"; exit 1; }
  sleep 0.5
done
QT_QPA_PLATFORM=offscreen /usr/bin/python3 scripts/qgis_check.py "http://127.0.0.1:$PORT"
