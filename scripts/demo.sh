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
# --overwrite replaces a tile container of the kind written, never a folder of other files
mkdir -p "$OUT/notes" && echo "field notes" > "$OUT/notes/notes.txt"
if $BIN/offmaps tiles convert "$OUT/centre.pmtiles" "xyz:$OUT/notes" --overwrite 2> "$OUT/refused.txt"; then
  echo "convert replaced a folder of notes" >&2; exit 1
fi
printf 'refused, notes kept (%s): %s\n' "$(cat "$OUT/notes/notes.txt")" "$(tail -1 "$OUT/refused.txt")"

step "8. The map server with the Helsinki sample web map (built from the OSM extract on first start)"
PORT=${DEMO_PORT:-8765}
URL="http://127.0.0.1:$PORT"
export OFFMAPS_DATA_DIR="$OUT/server-data" OFFMAPS_OSM_FILE="$DATA/osm/Helsinki.osm.pbf"
export OFFMAPS_CONFIG_DIR="$OUT/config"
$BIN/offmaps serve --port "$PORT" > "$OUT/server.log" 2>&1 &
SERVER=$!
trap 'kill $SERVER 2>/dev/null || true' EXIT
for _ in $(seq 1 600); do
  $BIN/python -c "import httpx,sys; httpx.get('$URL/conformance').raise_for_status()" 2>/dev/null && break
  kill -0 $SERVER 2>/dev/null || { cat "$OUT/server.log"; exit 1; }
  sleep 0.5
done
$BIN/python - "$URL" <<'PY'
import sys, httpx, pyogrio
url = sys.argv[1]
maps = httpx.get(f"{url}/api/maps").json()["maps"]
print(f"web maps anyone can see: {[m['title'] for m in maps]}")
doc = httpx.get(f"{url}/api/maps/{maps[0]['id']}").json()
print("its layers:", ", ".join(f"{l['title']} ({l.get('type', 'table')})" for l in
      doc["basemap"]["layers"] + doc["operational_layers"] + doc["tables"]))
for layer in pyogrio.list_layers(f"OAPIF:{url}/"):
    print(f"GDAL's OAPIF driver sees collection {layer[0]} ({layer[1]})")
page = httpx.get(f"{url}/collections/helsinki.sites/items", params={"limit": 3, "filter": "osm_id > 0"}).json()
print(f"sites: {page['numberMatched']} matched, first: {page['features'][0]['properties']}")
token = httpx.post(f"{url}/oauth2/token", data={"grant_type": "password", "username": "editor",
                   "password": "offmaps-sample"}).json()
auth = {"Authorization": f"Bearer {token['access_token']}", "Content-Type": "application/geo+json"}
created = httpx.post(f"{url}/collections/helsinki.sites/items", headers=auth,
    json={"type": "Feature", "geometry": {"type": "Point", "coordinates": [24.945, 60.17]},
          "properties": {"name": "New inspection site", "kind": "fire_hydrant", "condition": "good"}})
print(f"editor created a site: {created.status_code} {created.headers.get('location')}")
anonymous = httpx.post(f"{url}/collections/helsinki.sites/items", json={})
print(f"anonymous edit refused: {anonymous.status_code} {anonymous.json()['detail']}")
job = httpx.post(f"{url}/api/maps/{maps[0]['id']}/offline/jobs", content=b"not json")
print(f"anonymous offline job refused before its body is read: {job.status_code} {job.json()['title']}")
schema = httpx.get(f"{url}/collections/helsinki.sites/schema").json()
print(f"sites schema (OGC API Features Part 5): osm_id is {schema['properties']['osm_id']}")
meta, _, _, fields = pyogrio.raw.read(f"OAPIF:{url}/", layer="helsinki.sites", read_geometry=False,
                                      columns=["osm_id"])
osm_ids = [int(value) for value in fields[0] if value == value]  # NaN: the new site has none
print(f"GDAL read {len(osm_ids)} osm_id as {meta['dtypes'][0]}: "
      f"{sum(value > 2**31 - 1 for value in osm_ids)} above 2^31 - 1, the largest {max(osm_ids)}")
import morecantile
x, y, z = morecantile.tms.get("WebMercatorQuad").tile(24.945, 60.17, 14)
for name in ("basemap", "buildings", "helsinki-vt"):
    tile = httpx.get(f"{url}/tiles/{name}/{z}/{x}/{y}")
    tile.raise_for_status()
    print(f"{name} tile {z}/{x}/{y}: {tile.headers['content-type']}, {len(tile.content):,} bytes")
page = httpx.get(f"{url}/", headers={"Accept": "text/html"}, follow_redirects=True)
print(f"a browser asking for / gets the web UI ({page.url.path}, {page.headers['content-type']}), "
      f"with no request outside the server: {page.headers['content-security-policy'][:40]}...")
PY
echo offmaps-sample | $BIN/offmaps login "$URL" -u editor --password-stdin
$BIN/offmaps maps list --server "$URL" --json

step "9. Take the sample map offline: capabilities, estimate, generate, verify, open"
MAP=$($BIN/offmaps maps list --server "$URL" --json | $BIN/python -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
$BIN/offmaps offline capabilities --server "$URL" --map "$MAP" --bbox "$BBOX"
$BIN/offmaps offline estimate --server "$URL" --map "$MAP" --bbox "$BBOX"
$BIN/offmaps offline generate --server "$URL" --map "$MAP" --bbox "$BBOX" --out "$OUT/offline-map"
$BIN/offmaps package verify "$OUT/offline-map"
find "$OUT/offline-map" -type f -printf '%s\n' | awk '{s += $1} END {printf "the package built: %.1f MB (the estimate above: from the data)\n", s / 1e6}'
$BIN/python - "$OUT/offline-map" <<'PY'
import sys
from offmaps.features.model import FeatureQuery
from offmaps.offline import MobileMapPackage
with MobileMapPackage(sys.argv[1]).load() as package:
    offline = package.maps[0]
    print(f"opened offline, no network: {package.item.title!r}")
    for layer in [*offline.layers, *offline.tables]:
        if layer.kind in ("feature", "table"):
            with layer.open_features() as store:
                rows = sum(1 for _ in store.iter_features(layer.layer, FeatureQuery(limit=10_000)))
            print(f"  {layer.id}: {rows:,} rows in {layer.path.name}")
        elif layer.path is not None:
            with layer.open_tiles() as reader:
                tiles = sum(1 for _ in reader.iter_tiles())
            print(f"  {layer.id}: {tiles:,} {layer.kind} tiles in {layer.path.name}")
        else:
            print(f"  {layer.id}: {layer.kind} ({layer.url})")
    for replica in offline.replicas:
        print(f"  replica {replica.replica_id} of {replica.service} from generation {replica.generation}")
PY

step "10. Edit the offline map in the field (the SDK, and plain sqlite3 on a table), then sync"
$BIN/python - "$OUT/offline-map" "$URL" <<'PY'
import sqlite3, sys, httpx
from shapely.geometry import Point
from offmaps.offline import MobileMapPackage
from offmaps.offline.editing import open_feature_table
folder, url = sys.argv[1], sys.argv[2]
package = MobileMapPackage(folder).load()
with open_feature_table(package, "sites") as sites:
    first = next(iter(sites.query()))
    sites.update_feature(first.global_id, {"condition": "broken"})
    found = sites.add_feature({"name": "Hydrant found in the field", "kind": "fire_hydrant",
                               "condition": "good"}, Point(24.945, 60.17))
    sites.add_attachment(found.global_id, "photo.jpg", "image/jpeg", b"\xff\xd8" + b"field photo" * 500)
    print(f"SDK: set site {first.properties['osm_id']} broken, added a site with a photo")
(replica,) = package.manifest.replicas
with sqlite3.connect(f"{folder}/{replica.file}") as db:  # another tool, straight SQL
    # (a table: editing a feature layer needs the GeoPackage SQL functions GDAL and QGIS bring)
    db.execute("UPDATE inspections SET notes = 'rechecked from the field' "
               "WHERE fid = (SELECT min(fid) FROM inspections)")
print("sqlite3: changed the notes of an inspection")
token = httpx.post(f"{url}/oauth2/token", data={"grant_type": "password", "username": "editor",
                   "password": "offmaps-sample"}).json()["access_token"]
office = httpx.patch(f"{url}/collections/helsinki.sites/items/{first.global_id}",
    headers={"Authorization": f"Bearer {token}", "Content-Type": "application/merge-patch+json"},
    json={"properties": {"condition": "repaired"}})
print(f"meanwhile the office set the first site's condition: {office.status_code}")
PY
$BIN/offmaps sync status "$OUT/offline-map" --check
$BIN/offmaps sync "$OUT/offline-map"
$BIN/offmaps sync status "$OUT/offline-map"
$BIN/offmaps conflicts list --server "$URL"
CONFLICT=$($BIN/offmaps conflicts list --server "$URL" --json | $BIN/python -c 'import json,sys; print(json.load(sys.stdin)[0]["id"])')
$BIN/offmaps conflicts show "$CONFLICT" --server "$URL"
$BIN/offmaps conflicts resolve "$CONFLICT" --server "$URL" --side client
$BIN/offmaps sync "$OUT/offline-map"
$BIN/offmaps sync status "$OUT/offline-map"

step "11. A tile cache: seed central Helsinki's basemap from an upstream (this server), each content stored once"
CACHE_DATA="$OUT/cache-data"
rm -rf "$CACHE_DATA" && mkdir -p "$CACHE_DATA"
CENTRE=(--bbox 24.935,60.164,24.953,60.179 --zooms 12-15 --data "$CACHE_DATA")
$BIN/offmaps cache create basemap --source "$URL/tiles/basemap/{z}/{x}/{y}.png" --zooms 0-18 --data "$CACHE_DATA"
$BIN/offmaps cache seed basemap "${CENTRE[@]}" --dry-run
$BIN/offmaps cache seed basemap "${CENTRE[@]}"
$BIN/offmaps cache stats basemap --data "$CACHE_DATA"

step "12. The server's own cache, exported and imported through the server as jobs (download and upload resumable)"
echo offmaps-sample | $BIN/offmaps login "$URL" -u admin --password-stdin
$BIN/offmaps cache create city --layer basemap --zooms 0-18 --server "$URL"
$BIN/offmaps cache seed city --bbox 24.935,60.164,24.953,60.179 --zooms 12-15 --server "$URL"
$BIN/offmaps cache export city "$OUT/city-export.mbtiles" --server "$URL" \
    --bbox 24.94,60.167,24.95,60.175 --zooms 12-15 --overwrite-tiles
$BIN/offmaps cache create city-copy --layer basemap --zooms 0-18 --server "$URL"
$BIN/offmaps cache import "$OUT/city-export.mbtiles" city-copy --server "$URL"
$BIN/offmaps cache delete city --server "$URL"
$BIN/offmaps cache delete city-copy --server "$URL"

step "12b. A preplanned map area: packaged once for every crew, kept fresh by small update files"
echo offmaps-sample | $BIN/offmaps login "$URL" -u editor --password-stdin
AREA=$($BIN/offmaps areas create --server "$URL" --map "$MAP" --bookmark "City centre" \
    --title "City centre" --update-mode download_scheduled_updates --refresh "0 3 * * *" \
    --attachments include_all \
    --wait --json | $BIN/python -c 'import json,sys; print(json.load(sys.stdin)["id"])')
$BIN/offmaps areas list --server "$URL" --map "$MAP"
$BIN/offmaps areas download --server "$URL" --map "$MAP" --area "$AREA" --out "$OUT/crew-package"
$BIN/offmaps package verify "$OUT/crew-package"
# an edit and a photo at the office, then the nightly refresh (run now): the crew's sync applies
# the update files and fetches the photo the updated row names
SITE=$($BIN/python - "$OFFMAPS_DATA_DIR" "$OUT/crew-package/helsinki.gpkg" <<'PY'
import sqlite3, sys, uuid
from pathlib import Path
from offmaps.catalog import Catalog
from offmaps.features.model import Update
with sqlite3.connect(f"file:{sys.argv[2]}?mode=ro", uri=True) as crew:  # a site the crew holds
    (gid,) = crew.execute("SELECT globalid FROM sites ORDER BY fid LIMIT 1").fetchone()
catalog = Catalog(Path(sys.argv[1]))
store = catalog.feature_service("helsinki")
store.apply_edits([Update("sites", uuid.UUID(gid), {"name": "Renamed at the office"})])
photo = catalog.blobs.put(b"\xff\xd8\xff\xe0 a photo taken at the office")
store.add_attachment("sites", uuid.UUID(gid), name="office.jpg", content_type="image/jpeg",
                     size=photo.size, sha256=photo.sha256)
catalog.close()
print(gid)
PY
)
echo "site $SITE: renamed at the office, and a photo attached"
$BIN/offmaps areas refresh --server "$URL" --map "$MAP" --area "$AREA" --wait
$BIN/offmaps sync "$OUT/crew-package"
$BIN/offmaps package verify "$OUT/crew-package"
$BIN/python - "$OUT/crew-package" "$SITE" <<'PY'
import sqlite3, sys
from pathlib import Path
folder, site = Path(sys.argv[1]), sys.argv[2]
with sqlite3.connect(f"file:{folder / 'helsinki.gpkg'}?mode=ro", uri=True) as crew:
    name, sha256 = crew.execute(
        "SELECT name, sha256 FROM offmaps_attachments WHERE globalid = ? AND name = 'office.jpg'",
        (site,),
    ).fetchone()
blob = folder / "attachments" / sha256[:2] / sha256[2:4] / sha256
print(f"on the crew's device: {name}, {blob.stat().st_size} bytes in {blob.relative_to(folder)}")
PY

kill $SERVER; wait $SERVER 2>/dev/null || true
trap - EXIT

step "13. With the upstream gone, a rerun fetches nothing, and every blob still hashes to its key"
$BIN/offmaps cache seed basemap "${CENTRE[@]}"
$BIN/offmaps cache verify basemap --data "$CACHE_DATA"

step "14. Export part of the cache, clipped at the area's boundary, as an Esri compact cache with the conf.xml and conf.cdi ArcGIS and GDAL read"
$BIN/offmaps cache export basemap "esri-compact:$OUT/basemap-compact" --data "$CACHE_DATA" \
    --bbox 24.94,60.167,24.95,60.175 --zooms 12-15 --overwrite-tiles
ls "$OUT/basemap-compact"
printf '\nServe it again: OFFMAPS_DATA_DIR=%s %s/offmaps serve   (then open %s/ui/ in a browser, or %s/docs)\n' "$OFFMAPS_DATA_DIR" "$BIN" "$URL" "$URL"
printf 'Sample users:   editor / offmaps-sample (maps:read maps:write features:edit), admin / offmaps-sample\n'
printf 'Get a token:    curl -d grant_type=password -d username=editor -d password=offmaps-sample %s/oauth2/token\n' "$URL"

printf '\nDone: the archives are in %s/\n' "$OUT"
