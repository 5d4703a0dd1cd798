#!/usr/bin/env bash
# Real clients the tests drive: QGIS 3.22 (Debian's qgis and python3-qgis, ~1.4 GB, about a
# minute the first time), and the tools docs/sync.md says can edit an offline package: GDAL's
# ogrinfo/ogr2ogr (gdal-bin), the sqlite3 shell and SpatiaLite (libsqlite3-mod-spatialite); and
# the browser of the web UI's tests, Debian's chromium (driven headless by Playwright for Python,
# which downloads no browser of its own: tests/webui).
# Needs root to install; quiet and quick when already there.
set -euo pipefail
missing=()
/usr/bin/python3 -c "import qgis.core" 2>/dev/null || missing+=(qgis python3-qgis)
command -v ogr2ogr >/dev/null || missing+=(gdal-bin)
command -v sqlite3 >/dev/null || missing+=(sqlite3)
dpkg -s libsqlite3-mod-spatialite >/dev/null 2>&1 || missing+=(libsqlite3-mod-spatialite)
test -x /usr/bin/chromium || missing+=(chromium)
if ((${#missing[@]})); then
  echo "clients.sh: installing ${missing[*]} (apt-get)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi
