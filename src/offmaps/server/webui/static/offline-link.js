// The map page's link to take the map offline: the map's id comes from the page's own address.
const id = new URLSearchParams(location.search).get("id");
const link = document.getElementById("take-offline");
if (id && link) link.href = `offline?map=${encodeURIComponent(id)}`;
