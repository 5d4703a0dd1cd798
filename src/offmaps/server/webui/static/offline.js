// The "take offline" page: draw an area (a rectangle or a polygon, across the antimeridian
// too), pick the levels, see the estimate with the export limits before any work, then start
// the job, follow it, cancel it, and download its package as one zip.
//
// What the user drew and chose is kept in the tab's sessionStorage with the page's state, so
// that an expired session sends them to sign in and back here without losing it.
import {
  Map as MapLibreMap,
  NavigationControl,
  ScaleControl,
} from "./vendor/maplibre-gl/maplibre-gl.mjs";
import {
  api,
  authHeaders,
  element,
  endSession,
  requireSession,
  root,
  showHeader,
  toSignIn,
} from "./session.js";

const current = await requireSession();
showHeader(current);

const mapId = new URLSearchParams(location.search).get("map") || "";
const STATE_KEY = `offmaps.offline.${mapId}`;
const FOLLOW_EVERY_MS = 1000;
const ESTIMATE_AFTER_MS = 300;
const RUNNING = new Set(["pending", "running"]);
// the ArcGIS scale of WebMercatorQuad's level 0 (offmaps.tiling.scale); each level halves it
const LEVEL0_SCALE = 591657527.591555;

const $ = (id) => document.getElementById(id);
const status = $("offline-status");
const numbers = new Intl.NumberFormat("en");

/** The page's state: the drawn area, the levels and the job, kept for the tab. */
const state = loadState();

function loadState() {
  let value = null;
  try {
    value = JSON.parse(sessionStorage.getItem(STATE_KEY));
  } catch {
    value = null;
  }
  return {
    kind: value?.kind ?? null, // "rectangle" | "polygon" | "view"
    ring: Array.isArray(value?.ring) ? value.ring : null, // closed, [lon, lat], lon unwrapped
    minLevel: Number.isInteger(value?.minLevel) ? value.minLevel : null,
    maxLevel: Number.isInteger(value?.maxLevel) ? value.maxLevel : null,
    jobId: typeof value?.jobId === "string" ? value.jobId : null,
  };
}

function saveState() {
  sessionStorage.setItem(STATE_KEY, JSON.stringify(state));
}

function say(text, isError = false) {
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function bytes(value) {
  if (value < 1024) return `${value} B`;
  const units = ["kB", "MB", "GB", "TB"];
  let amount = value / 1024;
  let unit = 0;
  while (amount >= 1024 && unit < units.length - 1) {
    amount /= 1024;
    unit += 1;
  }
  return `${amount.toFixed(amount < 10 ? 1 : 0)} ${units[unit]}`;
}

/** A readable message from an API error: its problem document's detail, and what it adds. */
function readable(failure) {
  const problem = failure.problem || {};
  const parts = [failure.message];
  if (problem.layer && problem.limit && !failure.message.includes(String(problem.limit))) {
    parts.push(`(layer ${problem.layer}: at most ${numbers.format(problem.limit)} tiles)`);
  }
  if (problem.retry_after) parts.push(`Try again in ${problem.retry_after} s.`);
  return parts.join(" ");
}

// --- levels --------------------------------------------------------------------------------

const levelMin = $("level-min");
const levelMax = $("level-max");

function scaleOf(level) {
  return LEVEL0_SCALE / 2 ** level;
}

function levelText(level) {
  return `level ${level} (1:${numbers.format(Math.round(scaleOf(level)))})`;
}

function showLevels() {
  const low = Number(levelMin.value);
  const high = Number(levelMax.value);
  $("level-min-out").value = levelText(low);
  $("level-max-out").value = levelText(high);
  levelMin.setAttribute("aria-valuetext", levelText(low));
  levelMax.setAttribute("aria-valuetext", levelText(high));
  const items = [];
  for (let level = Number(levelMin.min); level <= Number(levelMin.max); level += 1) {
    const taken = level >= low && level <= high;
    const item = element("li", String(level), { class: taken ? "taken" : "" });
    item.title = `${levelText(level)}${taken ? ", taken" : ""}`;
    items.push(item);
  }
  $("level-scale").replaceChildren(...items);
}

function setLevelBounds(low, high) {
  for (const input of [levelMin, levelMax]) {
    input.min = String(low);
    input.max = String(high);
  }
  const ticks = [];
  for (let level = low; level <= high; level += 1) {
    ticks.push(element("option", null, { value: String(level), label: String(level) }));
  }
  $("level-ticks").replaceChildren(...ticks);
  const clamp = (value, fallback) =>
    value === null ? fallback : Math.min(high, Math.max(low, value));
  levelMin.value = String(clamp(state.minLevel, low));
  levelMax.value = String(clamp(state.maxLevel, high));
  if (Number(levelMin.value) > Number(levelMax.value)) levelMin.value = levelMax.value;
  showLevels();
}

function onLevels(changed) {
  if (Number(levelMin.value) > Number(levelMax.value)) {
    if (changed === levelMin) levelMax.value = levelMin.value;
    else levelMin.value = levelMax.value;
  }
  state.minLevel = Number(levelMin.value);
  state.maxLevel = Number(levelMax.value);
  saveState();
  showLevels();
  scheduleEstimate();
}

levelMin.addEventListener("input", () => onLevels(levelMin));
levelMax.addEventListener("input", () => onLevels(levelMax));

// --- the area ------------------------------------------------------------------------------

/** A closed ring with its longitudes shifted by whole turns so that its centre is within
 * ±180; longitudes beyond ±180 stay as they are: the API wraps them (an area across the
 * antimeridian). */
function normalised(ring) {
  const lons = ring.map(([lon]) => lon);
  const centre = (Math.min(...lons) + Math.max(...lons)) / 2;
  const turns = Math.round(centre / 360) * 360;
  return ring.map(([lon, lat]) => [lon - turns, Math.max(-85.05, Math.min(85.05, lat))]);
}

function rectangle(a, b) {
  const [w, e] = [Math.min(a.lng, b.lng), Math.max(a.lng, b.lng)];
  const [s, n] = [Math.min(a.lat, b.lat), Math.max(a.lat, b.lat)];
  return normalised([
    [w, s],
    [e, s],
    [e, n],
    [w, n],
    [w, s],
  ]);
}

function areaGeometry() {
  return state.ring ? { type: "Polygon", coordinates: [state.ring] } : null;
}

function summarise() {
  const out = $("area-summary");
  if (!state.ring) {
    out.textContent = "No area drawn yet.";
    return;
  }
  const lons = state.ring.map(([lon]) => lon);
  const lats = state.ring.map(([, lat]) => lat);
  const [w, e, s, n] = [Math.min(...lons), Math.max(...lons), Math.min(...lats), Math.max(...lats)];
  const middle = ((s + n) / 2) * (Math.PI / 180);
  const km = (value) => (value < 10 ? value.toFixed(2) : numbers.format(Math.round(value)));
  const wide = (e - w) * 111.32 * Math.cos(middle);
  const high = (n - s) * 110.57;
  const what = { rectangle: "A rectangle", polygon: "A polygon", view: "The map view" }[state.kind];
  const corners = state.kind === "polygon" ? ` of ${state.ring.length - 1} corners` : "";
  const across = w < -180 || e > 180 ? ", across the antimeridian" : "";
  out.textContent = `${what || "An area"}${corners}, about ${km(wide)} × ${km(high)} km${across}.`;
}

// --- the map and drawing -------------------------------------------------------------------

const EMPTY = { type: "FeatureCollection", features: [] };
let map = null;
let mode = null; // "rectangle" | "polygon" while drawing
let corners = [];
let dragStart = null;

function showArea() {
  const geometry = areaGeometry();
  const data = geometry ? { type: "Feature", properties: {}, geometry } : EMPTY;
  map?.getSource("area")?.setData(data);
  summarise();
}

function showDraft(pointer) {
  const features = [];
  if (mode === "rectangle" && dragStart && pointer) {
    const ring = rectangle(dragStart, pointer);
    features.push({ type: "Feature", properties: {}, geometry: { type: "LineString", coordinates: ring } });
  } else if (mode === "polygon" && corners.length) {
    const line = pointer ? [...corners, [pointer.lng, pointer.lat]] : corners;
    if (line.length > 1) {
      features.push({ type: "Feature", properties: {}, geometry: { type: "LineString", coordinates: line } });
    }
    for (const corner of corners) {
      features.push({ type: "Feature", properties: {}, geometry: { type: "Point", coordinates: corner } });
    }
  }
  map?.getSource("draft")?.setData({ type: "FeatureCollection", features });
}

function setMode(next) {
  mode = next;
  corners = [];
  dragStart = null;
  $("draw-rectangle").setAttribute("aria-pressed", String(next === "rectangle"));
  $("draw-polygon").setAttribute("aria-pressed", String(next === "polygon"));
  $("add-corner").hidden = next !== "polygon";
  $("finish-polygon").hidden = next !== "polygon";
  $("map").classList.toggle("drawing", next !== null);
  if (map) {
    if (next === "rectangle") map.dragPan.disable();
    else map.dragPan.enable();
    if (next === "polygon") map.doubleClickZoom.disable();
    else map.doubleClickZoom.enable();
  }
  showDraft(null);
  if (next === "rectangle") say("Drawing a rectangle: press on the map and drag.");
  else if (next === "polygon") say("Drawing a polygon: click each corner.");
}

function setArea(kind, ring) {
  state.kind = kind;
  state.ring = ring;
  saveState();
  showArea();
  say(ring ? "Area drawn." : "Area cleared.");
  scheduleEstimate();
}

function finishPolygon() {
  // a double click adds its point twice: drop corners that repeat the one before
  const kept = corners.filter(
    (c, i) => i === 0 || Math.abs(c[0] - corners[i - 1][0]) + Math.abs(c[1] - corners[i - 1][1]) > 1e-9,
  );
  if (kept.length < 3) {
    say("A polygon needs at least three corners.", true);
    return;
  }
  setMode(null);
  setArea("polygon", normalised([...kept, kept[0]]));
}

function wireDrawing() {
  const start = (event) => {
    if (mode !== "rectangle") return;
    event.preventDefault();
    dragStart = event.lngLat;
  };
  const move = (event) => {
    if (mode) showDraft(event.lngLat);
  };
  const end = (event) => {
    if (mode !== "rectangle" || !dragStart) return;
    const from = map.project(dragStart);
    const to = event.point;
    if (Math.abs(from.x - to.x) < 3 || Math.abs(from.y - to.y) < 3) {
      dragStart = null; // a click, not a drag: keep drawing
      showDraft(null);
      return;
    }
    const ring = rectangle(dragStart, event.lngLat);
    setMode(null);
    setArea("rectangle", ring);
  };
  map.on("mousedown", start);
  map.on("touchstart", start);
  map.on("mousemove", move);
  map.on("touchmove", move);
  map.on("mouseup", end);
  map.on("touchend", end);
  map.on("click", (event) => {
    if (mode !== "polygon") return;
    corners.push([event.lngLat.lng, event.lngLat.lat]);
    showDraft(event.lngLat);
  });
  map.on("dblclick", (event) => {
    if (mode !== "polygon") return;
    event.preventDefault();
    finishPolygon();
  });
  document.addEventListener("keydown", (event) => {
    if (!mode) return;
    if (event.key === "Escape") {
      setMode(null);
      say("Drawing cancelled.");
    } else if (event.key === "Enter" && mode === "polygon" && event.target.closest?.("#map")) {
      finishPolygon();
    } else if (event.key === "Backspace" && mode === "polygon" && corners.length) {
      corners.pop();
      showDraft(null);
    }
  });
  $("draw-rectangle").addEventListener("click", () => setMode(mode === "rectangle" ? null : "rectangle"));
  $("draw-polygon").addEventListener("click", () => setMode(mode === "polygon" ? null : "polygon"));
  $("add-corner").addEventListener("click", () => {
    const centre = map.getCenter();
    corners.push([centre.lng, centre.lat]);
    showDraft(null);
    say(`${corners.length} ${corners.length === 1 ? "corner" : "corners"}.`);
  });
  $("finish-polygon").addEventListener("click", finishPolygon);
  $("use-view").addEventListener("click", () => {
    setMode(null);
    const bounds = map.getBounds();
    setArea("view", rectangle(bounds.getSouthWest(), bounds.getNorthEast()));
  });
  $("clear-area").addEventListener("click", () => {
    setMode(null);
    setArea(null, null);
  });
}

function addDrawingLayers() {
  map.addSource("area", { type: "geojson", data: EMPTY });
  map.addSource("draft", { type: "geojson", data: EMPTY });
  map.addLayer({ id: "area/fill", type: "fill", source: "area", paint: { "fill-color": "#0b5394", "fill-opacity": 0.18 } });
  map.addLayer({ id: "area/line", type: "line", source: "area", paint: { "line-color": "#0b5394", "line-width": 3 } });
  map.addLayer({
    id: "draft/line",
    type: "line",
    source: "draft",
    paint: { "line-color": "#ff9800", "line-width": 3, "line-dasharray": [2, 1] },
  });
  map.addLayer({
    id: "draft/point",
    type: "circle",
    source: "draft",
    filter: ["==", ["geometry-type"], "Point"],
    paint: { "circle-radius": 5, "circle-color": "#ff9800", "circle-stroke-color": "#fff", "circle-stroke-width": 2 },
  });
}

// --- the estimate ------------------------------------------------------------------------

const titles = new Map(); // layer id -> title
let estimateTimer = null;
let estimateSequence = 0;
let overLimit = true;
let canTakeOffline = false;

function requestBody() {
  const parameters = { area_of_interest: { geometry: areaGeometry() } };
  if (state.minLevel !== null && state.maxLevel !== null) {
    parameters.min_scale = scaleOf(state.minLevel);
    parameters.max_scale = scaleOf(state.maxLevel);
  }
  return JSON.stringify({ parameters });
}

function scheduleEstimate() {
  clearTimeout(estimateTimer);
  estimateSequence += 1; // answers to earlier requests are now stale
  document.body.dataset.estimate = state.ring ? "pending" : "none";
  updateStart();
  estimateTimer = setTimeout(runEstimate, ESTIMATE_AFTER_MS);
}

function showLimit(messages) {
  const box = $("limit");
  box.hidden = messages.length === 0;
  box.replaceChildren(...messages.map((text) => element("p", text)));
  // the limit's message names the levels that would fit: offer them
  const fitting = messages
    .map((text) => /levels (\d+)-(\d+) would fit/.exec(text))
    .filter(Boolean)
    .map((found) => Number(found[2]));
  if (fitting.length) {
    const level = Math.min(...fitting);
    const button = element("button", `Take levels up to ${level} only`, { type: "button" });
    button.addEventListener("click", () => {
      levelMax.value = String(level);
      onLevels(levelMax);
      levelMax.focus();
    });
    box.append(button);
  }
}

async function runEstimate() {
  const sequence = estimateSequence;
  const table = $("estimate");
  const note = $("estimate-status");
  overLimit = true;
  if (!state.ring) {
    table.hidden = true;
    showLimit([]);
    note.textContent = "Draw an area to see what it takes.";
    updateStart();
    return;
  }
  note.textContent = "Estimating…";
  let answer;
  try {
    answer = await api(`api/maps/${encodeURIComponent(mapId)}/offline/estimate`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: requestBody(),
    });
  } catch (failure) {
    if (sequence !== estimateSequence) return;
    table.hidden = true;
    note.textContent = "No estimate for this area.";
    showLimit([readable(failure)]);
    document.body.dataset.estimate = "refused";
    updateStart();
    return;
  }
  if (sequence !== estimateSequence) return;
  const rows = answer.layers.map((layer) => {
    const tr = element("tr", null, { "data-layer": layer.layer_id });
    tr.append(element("th", titles.get(layer.layer_id) || layer.layer_id, { scope: "row" }));
    const levels = layer.tiles !== null ? ` (levels ${layer.min_zoom}–${layer.max_zoom})` : "";
    tr.append(element("td", layer.tiles === null ? "—" : `${numbers.format(layer.tiles)}${levels}`));
    const attachments = layer.attachments ? `, ${numbers.format(layer.attachments)} attachments` : "";
    tr.append(element("td", layer.features === null ? "—" : `${numbers.format(layer.features)}${attachments}`));
    tr.append(element("td", bytes(layer.bytes)));
    if (layer.error) tr.classList.add("over");
    return tr;
  });
  const overhead = element("tr");
  overhead.append(element("th", "The package's own files", { scope: "row" }), element("td", "—"), element("td", "—"), element("td", bytes(answer.overhead_bytes)));
  const total = element("tr", null, { class: "total" });
  total.append(
    element("th", "Total", { scope: "row" }),
    element("td", numbers.format(answer.tiles)),
    element("td", numbers.format(answer.features)),
    element("td", bytes(answer.bytes)),
  );
  table.tBodies[0].replaceChildren(...rows, overhead);
  table.tFoot.replaceChildren(total);
  table.hidden = false;
  const errors = answer.layers.filter((layer) => layer.error);
  const left = answer.omitted.map((id) => titles.get(id) || id);
  const leftOut = left.length ? ` Not taken: ${left.join(", ")}.` : "";
  overLimit = errors.length > 0;
  showLimit(
    errors.map((layer) => `Over the limit: ${layer.error.replace(/^layer '[^']*'/, titles.get(layer.layer_id) || layer.layer_id)}.`),
  );
  note.textContent = `About ${bytes(answer.bytes)}: ${numbers.format(answer.tiles)} tiles, ${numbers.format(answer.features)} rows.${leftOut}`;
  document.body.dataset.estimate = overLimit ? "over" : "ready";
  updateStart();
}

// --- the job -----------------------------------------------------------------------------

let job = null;

function updateStart() {
  const running = job && RUNNING.has(job.status);
  const ready = document.body.dataset.estimate === "ready";
  $("start-job").disabled = !canTakeOffline || running || !ready || overLimit;
}

function showJob() {
  const line = $("job-progress-line");
  const text = $("job-status");
  const running = job && RUNNING.has(job.status);
  $("cancel-job").hidden = !running;
  $("download-zip").hidden = job?.status !== "succeeded";
  line.hidden = !job;
  text.classList.toggle("error", job?.status === "failed");
  if (job) {
    $("job-progress").value = job.progress;
    const percent = `${Math.round(job.progress * 100)} %`;
    text.textContent = `Job ${job.status}, ${percent}: ${job.error || job.message}`;
    document.body.dataset.job = job.status;
  } else {
    delete document.body.dataset.job;
  }
  updateStart();
}

async function follow() {
  if (!state.jobId) return;
  try {
    job = await api(`api/jobs/${encodeURIComponent(state.jobId)}`);
  } catch (failure) {
    if (failure.status === 404) {
      state.jobId = null; // removed, or expired: forget it
      saveState();
      job = null;
      showJob();
      return;
    }
    $("job-status").textContent = `Could not follow the job: ${readable(failure)}`;
    setTimeout(follow, FOLLOW_EVERY_MS * 3);
    return;
  }
  showJob();
  if (RUNNING.has(job.status)) setTimeout(follow, FOLLOW_EVERY_MS);
}

async function startJob() {
  $("start-job").disabled = true;
  $("job-status").textContent = "Starting…";
  try {
    job = await api(`api/maps/${encodeURIComponent(mapId)}/offline/jobs`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: requestBody(),
    });
  } catch (failure) {
    $("job-status").textContent = `Not started: ${readable(failure)}`;
    $("job-status").classList.add("error");
    updateStart();
    return;
  }
  state.jobId = job.id;
  saveState();
  showJob();
  setTimeout(follow, FOLLOW_EVERY_MS);
}

async function cancelJob() {
  if (!state.jobId) return;
  $("cancel-job").disabled = true;
  try {
    await api(`api/jobs/${encodeURIComponent(state.jobId)}`, { method: "DELETE" });
    $("job-status").textContent = "Cancelling…";
    await follow();
  } catch (failure) {
    $("job-status").textContent = `Could not cancel the job: ${readable(failure)}`;
  } finally {
    $("cancel-job").disabled = false;
  }
}

async function downloadZip() {
  const button = $("download-zip");
  const url = new URL(`api/jobs/${encodeURIComponent(state.jobId)}/package.zip`, root);
  button.disabled = true;
  try {
    // the zip needs the token: fetched here and saved from memory (a link could not carry it)
    const response = await fetch(url, { headers: authHeaders(url) });
    if (response.status === 401) {
      endSession();
      toSignIn();
      return;
    }
    if (!response.ok) throw new Error(`${response.status} ${response.statusText}`);
    const saved = URL.createObjectURL(await response.blob());
    const link = element("a", null, { href: saved, download: `offline-map-${state.jobId}.zip` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(saved), 60_000);
  } catch (failure) {
    $("job-status").textContent = `Could not download the package: ${failure.message}`;
  } finally {
    button.disabled = false;
  }
}

$("start-job").addEventListener("click", startJob);
$("cancel-job").addEventListener("click", cancelJob);
$("download-zip").addEventListener("click", downloadZip);

// --- opening the page --------------------------------------------------------------------

async function tileLevels(doc) {
  // the levels the map's tile layers have, from their TileJSON: the slider's range
  let low = Infinity;
  let high = -Infinity;
  const layers = [...(doc.basemap?.layers || []), ...(doc.operational_layers || [])];
  for (const layer of layers) {
    if (layer.type !== "raster_tile" && layer.type !== "vector_tile") continue;
    if (layer.export_tiles_allowed === false) continue;
    try {
      const tilejson = await api(`tiles/${encodeURIComponent(layer.service)}/tilejson.json`);
      low = Math.min(low, tilejson.minzoom ?? 0);
      high = Math.max(high, tilejson.maxzoom ?? 22);
    } catch {
      // a layer whose TileJSON is missing: the estimate says what becomes of it
    }
  }
  return Number.isFinite(low) ? [low, high] : [0, 22];
}

async function open() {
  if (!mapId) {
    say("No map given: choose one in the list of maps.", true);
    return;
  }
  const base = `api/maps/${encodeURIComponent(mapId)}`;
  const [doc, me, capabilities] = await Promise.all([
    api(base),
    api("api/me"),
    api(`${base}/offline/capabilities`, { method: "POST" }),
  ]);
  document.title = `Take offline: ${doc.item.title} · offmaps`;
  $("offline-title").textContent = `Take offline: ${doc.item.title}`;
  $("back-to-map").href = `map?id=${encodeURIComponent(mapId)}`;
  for (const layer of [...capabilities.layers, ...capabilities.tables]) titles.set(layer.layer_id, layer.title);
  const scopes = new Set([...me.scopes, ...me.implied_scopes]);
  canTakeOffline = scopes.has("offline:sync") || scopes.has("admin");
  $("no-scope").hidden = canTakeOffline;
  $("start-job").hidden = !canTakeOffline;
  const [low, high] = await tileLevels(doc);
  setLevelBounds(low, high);

  map = new MapLibreMap({
    container: "map",
    style: {
      version: 8,
      sources: {},
      layers: [{ id: "background", type: "background", paint: { "background-color": "#f4f1ea" } }],
    },
    bounds: doc.initial_extent || undefined,
    fitBoundsOptions: { padding: 20 },
    attributionControl: false,
    transformRequest: (url) => ({ url, headers: authHeaders(url) }),
  });
  map.addControl(new NavigationControl(), "top-right");
  map.addControl(new ScaleControl(), "bottom-left");
  await map.once("load");
  for (const layer of doc.basemap?.layers || []) {
    if (layer.type !== "raster_tile") continue;
    const url = new URL(`tiles/${encodeURIComponent(layer.service)}/tilejson.json`, root).href;
    map.addSource(layer.id, { type: "raster", url, tileSize: 256 });
    map.addLayer({ id: layer.id, type: "raster", source: layer.id });
  }
  addDrawingLayers();
  wireDrawing();
  showArea();
  if (state.ring) {
    const lons = state.ring.map(([lon]) => lon);
    const lats = state.ring.map(([, lat]) => lat);
    map.fitBounds(
      [
        [Math.min(...lons), Math.min(...lats)],
        [Math.max(...lons), Math.max(...lats)],
      ],
      { padding: 40, animate: false },
    );
    say("The area you drew is back.");
  } else {
    say("Draw the area to take offline.");
  }
  scheduleEstimate();
  if (state.jobId) await follow();
  document.body.dataset.mapReady = "true";
  window.offmapsMap = map; // for the browser tests and the console
}

open().catch((failure) => say(`Could not open the map: ${readable(failure)}`, true));
