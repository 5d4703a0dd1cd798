"""CLI start-up: ``offmaps --help`` and a no-op ``offmaps sync``, wall time (issue 15).

The issue: "``offmaps --help`` takes 0.94-0.99 s [...] It is ~90 % of a 100-edit or no-op
``offmaps sync`` [...] Targets (a bench with ``-X importtime`` and wall time, median of 10 runs):
``offmaps --help`` <= 0.25 s, a no-op ``offmaps sync DIR`` <= 0.4 s on loopback."

No peer: the targets are absolute (what a person at a terminal notices), so this bench times
offmaps alone, against those numbers.

1. The Helsinki sample map is built once into ``bench/out/cli-startup/sample``
   (:func:`offmaps.sample.webmap.build_sample`); each run serves a fresh copy of it with
   ``offmaps serve`` (one worker, its own process group, a free loopback port: ``bench/_http.py``).
2. As a user would, with the console script: ``offmaps login`` as the sample editor,
   ``offmaps maps list``, ``offmaps offline generate`` of the sample's default area into a
   package, and one ``offmaps sync DIR`` (a warm-up, not timed).
3. Timed, each as its own process started the way a shell starts it (``bin/offmaps ...``), the
   wall time around it, ``--runs`` times (default 10), the two commands alternating so that the
   machine's load falls on both: ``offmaps --help`` (its output must list every command), and
   ``offmaps sync DIR --json`` (it must upload and download nothing: no layer in its result, no
   errors; the package holds the sample's replica, checked once). Median, min and max of
   each, against the targets.
4. Where the time goes: ``python -X importtime -c 'import offmaps.cli'`` and the same for
   ``offmaps.cli.sync`` (the modules the sync command imports), the 10 largest cumulative entries
   of each; and the heavy libraries a real no-op sync imported (``-X importtime`` of one more
   ``offmaps sync`` run), which should be none of the server, CQL2 (pygeofilter, lark), the web
   map models, the tile code (offmaps.containers, morecantile), pyproj, shapely or numpy.

Children run without ``PYTHONDONTWRITEBYTECODE``, so that bytecode is cached (as it is for an
installed package) by the warm-up runs; the ``-X importtime`` figures come after the timed runs.

``--src DIR`` times another source tree (e.g. an export of main, for the "before" figures): it is
put first on ``PYTHONPATH`` of every child, the server's too.

Run: ``.venv/bin/python bench/cli_startup.py`` (``--runs 3`` for a quick run).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _http import free_port, serving
from _measure import fresh, machine

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "bench" / "out" / "cli-startup"
BIN = Path(sys.executable).parent
USER = "editor"  # the sample map's editor (offmaps.sample.webmap)
PASSWORD = "offmaps-sample"
SAMPLE_BBOX = "24.935,60.164,24.953,60.179"  # the sample map's default area (as bench/offline.py)
HELP_TARGET = 0.25
SYNC_TARGET = 0.4
HEAVY = (
    "offmaps.server",
    "fastapi",
    "uvicorn",
    "pygeofilter",
    "lark",
    "offmaps.schemas.webmap",
    "offmaps.containers",
    "offmaps.tiling",
    "morecantile",
    "pyproj",
    "shapely",
    "numpy",
)


def run(command: Sequence[str | Path], env: dict[str, str], stdin: str = "") -> str:
    """Run a command; its stdout, or a RuntimeError with its output."""
    done = subprocess.run(
        [str(part) for part in command],
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(
            f"{' '.join(map(str, command))} failed ({done.returncode}):\n{done.stdout}\n"
            f"{done.stderr}"
        )
    return done.stdout


def timed(command: Sequence[str | Path], env: dict[str, str]) -> tuple[float, str]:
    """Wall seconds of one run of ``command`` (as its own process), and its stdout."""
    began = time.perf_counter()
    out = run(command, env)
    return time.perf_counter() - began, out


def sample(data: Path) -> Path:
    """The sample map's data folder, built once from the OSM extract under ``data``."""
    from offmaps.sample.webmap import build_sample  # noqa: PLC0415

    built = WORK / "sample"
    if not (built / "webmaps").is_dir():
        fresh(built)
        build_sample(built, data / "osm" / "Helsinki.osm.pbf")
    return built


def check_noop(answer: str) -> None:
    """A sync that moved nothing: no layer with anything uploaded or downloaded, no errors (a
    layer with nothing done is left out of the result)."""
    result = json.loads(answer)
    moved = {
        name: counts
        for name, counts in result["layers"].items()
        if any(counts[k] for k in ("uploaded", "downloaded", "deleted")) or counts["error"]
    }
    if moved or result["has_errors"]:
        raise RuntimeError(f"the sync was not a no-op: {answer}")


def importtime(code: Sequence[str], env: dict[str, str]) -> list[tuple[str, int, int]]:
    """``-X importtime`` of ``python CODE...``: (module, self µs, cumulative µs) per import."""
    done = subprocess.run(
        [sys.executable, "-X", "importtime", *code],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"python -X importtime {' '.join(code)} failed:\n{done.stderr}")
    rows = []
    for line in done.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        own, cumulative, name = line.removeprefix("import time:").split("|")
        rows.append((name.rstrip(), int(own), int(cumulative)))
    return rows


def top(rows: list[tuple[str, int, int]], count: int = 10) -> list[str]:
    """The ``count`` largest cumulative entries, as table rows (indent = import depth)."""
    found = sorted(rows, key=lambda row: row[2], reverse=True)[:count]
    return [
        f"| `{name.strip()}` | {(len(name) - len(name.lstrip())) // 2} | {own / 1000:.1f} "
        f"| {cumulative / 1000:.1f} |"
        for name, own, cumulative in found
    ]


def summary(name: str, seconds: list[float], target: float) -> str:
    median = statistics.median(seconds)
    verdict = "met" if median <= target else "MISSED"
    return (
        f"| {name} | {median:.3f} | {min(seconds):.3f} | {max(seconds):.3f} | <= {target} "
        f"| {verdict} |"
    )


def bench(data: Path, src: Path, runs: int) -> list[str]:
    built = sample(data)
    served, config, package = fresh(WORK / "served"), fresh(WORK / "config"), WORK / "package"
    shutil.copytree(built, served)
    # bytecode is cached as in an installed package (a session may set PYTHONDONTWRITEBYTECODE,
    # which would make every run compile offmaps from source): the warm-up runs write it
    env = {
        **{k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"},
        "PYTHONPATH": os.pathsep.join(p for p in (str(src), os.environ.get("PYTHONPATH", "")) if p),
        "OFFMAPS_CONFIG_DIR": str(config),
        "COLUMNS": "100",
    }
    offmaps = BIN / "offmaps"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [offmaps, "serve", "--data", served, "--port", str(port)]
    helps: list[float] = []
    syncs: list[float] = []
    with serving(command, f"{url}/conformance", log=WORK / "server.log", env=env):
        run([offmaps, "login", url, "-u", USER, "--password-stdin"], env, stdin=PASSWORD)
        maps = json.loads(run([offmaps, "maps", "list", "--server", url, "--json"], env))
        where = ["--server", url, "--map", maps[0]["id"], "--bbox", SAMPLE_BBOX, "--json"]
        run([offmaps, "offline", "generate", *where, "--out", fresh(package)], env)
        if not json.loads((package / "package.json").read_text())["replicas"]:
            raise RuntimeError(f"{package} has no replica to sync")
        run([offmaps, "sync", package, "--json"], env)  # the warm-up
        for _ in range(runs):
            seconds, out = timed([offmaps, "--help"], env)
            if not all(f"  {name} " in out for name in ("tiles", "serve", "offline", "sync")):
                raise RuntimeError(f"offmaps --help lists too little:\n{out}")
            helps.append(seconds)
            seconds, out = timed([offmaps, "sync", package, "--json"], env)
            check_noop(out)
            syncs.append(seconds)
        code = ["-c", "import sys; from offmaps.cli import main; sys.exit(main())"]
        during_sync = importtime([*code, "sync", str(package), "--json"], env)
    cli = importtime(["-c", "import offmaps.cli"], env)
    sync = importtime(["-c", "import offmaps.cli.sync"], env)
    imported = {name.strip() for name, _, _ in during_sync}
    heavy = [h for h in HEAVY if any(m == h or m.startswith(f"{h}.") for m in imported)]
    lines = [
        "",
        f"`bench/cli_startup.py --runs {runs}`, source tree `{src}`; {machine()}",
        "",
        "| command (own process, wall time) | median s | min s | max s | target s | |",
        "|---|---|---|---|---|---|",
        summary("`offmaps --help`", helps, HELP_TARGET),
        summary("`offmaps sync DIR --json` (no-op, loopback)", syncs, SYNC_TARGET),
        "",
        "`python -X importtime -c 'import offmaps.cli'`, largest cumulative (ms; one run, "
        "importtime's own overhead included):",
        "",
        "| module | depth | self ms | cumulative ms |",
        "|---|---|---|---|",
        *top(cli),
        "",
        "`python -X importtime -c 'import offmaps.cli.sync'`, largest cumulative (ms):",
        "",
        "| module | depth | self ms | cumulative ms |",
        "|---|---|---|---|",
        *top(sync),
        "",
        f"A real no-op `offmaps sync` imported {len(imported)} modules; of the heavy ones "
        f"({', '.join(HEAVY)}): {', '.join(heavy) or 'none'}.",
    ]
    return lines


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="runs of each command")
    parser.add_argument(
        "--src", type=Path, default=ROOT / "src", help="the source tree to time (its offmaps)"
    )
    parser.add_argument(
        "--data",
        type=Path,
        default=Path(os.environ.get("OFFMAPS_DATA", ROOT / "data")),
        help="the data folder with osm/Helsinki.osm.pbf",
    )
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    print("\n".join(bench(args.data, args.src.resolve(), args.runs)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
