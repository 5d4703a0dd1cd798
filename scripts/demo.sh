#!/usr/bin/env bash
# The main job on the embedded default, on real data: an area of interest -> tile counts and
# estimates -> real map tiles rendered from OpenStreetMap -> converted through every container
# format -> each verified, and the last one compared tile for tile with the first.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
DATA=${OFFMAPS_DATA:-data}
OUT=demo-out
BBOX=24.935,60.164,24.953,60.179   # central Helsinki, the extent of the OSM extract
ZOOMS=${DEMO_ZOOMS:-10-17}
rm -rf "$OUT"
mkdir -p "$OUT"

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. Tiles and size of the area of interest (central Helsinki), zooms $ZOOMS"
$BIN/offmaps tiles count --bbox "$BBOX" --zooms "$ZOOMS"

step "2. Same question by ArcGIS-style scale range 1:100,000 - 1:5,000"
$BIN/offmaps tiles count --bbox "$BBOX" --min-scale 100000 --max-scale 5000

step "3. An area across the antimeridian: Fiji (Natural Earth), z0-20, split not banded"
$BIN/python - "$DATA/world-atlas/countries-50m.json" > "$OUT/fiji.geojson" <<'PY'
import json, sys
import shapely
import pyogrio
meta, _, geometries, fields = pyogrio.raw.read(sys.argv[1], layer="countries")
names = list(fields[list(meta["fields"]).index("name")])
fiji = shapely.from_wkb(geometries[names.index("Fiji")])
print(json.dumps({"type": "Feature", "properties": {"name": "Fiji"}, "geometry": fiji.__geo_interface__}))
PY
$BIN/offmaps tiles count --aoi "$OUT/fiji.geojson" --zooms 0-20 --json | $BIN/python -c \
  'import json,sys; r=json.load(sys.stdin); t=r["total"]; z=r["zooms"]["6"]; print(f"Fiji z0-20: {t:,} tiles; at z6 {z} tiles on both sides of 180°, not a band")'

step "4. Render real map tiles from the OpenStreetMap extract (© OpenStreetMap contributors, ODbL)"
$BIN/python scripts/render_osm.py --pbf "$DATA/osm/Helsinki.osm.pbf" --zooms "$ZOOMS" \
  --out "$OUT/helsinki.mbtiles"
$BIN/offmaps tiles info "$OUT/helsinki.mbtiles"

step "5. Convert through every container format, verifying each"
previous="$OUT/helsinki.mbtiles"
for next in "$OUT/helsinki.gpkg" "$OUT/helsinki.pmtiles" "xyz:$OUT/xyz" "tms:$OUT/tms" \
            "esri-exploded:$OUT/esri-exploded" "esri-compact:$OUT/esri-compact" \
            "$OUT/roundtrip.mbtiles"; do
  $BIN/offmaps tiles convert "$previous" "$next"
  $BIN/offmaps tiles verify "$next"
  previous="$next"
done

step "6. The round trip kept every tile byte for byte"
$BIN/python - "$OUT/helsinki.mbtiles" "$OUT/roundtrip.mbtiles" <<'PY'
import sys
from offmaps.containers import open_reader
with open_reader(sys.argv[1]) as first, open_reader(sys.argv[2]) as last:
    a, b = dict(first.iter_tiles()), dict(last.iter_tiles())
assert a == b, "tiles differ"
print(f"{len(a):,} tiles identical after MBTiles -> GeoPackage -> PMTiles -> XYZ -> TMS -> "
      "Esri exploded -> Esri compact -> MBTiles")
PY

step "7. Clip to a smaller area and zooms into a PMTiles archive"
$BIN/offmaps tiles convert "$OUT/helsinki.mbtiles" "$OUT/centre.pmtiles" \
  --bbox 24.940,60.166,24.948,60.172 --zooms 14-17
$BIN/offmaps tiles info "$OUT/centre.pmtiles"

printf '\nDone: the archives are in %s/\n' "$OUT"
