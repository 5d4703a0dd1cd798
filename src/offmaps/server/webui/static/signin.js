// The sign-in page: the OAuth2 password grant of POST /oauth2/token.
import { ApiError, root, saveSession } from "./session.js";

const form = document.getElementById("signin");
const error = document.getElementById("signin-error");

function nextPage() {
  // only a page of this UI: never an address given by someone else's link
  const next = new URLSearchParams(location.search).get("next") || "";
  return /^\/(?!\/)[^\\]*$/.test(next) && next.includes("/ui/") ? next : new URL("ui/", root).pathname;
}

async function signIn(username, password) {
  const body = new URLSearchParams({ grant_type: "password", username, password });
  const response = await fetch(new URL("oauth2/token", root), {
    method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded", Accept: "application/json" },
    body,
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) {
    throw new ApiError(response.status, answer.error_description || "sign-in failed");
  }
  return answer;
}

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  error.hidden = true;
  const username = form.username.value.trim();
  const password = form.password.value;
  if (!username || !password) {
    error.textContent = "Enter your user name and password.";
    error.hidden = false;
    return;
  }
  const button = document.getElementById("signin-button");
  button.disabled = true;
  try {
    saveSession(await signIn(username, password), username);
    form.password.value = "";
    location.assign(nextPage());
  } catch (failure) {
    error.textContent = `Could not sign in: ${failure.message}`;
    error.hidden = false;
    form.password.focus();
  } finally {
    button.disabled = false;
  }
});
