// The signed-in session of this tab, and API calls made with it.
//
// The token lives in sessionStorage: it goes with the tab, is never written to localStorage,
// a cookie or a URL. A 401 from the API (an expired or revoked token) ends the session and
// goes back to the sign-in page, which returns here afterwards.

const KEY = "offmaps.session";

/** The server's root URL (the pages are served under <root>/ui/). */
export const root = new URL("../", location.href);

/** An API error, from the server's problem document (RFC 9457) or OAuth2 error. */
export class ApiError extends Error {
  constructor(status, detail, problem = null) {
    super(detail);
    this.status = status;
    this.problem = problem; // the problem document, for what it adds to the detail
  }
}

/** The session of this tab, or null when not signed in (or the token has expired). */
export function session() {
  let value = null;
  try {
    value = JSON.parse(sessionStorage.getItem(KEY));
  } catch {
    value = null;
  }
  if (!value || typeof value.token !== "string" || Date.now() >= value.expiresAt) {
    sessionStorage.removeItem(KEY);
    return null;
  }
  return value;
}

/** Keep the token of a token endpoint answer for this tab. */
export function saveSession(answer, username) {
  const expiresAt = Date.now() + Math.max(0, Number(answer.expires_in) - 5) * 1000;
  const value = { token: answer.access_token, scope: answer.scope || "", username, expiresAt };
  sessionStorage.setItem(KEY, JSON.stringify(value));
}

/** Forget the session of this tab. */
export function endSession() {
  sessionStorage.removeItem(KEY);
}

/** Go to the sign-in page, to come back to this page afterwards. */
export function toSignIn() {
  const back = location.pathname + location.search;
  const target = new URL("ui/signin", root);
  target.searchParams.set("next", back);
  location.assign(target);
}

/** The session; without one, off to sign in (and the promise never settles, so that a page
 * awaiting it at its top level stops there, quietly). */
export function requireSession() {
  const current = session();
  if (current) return Promise.resolve(current);
  toSignIn();
  return new Promise(() => {});
}

/** Headers for a request to `url` with the session's token: only to this server. */
export function authHeaders(url) {
  const current = session();
  if (!current || new URL(url, root).origin !== root.origin) return {};
  return { Authorization: `Bearer ${current.token}` };
}

async function readError(response) {
  let detail = `${response.status} ${response.statusText}`;
  let body = null;
  try {
    body = await response.json();
    detail = body.detail || body.error_description || body.title || detail;
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, detail, body);
}

/** The bytes at `href` (of this server, with the token), as a Blob. */
export async function fetchBlob(href) {
  const response = await fetch(href, { headers: authHeaders(href) });
  if (!response.ok) throw await readError(response);
  return response.blob();
}

/** Save the file at `href` as `name`: fetched with the token, then saved from memory (a
 * plain link could not carry the token). */
export async function saveFile(href, name) {
  const url = URL.createObjectURL(await fetchBlob(href));
  const link = element("a", null, { href: url, download: name });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

/** GET (or `init.method`) an API path relative to the root; the JSON answer. */
export async function api(path, init = {}) {
  const url = new URL(path, root);
  const headers = { Accept: "application/json", ...authHeaders(url), ...(init.headers || {}) };
  const response = await fetch(url, { ...init, headers });
  if (response.status === 401) {
    endSession();
    toSignIn();
    throw await readError(response);
  }
  if (!response.ok) throw await readError(response);
  return response.status === 204 ? null : response.json();
}

/** Show who is signed in in the page's header, and wire its sign-out button. */
export function showHeader(current) {
  const who = document.getElementById("who");
  if (!who) return;
  document.getElementById("who-name").textContent = current.username;
  who.hidden = false;
  document.getElementById("sign-out").addEventListener("click", () => {
    endSession();
    location.assign(new URL("ui/signin", root));
  });
}

/** A child element with text. */
export function element(tag, text, attributes = {}) {
  const node = document.createElement(tag);
  if (text !== undefined && text !== null) node.textContent = String(text);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  return node;
}
