// The conflicts page: the review queue (what the API lets the caller see), and per conflict the
// base, device and server versions field by field, their geometries on a map, and resolving it
// by side or field by field (shown only to callers the API lets resolve).
import {
  Map as MapLibreMap,
  NavigationControl,
  ScaleControl,
} from "./vendor/maplibre-gl/maplibre-gl.mjs";
import {
  ApiError,
  api,
  authHeaders,
  element,
  requireSession,
  root,
  showHeader,
} from "./session.js";

const current = await requireSession();
showHeader(current);

const GEOJSON = "application/geo+json";
const KINDS = {
  update_update: "edited on both sides",
  delete_update: "deleted on the device, edited on the server",
  update_delete: "edited on the device, deleted on the server",
};
// the three versions on the map: distinct colours and shapes (a ring, a disc, a larger disc)
const VERSIONS = [
  { key: "base", title: "Base: before the device's edit", colour: "#616161" },
  { key: "client", title: "Device: the edit made offline", colour: "#1565c0" },
  { key: "server", title: "Server: the row as the server has it", colour: "#e65100" },
];

const queueMessage = document.getElementById("queue-message");
const queue = document.getElementById("queue");
const statusSelect = document.getElementById("queue-status");
const section = document.getElementById("conflict");
const resolveMessage = document.getElementById("resolve-message");
let canResolve = false;
let map = null;
let mapLoaded = null; // settles once the map's style is loaded
let shown = null; // the conflict on display (GeoJSON form)
let basemap = { mapId: undefined, layers: [], title: null, note: null }; // under the versions

function say(node, text, isError = false) {
  node.textContent = text;
  node.classList.toggle("error", isError);
}

function problem(failure) {
  if (failure instanceof ApiError && failure.status === 403) {
    return `not allowed: ${failure.message}`;
  }
  if (failure instanceof ApiError) return `${failure.message} (${failure.status})`;
  return failure.message;
}

/** May the caller settle conflicts? What the resolve route needs: an admin, or a token with
 * `offline:sync` and `features:edit` (either granted or implied by another scope). */
function mayResolve(me) {
  const scopes = new Set([...(me.scopes || []), ...(me.implied_scopes || [])]);
  return scopes.has("admin") || (scopes.has("offline:sync") && scopes.has("features:edit"));
}

// --- the versions, field by field ---------------------------------------------------------

function props(feature) {
  return feature?.properties || {};
}

/** The name of the geometry among the conflict's fields: the one no version has as a property. */
function geometryName(conflict) {
  const named = new Set(
    [conflict.base, conflict.client, conflict.server].flatMap((f) => Object.keys(props(f))),
  );
  return conflict.fields.find((name) => !named.has(name)) ?? "geometry";
}

function describeGeometry(geometry) {
  if (!geometry) return "—";
  if (geometry.type === "Point") {
    const [x, y] = geometry.coordinates;
    return `Point (${x.toFixed(6)}, ${y.toFixed(6)})`;
  }
  const count = JSON.stringify(geometry.coordinates).split("],[").length;
  return `${geometry.type} (${count} vertices)`;
}

function describe(value) {
  if (value === undefined) return "—";
  if (value === null) return "empty";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

/** A version's value of a field: `undefined` when that version does not carry the field. */
function valueOf(feature, field, geomName) {
  if (!feature) return undefined;
  if (field === geomName) return "geometry" in feature ? feature.geometry : undefined;
  return Object.hasOwn(props(feature), field) ? feature.properties[field] : undefined;
}

function same(a, b) {
  return JSON.stringify(a) === JSON.stringify(b);
}

function cell(value, field, geomName, changed, deleted) {
  const td = element("td");
  if (deleted) {
    td.append(element("span", "deleted", { class: "tag deleted" }));
    return td;
  }
  const text = field === geomName ? describeGeometry(value) : describe(value);
  td.append(element("span", text, { class: "value" }));
  if (value === undefined) td.title = "not part of this version's edit";
  if (changed) {
    td.classList.add("changed");
    td.append(" ", element("span", "changed", { class: "tag" }));
  }
  return td;
}

function keepCell(field, label) {
  const td = element("td", null, { class: "keep-column" });
  const set = element("fieldset", null, { class: "keep" });
  set.append(element("legend", `Keep ${label} from`, { class: "visually-hidden" }));
  for (const [side, text] of [
    ["client", "Device"],
    ["server", "Server"],
  ]) {
    const id = `keep-${side}-${field}`;
    const input = element("input", null, { type: "radio", name: `keep-${field}`, value: side, id });
    if (side === "server") input.checked = true;
    input.dataset.field = field;
    const lab = element("label", text, { for: id });
    set.append(input, lab);
  }
  td.append(set);
  return td;
}

function fieldRows(conflict, open) {
  const geomName = geometryName(conflict);
  const conflicting = new Set(conflict.fields);
  const deviceChanged = Object.keys(props(conflict.client));
  if (conflict.client && "geometry" in conflict.client) deviceChanged.push(geomName);
  const names = [...conflict.fields, ...deviceChanged.filter((n) => !conflicting.has(n))];
  const pick = open && canResolve && conflict.kind === "update_update";
  const rows = [];
  for (const field of [...new Set(names)]) {
    const label = field === geomName ? `${field} (geometry)` : field;
    const tr = element("tr", null, { "data-field": field });
    const th = element("th", null, { scope: "row" });
    th.append(element("span", label));
    if (conflicting.has(field)) {
      tr.classList.add("conflicting");
      th.append(" ", element("span", "conflict", { class: "tag conflict" }));
    }
    tr.append(th);
    const base = valueOf(conflict.base, field, geomName);
    const device = valueOf(conflict.client, field, geomName);
    const server = valueOf(conflict.server, field, geomName);
    const known = base !== undefined;
    tr.append(cell(base, field, geomName, false, false));
    tr.append(cell(device, field, geomName, known && device !== undefined && !same(device, base),
      conflict.kind === "delete_update"));
    tr.append(cell(server, field, geomName, known && server !== undefined && !same(server, base),
      conflict.kind === "update_delete"));
    const keep = pick && conflicting.has(field);
    tr.append(keep ? keepCell(field, label) : element("td", null, { class: "keep-column" }));
    rows.push(tr);
  }
  document.getElementById("versions").classList.toggle("picking", pick);
  return { rows, geomName, listed: new Set(names) };
}

function otherFields(conflict, listed) {
  const details = document.getElementById("other-fields");
  const list = details.querySelector("dl");
  list.replaceChildren();
  for (const [name, value] of Object.entries(props(conflict.server))) {
    if (listed.has(name)) continue;
    list.append(element("dt", name), element("dd", describe(value)));
  }
  details.hidden = list.childElementCount === 0;
}

// --- the geometries on the map ------------------------------------------------------------

const POINTS = ["match", ["geometry-type"], ["Point", "MultiPoint"], true, false];
const LINES = ["match", ["geometry-type"], ["LineString", "MultiLineString"], true, false];
const POLYGONS = ["match", ["geometry-type"], ["Polygon", "MultiPolygon"], true, false];

function styleLayers({ key, colour }) {
  const ring = key === "base";
  return [
    { id: `${key}-fill`, type: "fill", source: key, filter: POLYGONS,
      paint: { "fill-color": colour, "fill-opacity": ring ? 0.08 : 0.25 } },
    { id: `${key}-line`, type: "line", source: key, filter: ["any", LINES, POLYGONS],
      paint: { "line-color": colour, "line-width": ring ? 2 : 3,
        ...(ring ? { "line-dasharray": [2, 2] } : {}) } },
    { id: `${key}-point`, type: "circle", source: key, filter: POINTS,
      paint: ring
        ? { "circle-radius": 11, "circle-color": colour, "circle-opacity": 0,
            "circle-stroke-width": 3, "circle-stroke-color": colour }
        : { "circle-radius": key === "server" ? 9 : 7, "circle-color": colour,
            "circle-stroke-width": 2, "circle-stroke-color": "#ffffff" } },
  ];
}

function ensureMap() {
  if (map) return map;
  map = new MapLibreMap({
    container: "conflict-map",
    style: {
      version: 8,
      sources: Object.fromEntries(VERSIONS.map(({ key }) => [
        key, { type: "geojson", data: { type: "FeatureCollection", features: [] } },
      ])),
      layers: [
        { id: "background", type: "background", paint: { "background-color": "#f4f1ea" } },
        ...VERSIONS.flatMap(styleLayers),
      ],
    },
    center: [0, 0],
    zoom: 1,
    attributionControl: false,
    // the session's token on requests to this server only
    transformRequest: (url) => ({ url, headers: authHeaders(url) }),
  });
  mapLoaded = map.once("load");
  map.addControl(new NavigationControl(), "top-right");
  map.addControl(new ScaleControl(), "bottom-left");
  window.offmapsConflictMap = map; // for the browser tests and the console
  return map;
}

function coordinates(geometry, out) {
  const walk = (c) => (typeof c[0] === "number" ? out.push(c) : c.forEach(walk));
  if (geometry?.coordinates) walk(geometry.coordinates);
  return out;
}

function geometries(conflict, geomName) {
  // a version without a geometry of its own in the conflict: the base and the device carry
  // one only when the device changed it; a deleted row has none
  const server = conflict.server?.geometry ?? null;
  return {
    base: conflict.base?.geometry ?? null,
    client: conflict.client?.geometry ?? null,
    server,
    geomName,
  };
}

/** The raster basemap of the conflict's web map, under the versions, for context: read from
 * the map's document (a caller who may not read the map gets the versions alone). */
async function useBasemap(view, mapId) {
  if (basemap.mapId === mapId) return;
  for (const id of basemap.layers) {
    view.removeLayer(id);
    view.removeSource(id);
  }
  basemap = { mapId, layers: [], title: null, note: null };
  if (!mapId) {
    basemap.note = "no basemap: the conflict names no web map";
    return;
  }
  try {
    const doc = await api(`api/maps/${encodeURIComponent(mapId)}`);
    const rasters = (doc.basemap?.layers || []).filter((layer) => layer.type === "raster_tile");
    for (const [index, layer] of rasters.entries()) {
      const id = `basemap-${index}`;
      const url = new URL(`tiles/${encodeURIComponent(layer.service)}/tilejson.json`, root).href;
      view.addSource(id, { type: "raster", url, tileSize: 256 });
      view.addLayer({ id, type: "raster", source: id }, "base-fill");
      basemap.layers.push(id);
    }
    basemap.title = doc.basemap?.title || "Basemap";
    if (!rasters.length) basemap.note = "no basemap: the map has no raster basemap";
  } catch (failure) {
    basemap.note = `no basemap: ${problem(failure)}`;
  }
}

function basemapItem() {
  const li = element("li");
  const box = element("input", null, { type: "checkbox", id: "show-basemap" });
  box.checked = true;
  box.disabled = basemap.layers.length === 0;
  box.addEventListener("change", () => {
    for (const id of basemap.layers) {
      map.setLayoutProperty(id, "visibility", box.checked ? "visible" : "none");
    }
  });
  const label = element("label", `Basemap${basemap.title ? `: ${basemap.title}` : ""}`, {
    for: "show-basemap",
  });
  li.append(box, label);
  if (basemap.note) li.append(element("span", basemap.note, { class: "meta" }));
  return li;
}

function legend(found) {
  const list = document.getElementById("legend");
  list.replaceChildren();
  for (const version of VERSIONS) {
    const geometry = found[version.key];
    const id = `show-${version.key}`;
    const li = element("li");
    const box = element("input", null, { type: "checkbox", id });
    box.checked = true;
    box.disabled = !geometry;
    box.addEventListener("change", () => {
      for (const suffix of ["fill", "line", "point"]) {
        const visibility = box.checked ? "visible" : "none";
        map.setLayoutProperty(`${version.key}-${suffix}`, "visibility", visibility);
      }
    });
    const label = element("label", null, { for: id });
    const swatch = { class: `swatch swatch-${version.key}`, "aria-hidden": "true" };
    label.append(element("span", null, swatch));
    label.append(version.title);
    li.append(box, label);
    const note = geometry
      ? describeGeometry(geometry)
      : version.key === "server" ? "no geometry: the row is deleted on the server"
      : `no geometry of its own: the device did not change ${found.geomName}`;
    li.append(element("span", note, { class: "meta" }));
    list.append(li);
  }
  list.append(basemapItem());
}

async function drawGeometries(conflict, geomName) {
  const found = geometries(conflict, geomName);
  const view = ensureMap();
  await mapLoaded;
  await useBasemap(view, conflict.map_id);
  for (const id of basemap.layers) view.setLayoutProperty(id, "visibility", "visible");
  legend(found);
  view.resize();
  const points = [];
  for (const { key } of VERSIONS) {
    const geometry = found[key];
    const features = geometry ? [{ type: "Feature", geometry, properties: {} }] : [];
    view.getSource(key).setData({ type: "FeatureCollection", features });
    view.setLayoutProperty(`${key}-fill`, "visibility", "visible");
    view.setLayoutProperty(`${key}-line`, "visibility", "visible");
    view.setLayoutProperty(`${key}-point`, "visibility", "visible");
    coordinates(geometry, points);
  }
  if (points.length) {
    const xs = points.map((p) => p[0]);
    const ys = points.map((p) => p[1]);
    const pad = 0.0002; // a little room around a single point
    view.fitBounds(
      [
        [Math.min(...xs) - pad, Math.min(...ys) - pad],
        [Math.max(...xs) + pad, Math.max(...ys) + pad],
      ],
      { padding: 60, maxZoom: 18, animate: false },
    );
  }
  await view.once("idle");
}

// --- one conflict -------------------------------------------------------------------------

async function openConflict(id, { focus = true } = {}) {
  say(resolveMessage, "");
  const path = `api/conflicts/${encodeURIComponent(id)}`;
  const conflict = await api(path, { headers: { Accept: GEOJSON } });
  await show(conflict, focus);
}

async function show(conflict, focus) {
  shown = conflict;
  document.body.removeAttribute("data-conflict-ready");
  section.hidden = false;
  const open = conflict.status === "open";
  const title = document.getElementById("conflict-title");
  title.textContent = `${conflict.collection}: feature ${conflict.global_id}`;
  const found = new Date(conflict.created).toLocaleString();
  const by = conflict.resolved_by ?? "a policy";
  const settled = open ? "open" : `resolved (${conflict.resolution}) by ${by}`;
  document.getElementById("conflict-meta").textContent =
    `${KINDS[conflict.kind] ?? conflict.kind}; found ${found} in replica ` +
    `${conflict.replica_id}; ${settled}.`;
  const { rows, geomName, listed } = fieldRows(conflict, open);
  document.querySelector("#versions tbody").replaceChildren(...rows);
  otherFields(conflict, listed);
  const resolve = document.getElementById("resolve");
  resolve.hidden = !(open && canResolve);
  document.getElementById("resolve-merge").hidden = conflict.kind !== "update_update";
  if (focus) title.focus();
  await drawGeometries(conflict, geomName);
  document.body.dataset.conflictReady = conflict.id;
}

function mergeFeature(conflict) {
  const geomName = geometryName(conflict);
  const feature = { type: "Feature", properties: {} };
  for (const input of document.querySelectorAll("#versions input[type=radio]:checked")) {
    const field = input.dataset.field;
    const side = input.value === "client" ? conflict.client : conflict.server;
    if (field === geomName) feature.geometry = side?.geometry ?? null;
    else feature.properties[field] = props(side)[field] ?? null;
  }
  return feature;
}

async function resolve(side) {
  if (!shown) return;
  const conflict = shown;
  const body = { side };
  if (side === "merge") body.feature = mergeFeature(conflict);
  const buttons = document.querySelectorAll("#resolve button");
  buttons.forEach((button) => { button.disabled = true; });
  say(resolveMessage, "Resolving…");
  try {
    const settled = await api(`api/conflicts/${encodeURIComponent(conflict.id)}/resolve`, {
      method: "POST",
      headers: { Accept: GEOJSON, "Content-Type": GEOJSON },
      body: JSON.stringify(body),
    });
    await loadQueue();
    await show(settled, true); // the buttons are gone: focus goes back to the conflict's title
    const kept = {
      merge: "the fields picked",
      client: "the device's edit",
      server: "the server's row",
    };
    say(resolveMessage, `Resolved: kept ${kept[side]}. The device gets the row at its next sync.`);
  } catch (failure) {
    say(resolveMessage, `Could not resolve the conflict: ${problem(failure)}`, true);
  } finally {
    buttons.forEach((button) => { button.disabled = false; });
  }
}

// --- the queue ----------------------------------------------------------------------------

function queueRow(conflict) {
  const tr = element("tr", null, { "data-conflict": conflict.id });
  const found = new Date(conflict.created);
  tr.append(element("td", found.toLocaleString(), { title: found.toISOString() }));
  tr.append(element("td", conflict.collection));
  tr.append(element("td", KINDS[conflict.kind] ?? conflict.kind));
  tr.append(element("td", conflict.fields.join(", ") || "—"));
  tr.append(element("td", conflict.status, { class: `conflict-${conflict.status}` }));
  const td = element("td");
  const button = element("button", "Open", {
    type: "button",
    class: "link",
    "aria-label": `Open the conflict on ${conflict.collection} ${conflict.global_id}`,
  });
  button.addEventListener("click", () => {
    openConflict(conflict.id).catch((failure) => {
      say(resolveMessage, `Could not open the conflict: ${problem(failure)}`, true);
    });
  });
  td.append(button);
  tr.append(td);
  return tr;
}

async function loadQueue() {
  let conflicts;
  try {
    const path = `api/conflicts?status=${encodeURIComponent(statusSelect.value)}`;
    ({ conflicts } = await api(path, { headers: { Accept: GEOJSON } }));
  } catch (failure) {
    queue.hidden = true;
    say(queueMessage, `Could not list the conflicts: ${problem(failure)}`, true);
    return;
  }
  queue.querySelector("tbody").replaceChildren(...conflicts.map(queueRow));
  queue.hidden = conflicts.length === 0;
  const which = statusSelect.value === "all" ? "" : `${statusSelect.value} `;
  const n = conflicts.length;
  const count = n === 1 ? `1 ${which}conflict` : `${n} ${which}conflicts`;
  say(queueMessage, conflicts.length ? count : `No ${which}conflicts.`);
}

async function start() {
  const me = await api("api/me");
  canResolve = mayResolve(me);
  statusSelect.addEventListener("change", () => loadQueue());
  document.getElementById("resolve-merge").addEventListener("click", () => resolve("merge"));
  document.getElementById("resolve-client").addEventListener("click", () => resolve("client"));
  document.getElementById("resolve-server").addEventListener("click", () => resolve("server"));
  await loadQueue();
  document.body.dataset.queueReady = "true";
}

start().catch((failure) => say(queueMessage, `Could not load the page: ${problem(failure)}`, true));
