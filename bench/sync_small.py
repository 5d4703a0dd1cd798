"""A small sync, as a person in the field makes one: ``offmaps sync DIR`` wall time (issue 19).

The issue: "Small syncs feel instant: 100 edits up and 100 rows down, as one ``offmaps sync``
process on loopback, in under 1 s wall time on the embedded default (bench, median of several
runs)."

No peer: the target is absolute, so this bench times offmaps alone against it.

1. The Helsinki sample map (built once by ``bench/cli_startup.py``'s helper into
   ``bench/out/cli-startup/sample``) is copied and served by ``offmaps serve`` (one worker, the
   embedded default: GeoPackage features, SQLite state; its own process group on a free loopback
   port: ``bench/_http.py``).
2. With the console script, as a user would: ``offmaps login`` as the sample editor, and
   ``offmaps offline generate`` of the sample's default area twice: device A (timed) and
   device B (another editor). One ``offmaps sync`` of each as a warm-up (not timed).
3. Each run (``--runs``, default 7): B updates 100 inspection sites (``condition``) through the
   device's GeoPackage and uploads them (``offmaps sync B --direction upload``, not timed); A
   updates 100 other sites. Then, timed as its own process started the way a shell starts it
   (``bin/offmaps sync A --json``), the wall time around it: A's 100 edits go up and B's 100
   rows come down. Checked each run: no error, 100 uploaded and applied, and the rows downloaded
   (100 when a device gets none of its own rows back; the count is printed). Median, min, max
   against the target.
4. ``--profile``: one more run (not counted) under cProfile and ``-X importtime``, in the CLI's
   process: how much of it is imports, how much waiting on the server's answers (socket reads),
   the functions with the most time of their own, the largest imports, and which heavy
   libraries (``bench/cli_startup.py``'s list) the sync imported.

``--src DIR`` times another source tree (e.g. an export of main, for "before" figures): first on
``PYTHONPATH`` of every child, the server's too.

Run: ``.venv/bin/python bench/sync_small.py`` (``--runs 3`` for a quick run).
"""

from __future__ import annotations

import argparse
import json
import os
import pstats
import shutil
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _http import free_port, serving
from _measure import fresh, machine
from cli_startup import HEAVY, PASSWORD, SAMPLE_BBOX, USER, importtime, run, sample, timed, top

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "out" / "sync-small"
BIN = Path(sys.executable).parent
EDITS = 100
TARGET = 1.0


def edit_sites(package: Path, first: int, value: str) -> None:
    """Update ``EDITS`` sites of a device, from the ``first``-th (in fid order), through the
    device's GeoPackage (its triggers put the edits in the outbox)."""
    from offmaps.features.geopackage import GeoPackageStore  # noqa: PLC0415
    from offmaps.features.model import FeatureQuery, Update  # noqa: PLC0415

    (replica,) = json.loads((package / "package.json").read_text())["replicas"]
    with GeoPackageStore.open(package / replica["file"]) as store:
        sites = list(store.iter_features("sites", FeatureQuery(limit=first + EDITS)))
        edits = [
            Update("sites", site.global_id, {"condition": value})
            for site in sites[first : first + EDITS]
        ]
        if len(edits) != EDITS:
            raise RuntimeError(f"{package} has too few sites ({len(sites)})")
        store.apply_edits(list(edits))


def counts(answer: str) -> tuple[int, int, int]:
    """(uploaded, applied, downloaded) of ``offmaps sync --json``; a RuntimeError on errors."""
    result = json.loads(answer)
    if result["has_errors"]:
        raise RuntimeError(f"the sync had errors: {answer}")
    layers = result["layers"].values()
    return (
        sum(layer["uploaded"] for layer in layers),
        sum(layer["applied"] for layer in layers),
        sum(layer["downloaded"] + layer["deleted"] for layer in layers),
    )


def bench(data: Path, src: Path, runs: int, profile: bool) -> list[str]:
    built = sample(data)
    served, config = fresh(WORK / "served"), fresh(WORK / "config")
    mine, theirs = fresh(WORK / "device-a"), fresh(WORK / "device-b")
    shutil.copytree(built, served)
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        "PYTHONPATH": os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH", "")) if p),
        "OFFMAPS_CONFIG_DIR": str(config),
    }
    offmaps = BIN / "offmaps"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [offmaps, "serve", "--data", served, "--port", str(port)]
    seconds: list[float] = []
    moved: list[tuple[int, int, int]] = []
    hot: list[str] = []
    with serving(command, f"{url}/conformance", log=WORK / "server.log", env=env):
        run([offmaps, "login", url, "-u", USER, "--password-stdin"], env, stdin=PASSWORD)
        maps = json.loads(run([offmaps, "maps", "list", "--server", url, "--json"], env))
        where = ["--server", url, "--map", maps[0]["id"], "--bbox", SAMPLE_BBOX, "--json"]
        for device in (mine, theirs):
            run([offmaps, "offline", "generate", *where, "--out", device], env)
            run([offmaps, "sync", device, "--json"], env)  # the warm-up
        for index in range(runs + (1 if profile else 0)):
            edit_sites(theirs, EDITS, f"b{index}")
            run([offmaps, "sync", theirs, "--direction", "upload", "--json"], env)
            edit_sites(mine, 0, f"a{index}")
            if index == runs:  # the profiled run, after the timed ones
                stats = WORK / "client.prof"
                code = (
                    "import cProfile, sys; from offmaps.cli import main; "
                    f"sys.argv = ['offmaps', 'sync', {str(mine)!r}, '--json']; "
                    f"cProfile.run('main()', {str(stats)!r})"
                )
                began = time.perf_counter()
                imports = importtime(["-c", code], env)
                hot = [
                    f"Profiled run (cProfile and -X importtime, slower, not counted): "
                    f"{time.perf_counter() - began:.3f} s",
                    *top_functions(stats),
                    "",
                    "Largest imports of that sync (cumulative ms, importtime's overhead included):",
                    "",
                    "| module | depth | self ms | cumulative ms |",
                    "|---|---|---|---|",
                    *top(imports),
                    "",
                    "Heavy libraries it imported: "
                    + ", ".join(h for h in HEAVY if any(_within(m, h) for m, _, _ in imports)),
                ]
                continue
            took, out = timed([offmaps, "sync", mine, "--json"], env)
            found = counts(out)
            if found[:2] != (EDITS, EDITS) or found[2] < EDITS:
                raise RuntimeError(f"run {index}: uploaded, applied, downloaded = {found}")
            seconds.append(took)
            moved.append(found)
    median = statistics.median(seconds)
    verdict = "met" if median <= TARGET else "MISSED"
    downloaded = sorted({m[2] for m in moved})
    lines = [
        "",
        f"`bench/sync_small.py --runs {runs}`, source tree `{src}`; {machine()}",
        "",
        "| `offmaps sync DIR --json` (own process, wall time) | median s | min s | max s "
        "| target s | |",
        "|---|---|---|---|---|---|",
        f"| {EDITS} edits up, {EDITS} rows of another editor down | {median:.3f} "
        f"| {min(seconds):.3f} | {max(seconds):.3f} | < {TARGET} | {verdict} |",
        "",
        f"Each run: uploaded {EDITS}, applied {EDITS}, rows downloaded "
        f"{', '.join(map(str, downloaded))} (the other editor's {EDITS}, and any of the device's "
        "own rows sent back). Runs (s): " + ", ".join(f"{s:.3f}" for s in seconds),
    ]
    if hot:
        lines += ["", *hot]
    return lines


def _within(module: str, package: str) -> bool:
    module = module.strip()
    return module == package or module.startswith(f"{package}.")


def top_functions(path: Path, count: int = 12) -> list[str]:
    """Where a profiled sync's time went: imports, waiting on the server (socket reads), and
    the ``count`` functions with the most time of their own, as table rows."""
    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    total = max(entry[3] for entry in stats.values())

    def cumulative(name: str) -> float:
        return max((e[3] for (_, _, n), e in stats.items() if n == name), default=0.0)

    waiting = sum(e[2] for (_, _, n), e in stats.items() if "'recv" in n)
    rows = [
        f"of {total:.3f} s in the CLI's main: imports {cumulative('_find_and_load'):.3f} s "
        f"(cumulative, nested imports once), waiting on the server's answers (socket reads) "
        f"{waiting:.3f} s",
        "",
        "| function (most own time) | calls | own s | cumulative s |",
        "|---|---|---|---|",
    ]
    entries = sorted(stats.items(), key=lambda item: item[1][2], reverse=True)[:count]
    for (file, line, name), (_, calls, own, cumulative_s, _) in entries:
        where = f"{Path(file).name}:{line}" if line else file
        rows.append(f"| `{name}` ({where}) | {calls} | {own:.3f} | {cumulative_s:.3f} |")
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="timed syncs")
    parser.add_argument(
        "--src", type=Path, default=ROOT / "src", help="the source tree to time (its offmaps)"
    )
    parser.add_argument("--profile", action="store_true", help="one more run under cProfile")
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("OFFMAPS_DATA", ROOT / "data")),
        help="the data folder with osm/Helsinki.osm.pbf",
    )
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    print("\n".join(bench(args.data, args.src.resolve(), args.runs, args.profile)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
