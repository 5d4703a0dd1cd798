// The caches page: the tile caches, a cache's statistics as charts (with their tables), seeding
// a drawn area and cleaning up. Buttons that change a cache show only with cache:write.
import { Map as MapLibreMap, NavigationControl } from "./vendor/maplibre-gl/maplibre-gl.mjs";
import { AreaDrawing } from "./draw.js";
import { barChart } from "./chart.js";
import { api, authHeaders, element, requireSession, showHeader } from "./session.js";

const current = await requireSession();
showHeader(current);

const FOLLOW_EVERY_MS = 1000;
const RUNNING = new Set(["pending", "running"]);
const scopes = new Set(current.scope.split(" "));
const canWrite = scopes.has("admin") || scopes.has("cache:write");
const canRead = canWrite || scopes.has("cache:read");

const status = document.getElementById("caches-status");
const table = document.getElementById("caches");
let selected = null; // the cache's document
let map = null;
let drawing = null;
let area = null; // the drawn Polygon

function say(node, text, isError = false) {
  node.textContent = text;
  node.classList.toggle("error", isError);
}

function bytes(value) {
  if (value < 1024) return `${value} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let scaled = value;
  let unit = -1;
  while (scaled >= 1024 && unit < units.length - 1) {
    scaled /= 1024;
    unit += 1;
  }
  return `${scaled.toFixed(scaled < 10 ? 1 : 0)} ${units[unit]}`;
}

function cacheRow(cache) {
  const tr = element("tr", null, { "data-cache": cache.name });
  const name = element("td");
  const button = element("button", cache.title || cache.name, { type: "button", class: "link" });
  button.addEventListener("click", () => select(cache.name));
  name.append(button);
  if (cache.title && cache.title !== cache.name) name.append(element("span", cache.name, { class: "meta" }));
  tr.append(name);
  tr.append(element("td", `${cache.source.kind}: ${cache.source.location}`));
  tr.append(element("td", cache.format));
  tr.append(element("td", `${cache.min_zoom}–${cache.max_zoom}`));
  tr.append(element("td", (cache.stats?.tiles ?? 0).toLocaleString(), { class: "tiles" }));
  tr.append(element("td", bytes(cache.stats?.bytes ?? 0), { class: "bytes" }));
  return tr;
}

async function listCaches() {
  let caches;
  try {
    ({ caches } = await api("api/caches"));
    // the list holds definitions; each cache's figures come with its own document
    caches = await Promise.all(caches.map((c) => api(`api/caches/${encodeURIComponent(c.name)}`)));
  } catch (failure) {
    say(status, `Could not list the caches: ${failure.message}`, true);
    return [];
  }
  table.tBodies[0].replaceChildren(...caches.map(cacheRow));
  table.hidden = caches.length === 0;
  say(status, caches.length ? `${caches.length} ${caches.length === 1 ? "cache" : "caches"}` : "No tile caches yet.");
  return caches;
}

function showTotals(stats) {
  const totals = [
    ["Tiles", stats.tiles.toLocaleString()],
    ["Bytes of the tiles", bytes(stats.bytes)],
    ["Distinct blobs", stats.blobs.toLocaleString()],
    ["Bytes stored", bytes(stats.blob_bytes)],
    ["Saved by dedup", `${bytes(stats.dedup_saving)} (${stats.bytes ? Math.round((100 * stats.dedup_saving) / stats.bytes) : 0} %)`],
    ["Hits", stats.hits.toLocaleString()],
    ["Misses", stats.misses.toLocaleString()],
    ["Fetches", stats.fetches.toLocaleString()],
    ["Errors", stats.errors.toLocaleString()],
    ["Last read", stats.last_access ? new Date(stats.last_access).toLocaleString() : "never"],
  ];
  const list = document.getElementById("totals");
  list.replaceChildren();
  for (const [name, value] of totals) {
    const slug = name.toLowerCase().replaceAll(" ", "-");
    list.append(element("dt", name), element("dd", value, { "data-total": slug }));
  }
}

function showCharts(stats) {
  const rows = stats.levels.map((level) => ({ ...level, label: `z${level.z}` }));
  const charts = document.getElementById("charts");
  if (!rows.length) {
    charts.replaceChildren(element("p", "No tiles and no reads yet.", { class: "note" }));
    return;
  }
  charts.replaceChildren(
    barChart({
      id: "chart-tiles",
      title: "Tiles per level",
      rows,
      series: [{ key: "tiles", label: "Tiles", cls: "s1" }],
    }),
    barChart({
      id: "chart-bytes",
      title: "Bytes per level, and the saving of dedup",
      rows,
      series: [
        { key: "bytes", label: "Bytes of the tiles", cls: "s1" },
        { key: "blob_bytes", label: "Bytes stored", cls: "s2" },
        { key: "dedup_saving", label: "Saved by dedup", cls: "s3" },
      ],
      format: bytes,
    }),
    barChart({
      id: "chart-reads",
      title: "Reads per level: hits and misses",
      rows,
      series: [
        { key: "hits", label: "Hits", cls: "s2" },
        { key: "misses", label: "Misses", cls: "s4" },
        { key: "fetches", label: "Fetches", cls: "s1" },
      ],
    }),
  );
}

async function showStats() {
  if (!selected) return;
  try {
    const stats = await api(`api/caches/${encodeURIComponent(selected.name)}/stats`);
    showTotals(stats);
    showCharts(stats);
  } catch (failure) {
    say(status, `Could not read the statistics: ${failure.message}`, true);
  }
}

async function readableTiles(cache) {
  // draw on the cache's source layer when it is a layer of this server, else on the cache
  // itself (its tiles then read through it: those reads count as hits and misses). A tile
  // layer is read by those who may read a web map showing it: maybe neither
  const names = cache.source.kind === "layer" ? [cache.source.location, cache.name] : [cache.name];
  for (const name of names) {
    try {
      return await api(`tiles/${encodeURIComponent(name)}/tilejson.json`);
    } catch {
      // not readable by this user: the next one
    }
  }
  return null;
}

async function showBasemap(cache) {
  const tilejson = await readableTiles(cache);
  if (map.getSource("basemap")) {
    map.removeLayer("basemap");
    map.removeSource("basemap");
  }
  const note = document.getElementById("map-note");
  note.hidden = tilejson !== null;
  if (!tilejson) return;
  map.addSource("basemap", {
    type: "raster",
    tiles: tilejson.tiles,
    tileSize: 256,
    ...(tilejson.bounds ? { bounds: tilejson.bounds } : {}),
    minzoom: tilejson.minzoom ?? 0,
    maxzoom: tilejson.maxzoom ?? 22,
  });
  map.addLayer({ id: "basemap", type: "raster", source: "basemap" }, "drawn-area/fill");
  if (tilejson.bounds) {
    const [w, s, e, n] = tilejson.bounds;
    map.fitBounds([[w, s], [e, n]], { padding: 10, animate: false });
  }
}

async function openMap(cache) {
  if (!map) {
    map = new MapLibreMap({
      container: "seed-map",
      style: {
        version: 8,
        sources: {},
        layers: [{ id: "background", type: "background", paint: { "background-color": "#f4f1ea" } }],
      },
      center: [0, 0],
      zoom: 1,
      attributionControl: false,
      doubleClickZoom: false,
      transformRequest: (url) => ({ url, headers: authHeaders(url) }),
    });
    map.addControl(new NavigationControl(), "top-right");
    await map.once("load");
    drawing = new AreaDrawing(map, (geometry) => {
      area = geometry;
      const summary = document.getElementById("area-summary");
      if (!geometry) {
        summary.textContent = "No area drawn yet.";
        return;
      }
      const ring = geometry.coordinates[0];
      const lons = ring.map((p) => p[0]);
      const lats = ring.map((p) => p[1]);
      const fmt = (v) => v.toFixed(4);
      summary.textContent = `Area drawn: ${ring.length - 1} corners, from ${fmt(Math.min(...lons))}, ${fmt(Math.min(...lats))} to ${fmt(Math.max(...lons))}, ${fmt(Math.max(...lats))}.`;
    });
    window.offmapsMap = map; // for the browser tests and the console
    window.offmapsDrawing = drawing;
  }
  await showBasemap(cache);
  drawing.clear();
}

async function select(name) {
  try {
    selected = await api(`api/caches/${encodeURIComponent(name)}`);
  } catch (failure) {
    say(status, `Could not open cache ${name}: ${failure.message}`, true);
    return;
  }
  for (const tr of table.tBodies[0].rows) {
    tr.classList.toggle("selected", tr.dataset.cache === name);
  }
  document.getElementById("stats-title").textContent = `Statistics of ${selected.title || selected.name}`;
  document.getElementById("cache").hidden = false;
  await showStats();
  if (canWrite) {
    document.getElementById("seed-min").value = selected.min_zoom;
    document.getElementById("seed-max").value = Math.min(selected.max_zoom, selected.min_zoom + 2);
    document.getElementById("seed-plan").replaceChildren();
    try {
      await openMap(selected);
    } catch (failure) {
      say(document.getElementById("area-summary"), `Could not show the map: ${failure.message}`, true);
    }
  }
  document.body.dataset.cacheReady = selected.name;
}

function seedBody(dryRun) {
  return {
    area: { geometry: area },
    min_zoom: Number(document.getElementById("seed-min").value),
    max_zoom: Number(document.getElementById("seed-max").value),
    dry_run: dryRun,
  };
}

function showPlan(plan) {
  const out = document.getElementById("seed-plan");
  out.classList.remove("error");
  const list = element("ul", null, { class: "plan" });
  for (const level of plan.levels) {
    list.append(element("li", `z${level.z}: ${level.tiles.toLocaleString()} tiles, ${level.stored.toLocaleString()} stored already`));
  }
  out.replaceChildren(
    element("p", `${plan.tiles.toLocaleString()} tiles, ${plan.to_fetch.toLocaleString()} to fetch (about ${bytes(plan.estimated_bytes)}).`, { class: "plan-total" }),
    list,
  );
}

async function follow(job, progress, message) {
  // the job's status until it ends (the jobs page lists it too)
  let state = job;
  while (RUNNING.has(state.status)) {
    progress.value = state.progress;
    message.textContent = `${state.status}: ${state.message || ""}`;
    await new Promise((done) => setTimeout(done, FOLLOW_EVERY_MS));
    state = await api(`api/jobs/${encodeURIComponent(job.id)}`);
  }
  progress.value = state.progress;
  if (state.status === "succeeded") {
    say(message, `Succeeded: ${outcome(state.result || {}) || state.message || ""}`);
  } else {
    say(message, `${state.status}: ${state.error || state.message || ""}`, true);
  }
  message.dataset.status = state.status;
  return state;
}

function outcome(result) {
  // a seed's figures, or a cleanup's
  const parts = [];
  if (result.fetched !== undefined) {
    parts.push(`${result.fetched.toLocaleString()} tiles fetched (${bytes(result.bytes || 0)})`);
    parts.push(`${(result.skipped || 0).toLocaleString()} stored already`);
    parts.push(`${(result.missing || 0).toLocaleString()} missing at the source`);
    parts.push(`${(result.errors || 0).toLocaleString()} errors`);
  }
  if (result.removed_tiles !== undefined) parts.push(`${result.removed_tiles.toLocaleString()} tiles removed`);
  if (result.deleted_blobs !== undefined) parts.push(`${result.deleted_blobs.toLocaleString()} orphan blobs deleted`);
  return parts.join(", ");
}

function needArea(out) {
  if (area) return true;
  say(out, "Draw an area first.", true);
  return false;
}

function wireWrites() {
  for (const node of document.querySelectorAll(".writes")) node.hidden = false;
  document.getElementById("draw-rectangle").addEventListener("click", () => drawing?.start("rectangle"));
  document.getElementById("draw-polygon").addEventListener("click", () => drawing?.start("polygon"));
  document.getElementById("draw-centre").addEventListener("click", () => drawing?.addCentre());
  document.getElementById("draw-finish").addEventListener("click", () => drawing?.finish());
  document.getElementById("draw-view").addEventListener("click", () => drawing?.useView());
  document.getElementById("draw-clear").addEventListener("click", () => drawing?.clear());

  const plan = document.getElementById("seed-plan");
  const path = () => `api/caches/${encodeURIComponent(selected.name)}`;
  document.getElementById("seed-estimate").addEventListener("click", async () => {
    if (!needArea(plan)) return;
    try {
      showPlan(await api(`${path()}/seed`, post(seedBody(true))));
    } catch (failure) {
      say(plan, `Could not estimate: ${failure.message}`, true);
    }
  });
  document.getElementById("seed-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    if (!needArea(plan)) return;
    const button = document.getElementById("seed-start");
    button.disabled = true;
    try {
      const job = await api(`${path()}/seed`, post(seedBody(false)));
      showPlan(job.plan);
      document.getElementById("seed-job").hidden = false;
      await follow(job, document.getElementById("seed-progress"), document.getElementById("seed-message"));
      await Promise.all([showStats(), listCaches()]);
    } catch (failure) {
      say(plan, `Could not seed: ${failure.message}`, true);
    } finally {
      button.disabled = false;
    }
  });
  document.getElementById("clean-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const message = document.getElementById("clean-message");
    const body = { gc: document.getElementById("clean-gc").checked };
    const low = document.getElementById("clean-min").value;
    const high = document.getElementById("clean-max").value;
    if (low !== "" || high !== "") {
      body.min_zoom = Number(low === "" ? high : low);
      body.max_zoom = Number(high === "" ? low : high);
    }
    if (document.getElementById("clean-area").checked) {
      if (!needArea(message)) return;
      body.area = { geometry: area };
    }
    document.getElementById("clean-job").hidden = false;
    const button = document.getElementById("clean-start");
    button.disabled = true;
    try {
      const job = await api(`${path()}/clean`, post(body));
      await follow(job, document.getElementById("clean-progress"), message);
      await Promise.all([showStats(), listCaches()]);
    } catch (failure) {
      say(message, `Could not clean up: ${failure.message}`, true);
    } finally {
      button.disabled = false;
    }
  });
}

function post(body) {
  return { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
}

if (!canRead) {
  say(status, "Your sign-in has no cache:read scope: ask an administrator for access to the tile caches.", true);
} else {
  if (canWrite) wireWrites();
  const caches = await listCaches();
  const wanted = new URLSearchParams(location.search).get("cache");
  const first = caches.find((c) => c.name === wanted) || (caches.length === 1 ? caches[0] : null);
  if (first) await select(first.name);
  document.body.dataset.pageReady = "true";
}
