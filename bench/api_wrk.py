"""API throughput and tail latency with wrk (a C load generator) against the demo artifacts, loopback.

    .venv/bin/python bench/api_wrk.py [--demo demo_out] [--seconds 10] [--rounds 3] [--threads 1,2]

The httpx client of ``bench/api_load.py`` spends most of the CPU it measures; wrk (Debian's
``wrk`` package: ``apt-get install wrk``) costs little, so the server's own limits show.

1. The artifacts: ``--demo DIR``'s (``tlrec demo --out DIR``; built here in a temp folder when
   not given, ~1-2 min).
2. One ``tlrec serve`` (API key auth on, access log off), as a user starts it; with ``--threads``
   one server per model-thread count (``tlrec serve --threads N``), one after the other.
3. For 1 and 16 connections (one wrk thread), in alternating rounds of ``--seconds`` each after a
   warm-up: ``GET /healthz`` (no auth, no model), ``GET /v1/ping`` (a constant through auth and
   middleware), ``GET /v1/users/{id}/recommendations?k=10`` and ``GET /v1/users/{id}/next?k=10``,
   the users rotating over 500 of the model's users (a Lua script).
4. Throughput (requests over the summed seconds) and the worst round's p50/p99 (wrk's
   latency distribution); the ratio of each route to ``/healthz``; issue 17's targets
   (recommendations and next >= 0.5x healthz, p99 <= 25 ms at 16 connections) for each server. Writes
   ``api_wrk.md`` and ``api_wrk.json`` and prints the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from api_load import API_KEY, serving  # noqa: E402

logger = logging.getLogger("bench.api_wrk")
CONNECTIONS = (1, 16)
USERS = 500
TARGET_RATIO = 0.5
TARGET_P99_MS = 25.0
ROUTES = {
    "healthz": None,
    "ping": None,
    "recommendations": "/v1/users/{}/recommendations?k=10",
    "next": "/v1/users/{}/next?k=10",
}
LUA = """
local paths = {}
for line in io.lines(os.getenv("WRK_PATHS")) do paths[#paths + 1] = line end
local key = os.getenv("WRK_KEY")
local i = 0
request = function()
  i = i % #paths + 1
  return wrk.format("GET", paths[i], {["X-API-Key"] = key})
end
"""
UNITS_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}


def parse_wrk(text: str) -> dict[str, float]:
    """wrk's report (with ``--latency``) -> requests, seconds, req/s, p50/p99 ms, errors (non-2xx + socket)."""
    def latency(pct: str) -> float:
        value, unit = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", text, re.M).groups()  # type: ignore[union-attr]
        return float(value) * UNITS_MS[unit]

    requests, seconds = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m)", text).groups()[:2]  # type: ignore[union-attr]
    unit = re.search(r"\d+ requests in [\d.]+(us|ms|s|m)", text).group(1)  # type: ignore[union-attr]
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    socket = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    errors = int(non_2xx.group(1)) if non_2xx else 0
    errors += sum(int(x) for x in socket.groups()) if socket else 0
    secs = float(seconds) * UNITS_MS[unit] / 1e3
    return {"requests": int(requests), "seconds": secs, "rps": int(requests) / secs,
            "p50_ms": latency("50"), "p99_ms": latency("99"), "errors": errors}


def wrk_version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True)  # exits 1 after printing
    return " ".join((done.stdout or done.stderr).split()[:2])


def run_wrk(base: str, paths_file: Path, script: Path, connections: int, seconds: float) -> dict[str, float]:
    env = {**os.environ, "WRK_PATHS": str(paths_file), "WRK_KEY": API_KEY}
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", "--timeout", "10s", "-s", str(script),
           base]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True)
    return parse_wrk(done.stdout)


def measure(base: str, work: Path, users: list[str], seconds: float, rounds: int) -> list[dict]:
    script = work / "rotate.lua"
    script.write_text(LUA)
    files = {}
    for name, template in ROUTES.items():
        files[name] = work / f"paths-{name}.txt"
        lines = [f"/{name}" if name == "healthz" else "/v1/ping"] if template is None else \
            [template.format(u) for u in users]
        files[name].write_text("\n".join(lines) + "\n")
    rows = []
    for c in CONNECTIONS:
        for name in ROUTES:  # warm-up: connections, caches, every user once
            run_wrk(base, files[name], script, c, 2)
        cells: dict[str, list[dict]] = {name: [] for name in ROUTES}
        for _ in range(rounds):
            for name in ROUTES:
                cells[name].append(run_wrk(base, files[name], script, c, seconds))
        for name, runs in cells.items():
            requests, secs = sum(r["requests"] for r in runs), sum(r["seconds"] for r in runs)
            rows.append({"route": name, "connections": c, "requests": requests, "rps": round(requests / secs, 1),
                         "p50_ms": round(max(r["p50_ms"] for r in runs), 2),
                         "p99_ms": round(max(r["p99_ms"] for r in runs), 2),
                         "round_rps": [round(r["rps"], 1) for r in runs],
                         "errors": sum(r["errors"] for r in runs)})
            logger.info("%s c=%d: %.0f req/s, p50 %.2f ms, p99 %.2f ms, %d errors", name, c, rows[-1]["rps"],
                        rows[-1]["p50_ms"], rows[-1]["p99_ms"], rows[-1]["errors"])
    return rows


def to_markdown(result: dict) -> str:
    lines = [
        "# API throughput and tail latency with wrk (demo artifacts, loopback)",
        "",
        f"Command: `{result['command']}`  ",
        f"{result['date']}; {result['machine']}. Model: {result['model']}. "
        f"wrk 1 thread, {result['rounds']} alternating rounds of {result['seconds']} s per route and "
        f"connection count, after a warm-up; users rotate over {result['users']}; k=10. p50/p99: the worst round's.",
        "",
        "| model threads | route | connections | req/s | x healthz | p50 ms | p99 ms | errors |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    by = {(r["threads"], r["route"], r["connections"]): r for r in result["rows"]}
    for r in result["rows"]:
        ratio = r["rps"] / by[(r["threads"], "healthz", r["connections"])]["rps"]
        lines.append(f"| {r['threads']} | {r['route']} | {r['connections']} | {r['rps']:.0f} | {ratio:.2f} | "
                     f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} |")
    lines += ["", f"Targets at 16 connections (issue 17): >= {TARGET_RATIO}x healthz's throughput and "
                  f"p99 <= {TARGET_P99_MS:g} ms.", ""]
    for threads in dict.fromkeys(r["threads"] for r in result["rows"]):
        for route in ("recommendations", "next"):
            r, h = by[(threads, route, 16)], by[(threads, "healthz", 16)]
            ratio = r["rps"] / h["rps"]
            lines.append(f"- {threads} model thread(s), {route}: **{ratio:.2f}x** "
                         f"({'met' if ratio >= TARGET_RATIO else 'missed'}), p99 **{r['p99_ms']:.1f} ms** "
                         f"({'met' if r['p99_ms'] <= TARGET_P99_MS else 'missed'})")
    lines += ["", "wrk and the server share the machine's cores.", ""]
    return "\n".join(lines)


def thread_counts(text: str) -> list[int]:
    """``--threads``: "1,2" -> [1, 2] (argparse reports anything else in one line)."""
    counts = [int(t) for t in text.split(",") if t.strip()]
    if not counts or min(counts) < 1:
        raise ValueError(text)
    return counts


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--demo", type=Path, default=None, help="A `tlrec demo --out` folder (default: build one).")
    parser.add_argument("--seconds", type=int, default=10, help="Seconds per round.")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--threads", type=thread_counts, default=[],
                        help="Comma list of model-thread counts, one server each (default: the server's default).")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    from tlrec.serving.settings import available_cores, model_threads_default

    counts = args.threads or [model_threads_default()]
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk")

    import datetime as dt

    with tempfile.TemporaryDirectory(prefix="api_wrk-") as tmp:
        work = Path(tmp)
        demo = args.demo
        if demo is None:
            demo = work / "demo"
            logger.info("building the demo artifacts in %s ...", demo)
            subprocess.run([sys.executable, "-m", "tlrec.services.cli", "demo", "--out", str(demo)], check=True,
                           stdout=subprocess.DEVNULL, cwd=ROOT)
        artifacts = demo / "artifacts"
        from tlrec.serving.served_model import ServedModel

        served = ServedModel.load(artifacts)
        model = f"{served.model.name}, {len(served.items):,} items, {len(served.users):,} users"
        users = served.users.to_external(list(range(min(USERS, len(served.users)))))
        del served
        load_start = os.getloadavg()[0]
        rows = []
        for threads in counts:
            logger.info("server with %d model thread(s)", threads)
            with serving(artifacts, work / f"events-{threads}", threads) as base:
                rows += [{"threads": threads, **row} for row in measure(base, work, users, args.seconds, args.rounds)]
    result = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{available_cores()} cores, Python {platform.python_version()}, {wrk_version()}, load avg "
                   f"{load_start:.2f} at the start and {os.getloadavg()[0]:.2f} at the end",
        "model": model, "users": len(users), "seconds": args.seconds, "rounds": args.rounds, "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "api_wrk.json").write_text(json.dumps(result, indent=2) + "\n")
    md = to_markdown(result)
    (args.out / "api_wrk.md").write_text(md)
    print(md)  # the benchmark's output is its table
    return result


if __name__ == "__main__":
    main()
