// The jobs page: the caller's jobs (an admin's: everyone's), followed while they run, with
// their files to download.
import { api, element, requireSession, saveFile, showHeader } from "./session.js";

const current = await requireSession();
showHeader(current);

const FOLLOW_EVERY_MS = 3000;
const RUNNING = new Set(["pending", "running"]);
const status = document.getElementById("jobs-status");
const table = document.getElementById("jobs");

async function download(file, button) {
  // the file needs the token: fetched here, then saved from memory (a link could not carry it)
  button.disabled = true;
  try {
    await saveFile(file.href, file.path.split("/").pop());
  } catch (failure) {
    status.textContent = `Could not download ${file.path}: ${failure.message}`;
  } finally {
    button.disabled = false;
  }
}

function row(job, showOwner) {
  const tr = element("tr", null, { "data-job": job.id });
  const started = new Date(job.created * 1000);
  tr.append(element("td", started.toLocaleString(), { title: started.toISOString() }));
  tr.append(element("td", job.kind));
  if (showOwner) tr.append(element("td", job.owner ?? "—"));
  tr.append(element("td", job.status, { class: `job-${job.status}` }));
  const progress = element("progress", null, { max: "1", value: String(job.progress) });
  progress.setAttribute("aria-label", `${job.kind} progress`);
  const percent = `${Math.round(job.progress * 100)} %`;
  const cell = element("td", null, { class: "progress" });
  cell.append(progress, element("span", ` ${percent}`));
  tr.append(cell);
  tr.append(element("td", job.error || job.message));
  const files = element("td");
  for (const file of job.result?.files || []) {
    const name = file.path.split("/").pop();
    const button = element("button", `Download ${name}`, { type: "button", class: "link" });
    button.addEventListener("click", () => download(file, button));
    files.append(button);
  }
  tr.append(files);
  return tr;
}

async function refresh() {
  let jobs;
  try {
    ({ jobs } = await api("api/jobs"));
  } catch (failure) {
    status.textContent = `Could not list the jobs: ${failure.message}`;
    return;
  }
  const showOwner = current.scope.split(" ").includes("admin"); // an admin sees everyone's
  for (const th of table.querySelectorAll(".owner")) th.hidden = !showOwner;
  table.tBodies[0].replaceChildren(...jobs.map((job) => row(job, showOwner)));
  table.hidden = jobs.length === 0;
  const running = jobs.filter((job) => RUNNING.has(job.status)).length;
  status.textContent =
    jobs.length === 0
      ? "No jobs yet."
      : `${jobs.length} ${jobs.length === 1 ? "job" : "jobs"}, ${running} running`;
  if (running) setTimeout(refresh, FOLLOW_EVERY_MS);
}

await refresh();
