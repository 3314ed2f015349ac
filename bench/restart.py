"""Restart benchmark of the event log: start-up time and memory against history, before and after compaction.

    .venv/bin/python bench/restart.py [--batches 100000] [--per-batch 10] [--users 2000] [--repeats 3]

1. Builds event logs through the real ``EventLog.append`` (fsync stubbed out while building,
   to save minutes; the bytes are the same): ``N`` = batches x per-batch events (default
   1,000,000), and ``2N``, over ``--users`` users (so every user's fresh list and the
   idempotency window are full in both: the state a server keeps is at its bound). Each
   batch has an idempotency key. Segments roll at the default 32 MB.
2. Measures, in a fresh Python process per run (median of ``--repeats``), what ``tlrec serve``
   does before ``/readyz`` apart from loading the model: ``EventLog.open()`` with the server's
   default ``FreshEvents`` (200 per user, 100,000 users): the time of ``open`` (snapshot load +
   replay) and the process's RSS after it (``VmRSS``) and at its peak (``VmHWM``), next to the
   RSS of the same process before ``open`` (interpreter and imports).
3. Rows: the code before this change (git ``BASELINE_COMMIT``, its old record format, the
   whole log replayed into memory; ``--skip-baseline`` leaves it out), then this code on
   ``N`` and ``2N`` events, not compacted (every segment replayed) and compacted
   (``EventLog.compact()``: snapshot + Parquet archive, empty live segment).
4. Prints a Markdown table and writes ``restart.md`` and ``restart.json``.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import logging
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

logger = logging.getLogger("bench.restart")
BASELINE_COMMIT = "609d9f168ae2ce6e82444efabe1a56a6572bab8a"  # serving/events.py before issue 11


def _batch(i: int, per_batch: int, users: int) -> list[dict[str, Any]]:
    user = f"user-{(i * 7919) % users:06d}"
    return [{"user_id": user, "item_id": f"item-{(i * per_batch + j) % 50_000:06d}",
             "timestamp": 1_800_000_000 + i, "event": "view" if j % 4 else "click", "value": None}
            for j in range(per_batch)]


def build(log: Any, start: int, stop: int, per_batch: int, users: int) -> None:
    """Append batches ``start..stop`` (keys ``b<i>``) with fsync stubbed out."""
    real = os.fsync
    os.fsync = lambda fd: None  # type: ignore[assignment]
    try:
        for i in range(start, stop):
            log.append(_batch(i, per_batch, users), f"b{i:09d}")
    finally:
        os.fsync = real  # type: ignore[assignment]


def _baseline_module(work: Path) -> Any | None:
    """The event log module before this change, from git (None when git cannot give it)."""
    try:
        source = subprocess.run(["git", "show", f"{BASELINE_COMMIT}:serving/events.py"], cwd=ROOT, check=True,
                                capture_output=True).stdout
    except (OSError, subprocess.CalledProcessError) as exc:
        logger.warning("baseline skipped: git show %s failed (%s)", BASELINE_COMMIT[:8], exc)
        return None
    path = work / "baseline_events.py"
    path.write_bytes(source)
    return _load_module(path)


def _load_module(path: Path) -> Any:
    spec = importlib.util.spec_from_file_location("baseline_events", path)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    sys.modules["baseline_events"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)  # type: ignore[union-attr]
    return module


def _status() -> dict[str, float]:
    out = {}
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(("VmRSS:", "VmHWM:")):
                out[line.split(":")[0]] = int(line.split()[1]) / 1024
    return out


def measure_child(directory: Path, baseline: Path | None) -> dict[str, float]:
    """Run in the child process: open the log once, report seconds and RSS (MB)."""
    if baseline is not None:
        module = _load_module(baseline)
        fresh = module.FreshEvents()
        log = module.EventLog(directory, on_batch=fresh.add)
    else:
        from tlrec.serving.event_log import EventLog
        from tlrec.serving.event_snapshot import FreshEvents

        fresh = FreshEvents()
        log = EventLog(directory, fresh=fresh, auto_compact=False)
    before = _status()["VmRSS"]
    start = time.perf_counter()
    records = log.open()
    seconds = time.perf_counter() - start
    after = _status()
    log.close()
    return {"seconds": seconds, "rss_before_mb": before, "rss_mb": after["VmRSS"], "peak_mb": after["VmHWM"],
            "records_replayed": records, "users": len(fresh)}


def measure(directory: Path, repeats: int, baseline: Path | None = None) -> dict[str, float]:
    """Median over ``repeats`` fresh processes (the page cache is warm after the first)."""
    runs = []
    for _ in range(repeats):
        cmd = [sys.executable, str(Path(__file__).resolve()), "--measure", str(directory)]
        if baseline is not None:
            cmd += ["--baseline-file", str(baseline)]
        proc = subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, text=True)
        runs.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    out = {k: round(statistics.median(r[k] for r in runs), 3) for k in runs[0]}
    out["seconds_runs"] = [round(r["seconds"], 3) for r in runs]  # type: ignore[assignment]
    return out


def _size(directory: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in directory.rglob(pattern) if p.is_file())


def run(args: argparse.Namespace, work: Path) -> list[dict[str, Any]]:
    from tlrec.serving.event_log import EventLog
    from tlrec.serving.event_snapshot import FreshEvents

    n, per, users = args.batches, args.per_batch, args.users
    rows: list[dict[str, Any]] = []

    def row(name: str, events: int, directory: Path, compacted: bool, extra: dict[str, Any] | None = None,
            baseline: Path | None = None) -> None:
        result = measure(directory, args.repeats, baseline)
        rows.append({"code": name, "events": events, "compacted": compacted,
                     "log_mb": round(_size(directory, "events*.log") / 2**20, 1),
                     "snapshot_mb": round(_size(directory, "events.snapshot") / 2**20, 1),
                     "archive_mb": round(_size(directory / "archive", "*.parquet") / 2**20, 1)
                     if (directory / "archive").exists() else 0.0, **result, **(extra or {})})
        logger.info("%s", rows[-1])

    if not args.skip_baseline:
        module = _baseline_module(work)
        if module is not None:
            folder = work / "baseline"
            log = module.EventLog(folder)
            log.open()
            started = time.perf_counter()
            build(log, 0, n, per, users)
            log.close()
            logger.info("baseline log: %d batches in %.0fs", n, time.perf_counter() - started)
            row(f"before (git {BASELINE_COMMIT[:7]})", n * per, folder, False, baseline=work / "baseline_events.py")
            shutil.rmtree(folder)

    for factor in (1, 2):
        folder = work / f"x{factor}"
        log = EventLog(folder, fresh=FreshEvents(), auto_compact=False)
        log.open()
        started = time.perf_counter()
        build(log, 0, factor * n, per, users)
        log.close()
        logger.info("log of %d batches built in %.0fs", factor * n, time.perf_counter() - started)
        row("this change", factor * n * per, folder, False)
        log = EventLog(folder, fresh=FreshEvents(), auto_compact=False)
        log.open()
        result = log.compact()
        log.close()
        assert result is not None
        row("this change", factor * n * per, folder, True, {"compaction_s": round(result.seconds, 1)})
        shutil.rmtree(folder)
    return rows


def to_markdown(result: dict[str, Any]) -> str:
    lines = [
        "# Event log restart: start-up time and memory against history",
        "",
        f"`EventLog.open()` (snapshot load + replay, what `tlrec serve` does before `/readyz` apart from loading "
        f"the model) in a fresh process, median of {result['repeats']} runs; batches of {result['per_batch']} "
        f"events with idempotency keys over {result['users']:,} users; server defaults (32 MB segments, "
        f"fresh events 200 per user / 100,000 users, idempotency window 100,000 keys / 24 h). RSS after open, "
        f"peak RSS, and the RSS of the same process before open (interpreter + imports). {result['machine']}.",
        "",
        "| code | events | compacted | log MB | snapshot MB | archive MB | start-up s | RSS MB | peak RSS MB "
        "| RSS before open MB | batches replayed |",
        "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in result["rows"]:
        lines.append(f"| {r['code']} | {r['events']:,} | {'yes' if r['compacted'] else 'no'} | {r['log_mb']:.1f} | "
                     f"{r['snapshot_mb']:.1f} | {r['archive_mb']:.1f} | {r['seconds']:.2f} | {r['rss_mb']:.0f} | "
                     f"{r['peak_mb']:.0f} | {r['rss_before_mb']:.0f} | {int(r['records_replayed']):,} |")
    compactions = [f"{r['events']:,} events: {r['compaction_s']:.0f} s" for r in result["rows"] if "compaction_s" in r]
    lines += ["", f"Compaction (`EventLog.compact()`, one thread, Parquet zstd): {'; '.join(compactions)}.", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict[str, Any] | None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=100_000, help="Batches in the 1x log (2x: twice that).")
    parser.add_argument("--per-batch", type=int, default=10)
    parser.add_argument("--users", type=int, default=2_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-baseline", action="store_true", help="Leave out the code before this change.")
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    parser.add_argument("--work", type=Path, default=None, help="Folder for the logs (default: temp).")
    parser.add_argument("--measure", type=Path, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--baseline-file", type=Path, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure is not None:  # the child process of one measurement
        logging.basicConfig(level=logging.WARNING)
        sys.stdout.write(json.dumps(measure_child(args.measure, args.baseline_file)) + "\n")
        return None
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    load_start = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="restart-") as tmp:
        work = args.work or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows = run(args, work)
    from tlrec.serving.settings import available_cores

    result = {
        "batches": args.batches, "per_batch": args.per_batch, "users": args.users, "repeats": args.repeats,
        "baseline_commit": BASELINE_COMMIT,
        "machine": f"{available_cores()} cores, Python {platform.python_version()}, load avg "
                   f"{load_start:.2f} at the start and {os.getloadavg()[0]:.2f} at the end (a shared machine)",
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "restart.json").write_text(json.dumps(result, indent=2) + "\n")
    md = to_markdown(result)
    (args.out / "restart.md").write_text(md)
    print(md)  # the benchmark's output is its table
    return result


if __name__ == "__main__":
    main()
