// The map page: a web map in MapLibre GL JS with its tile layers (TileJSON of /tiles) and its
// feature layers (GeoJSON of the OGC API Features routes), a layer list, and identify.
import {
  AttributionControl,
  Map as MapLibreMap,
  NavigationControl,
  ScaleControl,
} from "./vendor/maplibre-gl/maplibre-gl.mjs";
import {
  api,
  authHeaders,
  element,
  fetchBlob,
  requireSession,
  root,
  saveFile,
  showHeader,
} from "./session.js";

const current = await requireSession();
showHeader(current);

const MAX_FEATURE_PAGES = 20;
const PAGE_SIZE = 1000;
// one colour per geometry kind, checked against the page's background for contrast
const COLOURS = {
  feature: { point: "#c2185b", line: "#1565c0", polygon: "#2e7d32" },
  vector: { point: "#6a1b9a", line: "#5d4037", polygon: "#8d6e63" },
};
const GEOMETRY_FILTERS = {
  point: ["match", ["geometry-type"], ["Point", "MultiPoint"], true, false],
  line: ["match", ["geometry-type"], ["LineString", "MultiLineString"], true, false],
  polygon: ["match", ["geometry-type"], ["Polygon", "MultiPolygon"], true, false],
};

const status = document.getElementById("map-status");
const identifiable = new Map(); // style layer id -> map layer title
const groups = new Map(); // map layer id -> style layer ids
const loaded = new Map(); // feature source id -> its GeoJSON features, as the server sent them
const collections = new Map(); // feature source id -> its OGC API collection, for attachments

function say(text, isError = false) {
  status.textContent = text;
  status.classList.toggle("error", isError);
}

function styleLayers(kind, id, source, sourceLayer, opacity) {
  const colours = COLOURS[kind];
  const base = sourceLayer ? { source, "source-layer": sourceLayer } : { source };
  const suffix = sourceLayer ? `${id}/${sourceLayer}` : id;
  return [
    {
      id: `${suffix}/polygon`,
      type: "fill",
      ...base,
      filter: GEOMETRY_FILTERS.polygon,
      paint: { "fill-color": colours.polygon, "fill-opacity": 0.45 * opacity, "fill-outline-color": colours.polygon },
    },
    {
      id: `${suffix}/line`,
      type: "line",
      ...base,
      filter: GEOMETRY_FILTERS.line,
      paint: { "line-color": colours.line, "line-width": 2.5, "line-opacity": opacity },
    },
    {
      id: `${suffix}/point`,
      type: "circle",
      ...base,
      filter: GEOMETRY_FILTERS.point,
      paint: {
        "circle-color": colours.point,
        "circle-radius": 4.5,
        "circle-stroke-color": "#ffffff",
        "circle-stroke-width": 1.5,
        "circle-opacity": opacity,
      },
    },
  ];
}

async function allFeatures(collection) {
  const features = [];
  let next = `collections/${encodeURIComponent(collection)}/items?limit=${PAGE_SIZE}`;
  for (let page = 0; next && page < MAX_FEATURE_PAGES; page += 1) {
    const answer = await api(next);
    features.push(...answer.features);
    const link = (answer.links || []).find((l) => l.rel === "next");
    // follow the server's own links only
    next = link && new URL(link.href, root).origin === root.origin ? link.href : null;
  }
  return { data: { type: "FeatureCollection", features }, complete: !next };
}

function addGroup(map, layer, styles) {
  const visibility = layer.visible === false ? "none" : "visible";
  for (const style of styles) {
    map.addLayer({ ...style, layout: { ...(style.layout || {}), visibility } });
  }
  groups.set(layer.id, styles.map((s) => s.id));
}

async function addLayer(map, layer) {
  const opacity = layer.opacity ?? 1;
  if (layer.type === "raster_tile") {
    const url = new URL(`tiles/${encodeURIComponent(layer.service)}/tilejson.json`, root).href;
    map.addSource(layer.id, { type: "raster", url, tileSize: 256 });
    addGroup(map, layer, [
      { id: layer.id, type: "raster", source: layer.id, paint: { "raster-opacity": opacity } },
    ]);
    return "raster tiles";
  }
  if (layer.type === "vector_tile") {
    const path = `tiles/${encodeURIComponent(layer.service)}/tilejson.json`;
    const tilejson = await api(path);
    map.addSource(layer.id, { type: "vector", url: new URL(path, root).href });
    const styles = (tilejson.vector_layers || []).flatMap((v) =>
      styleLayers("vector", layer.id, layer.id, v.id, opacity),
    );
    addGroup(map, layer, styles);
    for (const style of styles) identifiable.set(style.id, layer.title);
    return "vector tiles";
  }
  if (layer.type === "feature") {
    const { data, complete } = await allFeatures(`${layer.service}.${layer.layer}`);
    loaded.set(layer.id, data.features);
    if (layer.attachments_enabled) collections.set(layer.id, `${layer.service}.${layer.layer}`);
    // MapLibre keeps numeric ids only, and drops null attributes: draw features by their
    // index, and identify them from the server's copy
    const drawn = data.features.map((feature, index) => ({ ...feature, id: index }));
    map.addSource(layer.id, { type: "geojson", data: { ...data, features: drawn } });
    const styles = styleLayers("feature", layer.id, layer.id, null, opacity);
    addGroup(map, layer, styles);
    for (const style of styles) identifiable.set(style.id, layer.title);
    const count = data.features.length;
    return complete ? `${count} features` : `the first ${count} features only`;
  }
  return null; // online-only: never loaded, this page uses nothing outside this server
}

function layerItem(map, layer, detail) {
  const item = element("li");
  const id = `layer-${layer.id}`;
  const box = element("input", null, { type: "checkbox", id });
  const label = element("label", layer.title, { for: id });
  item.append(box, label);
  if (!groups.has(layer.id)) {
    box.disabled = true;
    item.append(element("span", detail, { class: "meta" }));
    return item;
  }
  box.checked = layer.visible !== false;
  item.append(element("span", detail, { class: "meta" }));
  box.addEventListener("change", () => {
    for (const styleId of groups.get(layer.id)) {
      map.setLayoutProperty(styleId, "visibility", box.checked ? "visible" : "none");
    }
  });
  return item;
}

const HIGHLIGHT = "identified";

function addHighlight(map) {
  map.addSource(HIGHLIGHT, { type: "geojson", data: { type: "FeatureCollection", features: [] } });
  map.addLayer({
    id: `${HIGHLIGHT}/line`,
    type: "line",
    source: HIGHLIGHT,
    paint: { "line-color": "#ff9800", "line-width": 5, "line-opacity": 0.9 },
  });
  map.addLayer({
    id: `${HIGHLIGHT}/point`,
    type: "circle",
    source: HIGHLIGHT,
    filter: GEOMETRY_FILTERS.point,
    paint: {
      "circle-radius": 9,
      "circle-color": "rgba(0, 0, 0, 0)",
      "circle-stroke-color": "#ff9800",
      "circle-stroke-width": 3,
    },
  });
}

function highlight(map, features) {
  const shapes = features.map((f) => loaded.get(f.source)?.[f.id]).filter(Boolean);
  map.getSource(HIGHLIGHT)?.setData({ type: "FeatureCollection", features: shapes });
}

function showAttributes(features) {
  const out = document.getElementById("identify");
  if (!features.length) {
    out.replaceChildren(element("p", "Nothing here.", { class: "note" }));
    return;
  }
  const shown = features.slice(0, 5).map((feature) => {
    const box = element("section", null, { class: "feature" });
    box.append(element("h3", identifiable.get(feature.layer.id) || feature.layer.id));
    const list = element("dl");
    const original = loaded.get(feature.source)?.[feature.id];
    const properties = original ? { id: original.id, ...original.properties } : feature.properties;
    for (const [name, value] of Object.entries(properties)) {
      list.append(element("dt", name), element("dd", value === null ? "—" : value));
    }
    box.append(list);
    const collection = collections.get(feature.source);
    if (original && collection) showAttachments(box, collection, original.id);
    return box;
  });
  out.replaceChildren(...shown);
}

async function showAttachments(box, collection, featureId) {
  // the feature's attachments: each saved with the token, a picture also shown
  const path = `collections/${encodeURIComponent(collection)}/items/${featureId}/attachments`;
  let attachments;
  try {
    ({ attachments } = await api(path));
  } catch (failure) {
    box.append(element("p", `Attachments: ${failure.message}`, { class: "note" }));
    return;
  }
  if (!attachments.length) return;
  const list = element("ul", null, { class: "attachments", "aria-label": "Attachments" });
  for (const attachment of attachments) {
    const item = element("li");
    const size = `${Math.max(1, Math.round(attachment.size / 1024))} KiB`;
    const button = element("button", `Save ${attachment.name} (${size})`, {
      type: "button",
      class: "link",
    });
    button.addEventListener("click", () =>
      saveFile(attachment.href, attachment.name).catch((failure) => say(failure.message, true)),
    );
    item.append(button);
    if ((attachment.contentType || "").startsWith("image/")) {
      fetchBlob(attachment.href)
        .then((blob) => {
          const picture = element("img", null, {
            src: URL.createObjectURL(blob),
            alt: attachment.name,
            class: "attachment",
          });
          item.prepend(picture);
        })
        .catch(() => {}); // the button still saves it
    }
    list.append(item);
  }
  box.append(element("h4", "Attachments"), list);
}

function identifyAt(map, point) {
  const layers = [...identifiable.keys()].filter(
    (id) => map.getLayer(id) && map.getLayoutProperty(id, "visibility") !== "none",
  );
  const box = [
    [point.x - 6, point.y - 6],
    [point.x + 6, point.y + 6],
  ];
  const features = layers.length ? map.queryRenderedFeatures(box, { layers }) : [];
  showAttributes(features);
  highlight(map, features.slice(0, 5));
}

async function open() {
  const id = new URLSearchParams(location.search).get("id");
  if (!id) {
    say("No map given: choose one in the list of maps.", true);
    return;
  }
  const doc = await api(`api/maps/${encodeURIComponent(id)}`);
  document.title = `${doc.item.title} · offmaps`;
  document.getElementById("map-title").textContent = doc.item.title;
  const map = new MapLibreMap({
    container: "map",
    style: {
      version: 8,
      sources: {},
      layers: [{ id: "background", type: "background", paint: { "background-color": "#f4f1ea" } }],
    },
    bounds: doc.initial_extent || undefined,
    fitBoundsOptions: { padding: 20 },
    attributionControl: false,
    // the session's token on requests to this server only
    transformRequest: (url) => ({ url, headers: authHeaders(url) }),
  });
  map.addControl(new NavigationControl(), "top-right");
  map.addControl(new ScaleControl(), "bottom-left");
  map.addControl(new AttributionControl({ compact: false }));
  await map.once("load");
  const layers = [...(doc.basemap?.layers || []), ...(doc.operational_layers || [])];
  const details = [];
  for (const layer of layers) {
    try {
      details.push((await addLayer(map, layer)) ?? "online only: not loaded here");
    } catch (failure) {
      details.push(`not loaded: ${failure.message}`);
    }
  }
  addHighlight(map);
  // the list shows the top layer first, as the map draws it
  const items = layers.map((layer, i) => layerItem(map, layer, details[i]));
  document.getElementById("layers").replaceChildren(...items.reverse());
  map.on("click", (event) => identifyAt(map, event.point));
  document.getElementById("identify-centre").addEventListener("click", () => {
    identifyAt(map, map.project(map.getCenter()));
  });
  await map.once("idle");
  say(`${groups.size} of ${layers.length} layers loaded`);
  document.body.dataset.mapReady = "true";
  window.offmapsMap = map; // for the browser tests and the console
}

open().catch((failure) => say(`Could not open the map: ${failure.message}`, true));
