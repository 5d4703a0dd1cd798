// The preplanned areas of a web map: on the map with their status, listed with their packages'
// files and update files; its authors (the map's owner, an admin) create one by drawing,
// refresh and delete them.
import { Map as MapLibreMap, NavigationControl } from "./vendor/maplibre-gl/maplibre-gl.mjs";
import { AreaDrawing } from "./draw.js";
import { api, authHeaders, element, requireSession, root, showHeader } from "./session.js";

const current = await requireSession();
showHeader(current);

const FOLLOW_EVERY_MS = 2000;
const STATUS_COLOURS = ["match", ["get", "status"], "complete", "#2e7d32", "failed", "#a50e0e", "#e65100"];
const MODES = {
  sync_with_feature_services: "sync with the feature services",
  download_scheduled_updates: "scheduled updates",
  download_scheduled_updates_and_upload_new_features: "scheduled updates, upload new features",
  no_updates: "no updates",
};

const mapId = new URLSearchParams(location.search).get("map");
const status = document.getElementById("areas-status");
const table = document.getElementById("areas");
const base = `api/maps/${encodeURIComponent(mapId || "")}/areas`;
let map = null;
let drawing = null;
let drawn = null;
let isAuthor = false;
let following = null;

function say(node, text, isError = false) {
  node.textContent = text;
  node.classList.toggle("error", isError);
}

function bytes(value) {
  if (value < 1024) return `${value} B`;
  const units = ["KiB", "MiB", "GiB"];
  let scaled = value;
  let unit = -1;
  while (scaled >= 1024 && unit < units.length - 1) {
    scaled /= 1024;
    unit += 1;
  }
  return `${scaled.toFixed(scaled < 10 ? 1 : 0)} ${units[unit]}`;
}

function post(body, method = "POST") {
  return { method, headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
}

function bounds(geometry) {
  const points = geometry.type === "Polygon" ? geometry.coordinates.flat() : geometry.coordinates.flat(2);
  const lons = points.map((p) => p[0]);
  const lats = points.map((p) => p[1]);
  return [
    [Math.min(...lons), Math.min(...lats)],
    [Math.max(...lons), Math.max(...lats)],
  ];
}

async function openMap(doc) {
  map = new MapLibreMap({
    container: "areas-map",
    style: {
      version: 8,
      sources: {},
      layers: [{ id: "background", type: "background", paint: { "background-color": "#f4f1ea" } }],
    },
    bounds: doc.initial_extent || undefined,
    fitBoundsOptions: { padding: 20 },
    attributionControl: false,
    doubleClickZoom: false,
    transformRequest: (url) => ({ url, headers: authHeaders(url) }),
  });
  map.addControl(new NavigationControl(), "top-right");
  await map.once("load");
  // the map's raster basemap under the areas (tiles of this server only)
  for (const layer of doc.basemap?.layers || []) {
    if (layer.type !== "raster_tile") continue;
    const url = new URL(`tiles/${encodeURIComponent(layer.service)}/tilejson.json`, root).href;
    map.addSource(layer.id, { type: "raster", url, tileSize: 256 });
    map.addLayer({ id: layer.id, type: "raster", source: layer.id });
  }
  map.addSource("areas", { type: "geojson", data: { type: "FeatureCollection", features: [] } });
  map.addLayer({ id: "areas/fill", type: "fill", source: "areas", paint: { "fill-color": STATUS_COLOURS, "fill-opacity": 0.25 } });
  map.addLayer({ id: "areas/line", type: "line", source: "areas", paint: { "line-color": STATUS_COLOURS, "line-width": 2.5 } });
  drawing = new AreaDrawing(map, (geometry) => {
    drawn = geometry;
    const summary = document.getElementById("area-summary");
    if (!geometry) {
      summary.textContent = "No area drawn yet.";
      return;
    }
    const [[w, s], [e, n]] = bounds(geometry);
    const fmt = (v) => v.toFixed(4);
    summary.textContent = `Area drawn: ${geometry.coordinates[0].length - 1} corners, from ${fmt(w)}, ${fmt(s)} to ${fmt(e)}, ${fmt(n)}.`;
  });
  window.offmapsMap = map; // for the browser tests and the console
}

async function showFiles(area) {
  const out = document.getElementById("area-files");
  let packages;
  try {
    ({ packages } = await api(`${base}/${area.id}/packages`));
  } catch (failure) {
    say(out, `Could not list the packages of ${area.title}: ${failure.message}`, true);
    return;
  }
  const section = element("section", null, { class: "files", "aria-labelledby": "files-title" });
  section.append(element("h2", `Packages and update files of ${area.title}`, { id: "files-title" }));
  if (!packages.length) section.append(element("p", "No package yet.", { class: "note" }));
  for (const pack of [...packages].reverse()) {
    section.append(element("h3", `Package ${pack.number} (epoch ${pack.epoch}, ${bytes(pack.bytes)}, ${new Date(pack.created * 1000).toLocaleString()})`));
    const files = element("ul", null, { class: "package-files" });
    for (const file of pack.files) files.append(element("li", `${file.path} — ${bytes(file.size)}`));
    section.append(element("p", "Files:", { class: "meta" }), files);
    const updates = element("ul", null, { class: "update-files", "data-package": String(pack.number) });
    for (const update of pack.updates) {
      updates.append(element("li", `${update.path} — ${update.kind} of ${update.file}, package ${update.from_number} to ${update.to_number}, ${bytes(update.size)}`));
    }
    section.append(element("p", pack.updates.length ? "Update files (from the previous package):" : "No update files: the first package of its epoch.", { class: "meta" }));
    if (pack.updates.length) section.append(updates);
  }
  out.replaceChildren(section);
  section.querySelector("h2").setAttribute("tabindex", "-1");
  section.querySelector("h2").focus();
}

async function jobProgress(area) {
  // a refresh of a complete area runs while it stays complete: its job says how far it is
  if (!area.job_id || !isAuthor) return null;
  try {
    const job = await api(`api/jobs/${encodeURIComponent(area.job_id)}`);
    return job.status === "running" || job.status === "pending" ? job : null;
  } catch {
    return null;
  }
}

function areaRow(area, job) {
  const tr = element("tr", null, { "data-area": area.id, "data-status": area.status });
  const title = element("td");
  title.append(element("strong", area.title));
  if (area.description) title.append(element("span", area.description, { class: "meta" }));
  tr.append(title);
  const state = element("td", null, { class: `status-${area.status}` });
  state.append(element("span", area.status, { class: "state" }));
  if (job) state.append(element("span", ` (packaging again, ${Math.round(job.progress * 100)} %)`, { class: "meta refreshing" }));
  if (area.reason) state.append(element("span", area.reason, { class: "meta error" }));
  tr.append(state);
  tr.append(element("td", MODES[area.update_mode] || area.update_mode));
  const next = area.next_refresh_at ? `, next ${new Date(area.next_refresh_at * 1000).toLocaleString()}` : "";
  tr.append(element("td", `${area.refresh}${next}`));
  tr.append(element("td", area.tile_format));
  tr.append(element("td", area.latest ? `${area.latest} (epoch ${area.epoch})` : "—", { class: "latest" }));
  const actions = element("td", null, { class: "actions" });
  const show = element("button", "Show", { type: "button", "aria-label": `Show ${area.title} on the map` });
  show.addEventListener("click", () => map.fitBounds(bounds(area.area), { padding: 30 }));
  const files = element("button", "Files", { type: "button", "aria-label": `Files of ${area.title}` });
  files.addEventListener("click", () => showFiles(area));
  actions.append(show, files);
  if (isAuthor) {
    const refresh = element("button", "Refresh", { type: "button", "aria-label": `Refresh ${area.title}` });
    refresh.disabled = area.status === "packaging" || Boolean(job);
    refresh.addEventListener("click", async () => {
      refresh.disabled = true;
      try {
        await api(`${base}/${area.id}/refresh`, { method: "POST" });
        await listAreas(`Packaging ${area.title} again.`);
      } catch (failure) {
        await listAreas(`Could not refresh ${area.title}: ${failure.message}`, true);
      }
    });
    const remove = element("button", "Delete", { type: "button", "aria-label": `Delete ${area.title}` });
    remove.addEventListener("click", async () => {
      if (!confirm(`Delete the area ${area.title} and its packages? Devices holding it are told it was deleted.`)) return;
      document.getElementById("area-files").replaceChildren();
      try {
        await api(`${base}/${area.id}`, { method: "DELETE" });
        await listAreas(`Deleted ${area.title}.`);
      } catch (failure) {
        await listAreas(`Could not delete ${area.title}: ${failure.message}`, true);
      }
    });
    actions.append(refresh, remove);
  }
  tr.append(actions);
  return tr;
}

async function listAreas(note = "", isError = false) {
  // `note`: what the user's last action did, said before the count
  clearTimeout(following);
  let areas;
  try {
    ({ areas } = await api(base));
  } catch (failure) {
    say(status, `Could not list the areas: ${failure.message}`, true);
    return;
  }
  const jobs = await Promise.all(areas.map(jobProgress));
  table.tBodies[0].replaceChildren(...areas.map((area, i) => areaRow(area, jobs[i])));
  table.hidden = areas.length === 0;
  const features = areas.map((area) => ({ type: "Feature", properties: { status: area.status, title: area.title }, geometry: area.area }));
  map.getSource("areas").setData({ type: "FeatureCollection", features });
  const busy = areas.filter((a, i) => a.status === "packaging" || jobs[i]).length;
  const count = areas.length
    ? `${areas.length} ${areas.length === 1 ? "area" : "areas"}, ${busy} packaging.`
    : "No preplanned areas yet.";
  say(status, note ? `${note} ${count}` : count, isError);
  if (busy) following = setTimeout(() => listAreas(), FOLLOW_EVERY_MS);
}

function wireAuthoring() {
  for (const node of document.querySelectorAll(".authors")) node.hidden = false;
  document.getElementById("draw-rectangle").addEventListener("click", () => drawing.start("rectangle"));
  document.getElementById("draw-polygon").addEventListener("click", () => drawing.start("polygon"));
  document.getElementById("draw-centre").addEventListener("click", () => drawing.addCentre());
  document.getElementById("draw-finish").addEventListener("click", () => drawing.finish());
  document.getElementById("draw-view").addEventListener("click", () => drawing.useView());
  document.getElementById("draw-clear").addEventListener("click", () => drawing.clear());
  document.getElementById("create-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const out = document.getElementById("create-status");
    if (!drawn) {
      say(out, "Draw the area first.", true);
      return;
    }
    const button = document.getElementById("create-area");
    button.disabled = true;
    const body = {
      title: document.getElementById("area-title").value,
      area: { geometry: drawn },
      update_mode: document.getElementById("area-mode").value,
      refresh: document.getElementById("area-refresh").value.trim() || "never",
      tile_format: document.getElementById("area-format").value,
    };
    try {
      const area = await api(base, post(body));
      say(out, `Created ${area.title}: packaging it.`);
      drawing.clear();
      document.getElementById("area-title").value = "";
      await listAreas();
    } catch (failure) {
      say(out, `Could not create the area: ${failure.message}`, true);
    } finally {
      button.disabled = false;
    }
  });
}

async function open() {
  if (!mapId) {
    say(status, "No map given: open the areas from a map's page, or add ?map=ID.", true);
    return;
  }
  const [doc, me] = await Promise.all([api(`api/maps/${encodeURIComponent(mapId)}`), api("api/me")]);
  const title = doc.item?.title || mapId;
  document.title = `Preplanned areas of ${title} · offmaps`;
  document.getElementById("areas-title").textContent = `Preplanned areas of ${title}`;
  document.getElementById("map-link").href = `map?id=${encodeURIComponent(mapId)}`;
  // authors: the map's owner with maps:write, or an admin (the API checks it again)
  const owner = doc.item?.owner ?? doc.sharing?.owner;
  isAuthor = me.scopes.includes("admin") || (me.scopes.includes("maps:write") && owner === me.subject);
  await openMap(doc);
  if (isAuthor) wireAuthoring();
  await listAreas();
  document.body.dataset.pageReady = "true";
}

open().catch((failure) => say(status, `Could not open the areas: ${failure.message}`, true));
