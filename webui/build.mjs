// Copy the front-end dependencies from node_modules (installed by `npm ci` from
// package-lock.json) into the Python package, and write vendor.json: package, version and
// SHA-256 of every copied file, which tests/webui checks against the files and the lock file.
// Run by `make webui`; the copies are committed (docs/webui.md says why).
import { createHash } from "node:crypto";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const server = join(here, "..", "src", "offmaps", "server");

// package -> [destination folder under src/offmaps/server, files of the package]
const COPIES = {
  "maplibre-gl": [
    "webui/static/vendor/maplibre-gl",
    [
      "LICENSE.txt",
      "dist/maplibre-gl.mjs",
      "dist/maplibre-gl-worker.mjs",
      "dist/maplibre-gl.css",
    ],
  ],
  "swagger-ui-dist": [
    "static/swagger-ui",
    [
      "LICENSE",
      "NOTICE",
      "favicon-32x32.png",
      "oauth2-redirect.html",
      "oauth2-redirect.js",
      "swagger-ui-bundle.js",
      "swagger-ui-bundle.js.LICENSE.txt",
      "swagger-ui.css",
    ],
  ],
};

const manifest = {};
for (const [name, [folder, files]] of Object.entries(COPIES)) {
  const root = join(here, "node_modules", name);
  const { version } = JSON.parse(readFileSync(join(root, "package.json"), "utf8"));
  const entry = { version, files: {} };
  mkdirSync(join(server, folder), { recursive: true });
  for (const file of files) {
    const target = `${folder}/${file.split("/").pop()}`;
    copyFileSync(join(root, file), join(server, target));
    const digest = createHash("sha256").update(readFileSync(join(server, target)));
    entry.files[target] = digest.digest("hex");
  }
  manifest[name] = entry;
}
const out = join(server, "webui", "vendor.json");
writeFileSync(out, `${JSON.stringify(manifest, null, 2)}\n`);
console.log(`build.mjs: wrote ${out}`);
