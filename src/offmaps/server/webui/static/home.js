// The home page: who am I, my scopes and groups, and the maps I can see.
import { api, element, requireSession, showHeader } from "./session.js";

const current = await requireSession();
showHeader(current);

function fill(list, values, empty) {
  list.replaceChildren(...(values.length ? values : [empty]).map((v) => element("li", v)));
}

async function showMe() {
  const me = await api("api/me");
  document.getElementById("me-name").textContent = me.subject;
  const scopes = [...me.scopes, ...me.implied_scopes.map((s) => `${s} (implied)`)];
  fill(document.getElementById("me-scopes"), scopes, "none");
  fill(document.getElementById("me-groups"), me.groups, "none");
}

async function showMaps() {
  const status = document.getElementById("maps-status");
  try {
    const { maps } = await api("api/maps");
    const items = maps.map((map) => {
      const item = element("li");
      const link = element("a", map.title, { href: `map?id=${encodeURIComponent(map.id)}` });
      item.append(link, " · ", element("a", "Take offline", { href: `offline?map=${encodeURIComponent(map.id)}` }));
      if (map.snippet) item.append(element("p", map.snippet, { class: "note" }));
      const facts = [`owner ${map.owner}`, map.public ? "public" : "shared"];
      item.append(element("p", facts.join(" · "), { class: "meta" }));
      const areas = element("a", "Preplanned areas", { href: `areas?map=${encodeURIComponent(map.id)}` });
      areas.setAttribute("aria-label", `Preplanned areas of ${map.title}`);
      const more = element("p", null, { class: "meta" });
      more.append(areas);
      item.append(more);
      return item;
    });
    document.getElementById("maps").replaceChildren(...items);
    status.textContent = maps.length === 1 ? "1 map" : `${maps.length} maps`;
  } catch (failure) {
    status.textContent = `Could not list the maps: ${failure.message}`;
    status.classList.add("error");
  }
}

await Promise.all([showMe(), showMaps()]);
