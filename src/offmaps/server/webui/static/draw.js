// Drawing an area on a MapLibre map, by mouse or keyboard: a rectangle (two corners, or the
// map's current view) or a polygon (its corners, then Finish). No plug-in: a GeoJSON source and
// three style layers of our own.
//
// By keyboard: move the map with the arrow keys, then "Add a corner at the map centre"; or
// "Use the map's view". The drawn area is a GeoJSON Polygon in longitude/latitude (CRS84).

const SOURCE = "drawn-area";
const COLOUR = "#e65100";

function empty() {
  return { type: "FeatureCollection", features: [] };
}

function ring(points) {
  return [...points, points[0]];
}

function rectangle(a, b) {
  const [west, east] = [Math.min(a[0], b[0]), Math.max(a[0], b[0])];
  const [south, north] = [Math.min(a[1], b[1]), Math.max(a[1], b[1])];
  return [
    [west, south],
    [east, south],
    [east, north],
    [west, north],
  ];
}

/** Drawing on `map`; `onChange(geometry | null)` is told whenever the area changes. */
export class AreaDrawing {
  constructor(map, onChange = () => {}) {
    this.map = map;
    this.onChange = onChange;
    this.mode = null; // "rectangle" | "polygon" | null
    this.points = []; // corners being drawn, [lon, lat]
    this.hover = null;
    this.area = null; // the finished Polygon
    map.addSource(SOURCE, { type: "geojson", data: empty() });
    map.addLayer({
      id: `${SOURCE}/fill`,
      type: "fill",
      source: SOURCE,
      filter: ["==", ["geometry-type"], "Polygon"],
      paint: { "fill-color": COLOUR, "fill-opacity": 0.2 },
    });
    map.addLayer({
      id: `${SOURCE}/line`,
      type: "line",
      source: SOURCE,
      paint: { "line-color": COLOUR, "line-width": 3 },
    });
    map.addLayer({
      id: `${SOURCE}/corner`,
      type: "circle",
      source: SOURCE,
      filter: ["==", ["geometry-type"], "Point"],
      paint: { "circle-radius": 5, "circle-color": COLOUR, "circle-stroke-color": "#fff", "circle-stroke-width": 2 },
    });
    map.on("click", (event) => this.add([event.lngLat.lng, event.lngLat.lat]));
    map.on("mousemove", (event) => {
      if (!this.mode || !this.points.length) return;
      this.hover = [event.lngLat.lng, event.lngLat.lat];
      this.render();
    });
    map.on("dblclick", (event) => {
      if (this.mode !== "polygon") return;
      event.preventDefault(); // no zoom: the double click ends the polygon
      this.finish();
    });
  }

  /** Start drawing a "rectangle" or a "polygon" (the previous area goes). */
  start(mode) {
    this.mode = mode;
    this.points = [];
    this.hover = null;
    this.setArea(null);
    this.map.getCanvas().style.cursor = "crosshair";
  }

  /** Add a corner (a click, or the map's centre). */
  add(point) {
    if (!this.mode) return;
    const last = this.points[this.points.length - 1];
    if (last && last[0] === point[0] && last[1] === point[1]) return; // a double click's second
    this.points.push(point);
    if (this.mode === "rectangle" && this.points.length === 2) {
      this.done(rectangle(this.points[0], this.points[1]));
      return;
    }
    this.render();
  }

  /** Add a corner at the map's centre (keyboard drawing). */
  addCentre() {
    const centre = this.map.getCenter();
    this.add([centre.lng, centre.lat]);
  }

  /** Close the polygon being drawn (three corners at least). */
  finish() {
    if (this.mode === "polygon" && this.points.length >= 3) this.done(this.points);
  }

  /** The map's current view as the area. */
  useView() {
    const b = this.map.getBounds();
    this.mode = null;
    this.done(rectangle([b.getWest(), b.getSouth()], [b.getEast(), b.getNorth()]));
  }

  /** Forget the area. */
  clear() {
    this.mode = null;
    this.points = [];
    this.setArea(null);
  }

  /** Show a given Polygon (an area that exists already) as the drawn one. */
  setArea(geometry) {
    this.area = geometry;
    this.render();
    this.onChange(geometry);
  }

  done(corners) {
    this.mode = null;
    this.points = [];
    this.hover = null;
    this.map.getCanvas().style.cursor = "";
    this.setArea({ type: "Polygon", coordinates: [ring(corners)] });
  }

  render() {
    const features = [];
    if (this.area) features.push({ type: "Feature", properties: {}, geometry: this.area });
    const drawing = this.hover ? [...this.points, this.hover] : this.points;
    if (this.mode === "rectangle" && drawing.length === 2) {
      const shape = ring(rectangle(drawing[0], drawing[1]));
      features.push({ type: "Feature", properties: {}, geometry: { type: "Polygon", coordinates: [shape] } });
    } else if (drawing.length >= 2) {
      features.push({ type: "Feature", properties: {}, geometry: { type: "LineString", coordinates: drawing } });
    }
    for (const point of this.points) {
      features.push({ type: "Feature", properties: {}, geometry: { type: "Point", coordinates: point } });
    }
    this.map.getSource(SOURCE)?.setData({ type: "FeatureCollection", features });
  }
}
