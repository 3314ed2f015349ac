"""End-to-end training time as a user times it: `tlrec train` with its defaults against `tlrec train --model lightfm`.

    .venv/bin/python bench/train_time.py --catalog ml/catalog.parquet --interactions ml/interactions.parquet \
        --vectors ml/vectors.parquet [--rounds 1] [--demo]

Each command runs as a fresh process (start-up, loading, the validation split, fitting,
publishing the artifact), on the same files with the same vectors, in alternating rounds so
both see the same load; the wall-clock seconds, the served model and the ratio
default / lightfm go to a table and to ``train_time.md`` / ``train_time.json``. With ``--demo``,
``tlrec demo`` end to end (a fresh process: generating, embedding, training, evaluating) is timed
too, once per round after the two trainings, with the 1-minute load average before each run
(issue 17: <= 2 minutes on a quiet machine).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

logger = logging.getLogger("bench.train_time")
ROOT = Path(__file__).resolve().parents[1]
RUNS = {"tlrec train (defaults: --model auto)": [], "tlrec train --model lightfm": ["--model", "lightfm"]}
DEMO_TARGET_SECONDS = 120.0


def run_timed(cmd: list[str]) -> float:
    """Wall-clock seconds of one process running ``cmd``; exits the bench with its stderr if it fails."""
    start = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{done.stderr[-2000:]}")
    return seconds


def time_train(args: argparse.Namespace, extra: list[str], out: Path) -> dict[str, Any]:
    """Wall-clock seconds of one `tlrec train` process and the model it published."""
    cmd = [sys.executable, "-m", "tlrec.services.cli", "train", "--catalog", str(args.catalog), "--interactions", str(args.interactions),
           "--vectors", str(args.vectors), "--out", str(out), *extra]
    seconds = run_timed(cmd)
    version = (out / "current").read_text().strip()  # `current` names the published version
    manifest = json.loads((out / version / "manifest.json").read_text())
    served = manifest.get("selection", {}).get("choice") or manifest["model"]
    return {"seconds": round(seconds, 1), "model": served}


def time_demo(out: Path) -> dict[str, Any]:
    """Wall-clock seconds of one `tlrec demo --out out` process and the load average before it."""
    load = round(os.getloadavg()[0], 2)
    seconds = run_timed([sys.executable, "-m", "tlrec.services.cli", "demo", "--out", str(out)])
    return {"seconds": round(seconds, 1), "load_before": load}


def to_markdown(result: dict[str, Any]) -> str:
    lines = ["# Training time end to end: `tlrec train` defaults against `--model lightfm`", "",
             f"Command: `{result['command']}`  ",
             f"Run {result['date']} on {result['machine']}; load average {result['load_start']} at the start and "
             f"{result['load_end']} at the end.", "",
             "Each is a fresh `tlrec train` process (start-up included) on the same files and vectors; "
             f"{result['rounds']} alternating round(s).", "",
             "| command | served model | seconds (median) |", "|---|---|---:|"]
    for name, row in result["rows"].items():
        lines.append(f"| `{name}` | {row['model']} | {row['median_seconds']:.1f} |")
    lines += ["", f"Ratio defaults / lightfm: **{result['ratio']:.2f}x** (issue 17's target: <= 3x).", ""]
    if demo := result.get("demo"):
        runs = ", ".join(f"{r['seconds']:.1f} s (load {r['load_before']})" for r in demo["runs"])
        lines += [f"`tlrec demo --out DIR` end to end (fresh process; 1-minute load average before each run): {runs}; "
                  f"median **{demo['median_seconds']:.1f} s** (issue 17's target: <= {DEMO_TARGET_SECONDS:.0f} s on a "
                  "quiet machine).", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--catalog", type=Path, required=True)
    parser.add_argument("--interactions", type=Path, required=True)
    parser.add_argument("--vectors", type=Path, required=True)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--demo", action="store_true", help="also time `tlrec demo` end to end, once per round")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    result: dict[str, Any] = {
        "command": "python bench/train_time.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "load_start": round(os.getloadavg()[0], 2), "rounds": args.rounds,
    }
    times: dict[str, list[dict[str, Any]]] = {name: [] for name in RUNS}
    demos: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="tlrec-train-time-") as tmp:
        for r in range(args.rounds):
            for i, (name, extra) in enumerate(RUNS.items()):
                times[name].append(time_train(args, extra, Path(tmp) / f"{r}-{i}"))
                logger.info("%s: %s", name, times[name][-1])
            if args.demo:
                demos.append(time_demo(Path(tmp) / f"{r}-demo"))
                logger.info("tlrec demo: %s", demos[-1])
    result["load_end"] = round(os.getloadavg()[0], 2)
    result["rows"] = {name: {"model": runs[-1]["model"], "seconds": [t["seconds"] for t in runs],
                             "median_seconds": statistics.median(t["seconds"] for t in runs)}
                      for name, runs in times.items()}
    default, lightfm = (row["median_seconds"] for row in result["rows"].values())
    result["ratio"] = default / lightfm
    if demos:
        result["demo"] = {"runs": demos, "median_seconds": statistics.median(d["seconds"] for d in demos)}
    md = to_markdown(result)
    print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "train_time.md").write_text(md)
    (args.out / "train_time.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
