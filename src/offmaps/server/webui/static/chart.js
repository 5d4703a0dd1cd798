// Bar charts drawn as plain SVG, each with a table of the same figures beside it (what a screen
// reader reads, and what the chart shows for those who cannot see colours). No chart library.

// SVG's namespace, as the HTML parser gives it (no address written here: the pages' files
// name no other site, test_pages.py checks)
const SVG = (() => {
  const probe = document.createElement("template");
  probe.innerHTML = "<svg></svg>";
  return probe.content.firstChild.namespaceURI;
})();
const BAR = 14; // px per bar
const GAP = 8; // px between groups
const LABEL = 64; // px for the row labels
const WIDTH = 360;

function svg(tag, attributes = {}) {
  const node = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, String(value));
  return node;
}

/** A chart of `rows` (each `{label, ...values}`), one bar per series (`{key, label, cls}`) and
 * row, with its table; `format` writes a value. The figure's id is `id`. */
export function barChart({ id, title, rows, series, format = (v) => v.toLocaleString() }) {
  const figure = document.createElement("figure");
  figure.className = "chart";
  figure.id = id;
  const caption = document.createElement("figcaption");
  caption.textContent = title;
  caption.id = `${id}-title`;
  figure.append(caption);

  const max = Math.max(1, ...rows.flatMap((row) => series.map((s) => row[s.key] || 0)));
  const groupHeight = series.length * BAR + GAP;
  const height = Math.max(1, rows.length) * groupHeight + GAP;
  const picture = svg("svg", {
    viewBox: `0 0 ${WIDTH + LABEL + 90} ${height}`,
    width: WIDTH + LABEL + 90,
    height,
    role: "img",
    "aria-labelledby": `${id}-title`,
    "aria-describedby": `${id}-table`,
  });
  rows.forEach((row, i) => {
    const top = GAP + i * groupHeight;
    const label = svg("text", { x: LABEL - 6, y: top + (series.length * BAR) / 2 + 4, class: "chart-label" });
    label.textContent = row.label;
    picture.append(label);
    series.forEach((s, j) => {
      const value = row[s.key] || 0;
      const width = value > 0 ? Math.max(1, (value / max) * WIDTH) : 0;
      const y = top + j * BAR;
      picture.append(
        svg("rect", { x: LABEL, y, width, height: BAR - 2, class: `bar ${s.cls}`, "data-value": value }),
      );
      const text = svg("text", { x: LABEL + width + 4, y: y + BAR - 4, class: "chart-value" });
      text.textContent = format(value);
      picture.append(text);
    });
  });
  figure.append(picture);

  if (series.length > 1) {
    const legend = document.createElement("ul");
    legend.className = "legend";
    legend.setAttribute("aria-hidden", "true"); // the table's headers say the same
    for (const s of series) {
      const item = document.createElement("li");
      const swatch = document.createElement("span");
      swatch.className = `swatch ${s.cls}`;
      item.append(swatch, s.label);
      legend.append(item);
    }
    figure.append(legend);
  }

  const table = document.createElement("table");
  table.className = "figures";
  table.id = `${id}-table`;
  const head = table.createTHead().insertRow();
  const corner = document.createElement("th");
  corner.scope = "col";
  corner.textContent = "Level";
  head.append(corner);
  for (const s of series) {
    const th = document.createElement("th");
    th.scope = "col";
    th.textContent = s.label;
    head.append(th);
  }
  const body = table.createTBody();
  for (const row of rows) {
    const tr = body.insertRow();
    const th = document.createElement("th");
    th.scope = "row";
    th.textContent = row.label;
    tr.append(th);
    for (const s of series) {
      const td = tr.insertCell();
      td.textContent = format(row[s.key] || 0);
      td.dataset.key = s.key;
      td.dataset.value = String(row[s.key] || 0);
    }
  }
  figure.append(table);
  return figure;
}
