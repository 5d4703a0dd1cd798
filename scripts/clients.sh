#!/usr/bin/env bash
# Real clients the tests drive: QGIS 3.22 (Debian's qgis and python3-qgis, ~1.4 GB, about a
# minute the first time). Needs root to install; quiet and quick when already there.
set -euo pipefail
if ! /usr/bin/python3 -c "import qgis.core" 2>/dev/null; then
  echo "clients.sh: installing QGIS (apt-get)" >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q qgis python3-qgis >/dev/null
fi
