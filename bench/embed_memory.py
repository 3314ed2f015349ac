"""Peak memory of the Ray embedding job on a 50,000-item catalog (and of the in-process path).

    .venv/bin/python bench/embed_memory.py                    # 50,000 items, Ray then in-process
    .venv/bin/python bench/embed_memory.py --items 5000 --skip-in-process

A deterministic catalog of short-to-medium texts (titles of 2-8 words,
descriptions of 0-30 words) is written as Parquet and embedded with MiniLM by a
child process running ``embed_catalog_ray(<catalog.parquet>, ...)`` (streamed
``read_parquet`` input, its own local Ray, as ``tlrec embed`` would), then by a
child running ``embed_catalog`` in process. Every 0.2 s the resident set size
(RSS) of the child and all its descendants (Ray's raylet, GCS, system actors
and the encoder actors) is summed; the peak of that sum is the headline figure.
RSS counts shared pages (libraries, the shared-memory object store) once per
process, so the sum overstates; the proportional set size (PSS, shared pages
split between the processes that map them) is sampled every 1 s as a closer
figure. Target: peak < 3 GB for the Ray job.

Writes ``bench/results/embed_memory.md`` and ``.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import suppress
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_ray import SYLLABLES  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
GB = 1e9

RAY_CHILD = """
import logging, sys
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
from tlrec.embeddings.batch import embed_catalog_ray
threads = int(sys.argv[3]) if len(sys.argv) > 3 else None
embed_catalog_ray(sys.argv[1], sys.argv[2], image=None, audio=None, progress=False, reuse=False,
                  threads_per_actor=threads)
"""
IN_PROCESS_CHILD = """
import logging, sys
import polars as pl
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
from tlrec.embeddings.embed_catalog import embed_catalog
embed_catalog(pl.read_parquet(sys.argv[1]), sys.argv[2], image=None, audio=None, progress=False, reuse=False)
"""


def make_short_catalog(n: int, seed: int = 0) -> pl.DataFrame:
    """``n`` items: titles of 2-8 pseudo-words, descriptions of 0-30 (short-to-medium texts)."""
    rng = np.random.default_rng(seed)
    words = np.array(sorted({"".join(rng.choice(SYLLABLES, size=rng.integers(1, 4))) for _ in range(4000)}))
    title_len = rng.integers(2, 9, size=n)
    desc_len = rng.integers(0, 31, size=n)
    titles = [" ".join(rng.choice(words, size=k)).capitalize() for k in title_len]
    descs = [" ".join(rng.choice(words, size=k)) + "." if k else None for k in desc_len]
    return pl.DataFrame({"item_id": [f"item{i:07d}" for i in range(n)], "title": titles, "description": descs})


class MemorySampler:
    """RSS (every ``interval`` s) and PSS (every 5th sample) of a process tree, grouped by role."""

    def __init__(self, pid: int, interval: float = 0.2) -> None:
        self.root = psutil.Process(pid)
        self.interval = interval
        self.peak_rss = 0.0
        self.peak_rss_parts: dict[str, float] = {}
        self.peak_pss = 0.0
        self.peak_procs = 0
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    @staticmethod
    def _group(proc: psutil.Process, root_pid: int) -> str:
        if proc.pid == root_pid:
            return "driver"
        with suppress(psutil.Error):
            name = proc.name() + " " + " ".join(proc.cmdline()[:1])
            if "MapBatches" in name or "MapWorker" in name:
                return "encoder actors"
        return "ray system"

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                procs = [self.root, *self.root.children(recursive=True)]
            except psutil.Error:
                break
            parts: dict[str, float] = {}
            pss = 0.0
            with_pss = self.samples % 5 == 0
            for p in procs:
                try:
                    rss = p.memory_info().rss
                    if with_pss:
                        pss += p.memory_full_info().pss
                except psutil.Error:
                    continue
                group = self._group(p, self.root.pid)
                parts[group] = parts.get(group, 0.0) + rss
            total = sum(parts.values())
            if total > self.peak_rss:
                self.peak_rss, self.peak_rss_parts = total, parts
            self.peak_pss = max(self.peak_pss, pss)
            self.peak_procs = max(self.peak_procs, len(procs))
            self.samples += 1
            self._stop.wait(self.interval)

    def __enter__(self) -> MemorySampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()


def run_child(code: str, catalog: Path, out: Path, log: Path, *extra: str) -> dict[str, Any]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", code, str(catalog), str(out), *extra], stdout=fh,
                                stderr=subprocess.STDOUT, env=env)
        with MemorySampler(proc.pid) as sampler:
            rc = proc.wait()
    wall = time.perf_counter() - t0
    if rc != 0:
        raise RuntimeError(f"child failed (exit {rc}); see {log}:\n{log.read_text()[-2000:]}")
    import pyarrow.parquet as pq

    return {"seconds": wall, "rows": pq.ParquetFile(out).metadata.num_rows, "peak_rss": sampler.peak_rss,
            "peak_rss_parts": sampler.peak_rss_parts, "peak_pss": sampler.peak_pss,
            "processes": sampler.peak_procs, "samples": sampler.samples}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=50_000)
    parser.add_argument("--skip-in-process", action="store_true")
    parser.add_argument("--threads-per-actor", default="default",
                        help="comma list of Ray layouts to run: 'default' and/or torch threads per actor")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="embed_memory_"))
    catalog = work / "catalog.parquet"
    make_short_catalog(args.items).write_parquet(catalog, row_group_size=5000)
    runs: dict[str, dict[str, Any]] = {}
    ray_logs: dict[str, list[str]] = {}
    try:
        from tlrec.embeddings.batch import _layout

        for threads in args.threads_per_actor.split(","):
            t = None if threads.strip() == "default" else int(threads)
            actors, n_threads, _, rows = _layout(os.cpu_count() or 1, args.items, threads=t)
            name = (f"ray{' default' if t is None else ''}: {actors} actor(s) x {n_threads} thread(s), "
                    f"{rows} rows/task")
            print(f"{name} on {args.items} items ...", flush=True)
            runs[name] = run_child(RAY_CHILD, catalog, work / "ray.parquet", work / "ray.log",
                                   *([] if t is None else [str(t)]))
            ray_logs[name] = [line.split(": ", 1)[-1] for line in (work / "ray.log").read_text().splitlines()
                              if line.startswith(("INFO embeddings.", "WARNING embeddings."))][-2:]
            (work / "ray.parquet").unlink()
        if not args.skip_in_process:
            print(f"in-process on {args.items} items ...", flush=True)
            runs["in-process (embed_catalog)"] = run_child(IN_PROCESS_CHILD, catalog, work / "local.parquet",
                                                           work / "local.log")
    finally:
        for p in sorted(work.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        work.rmdir()
    meta = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, "
                   f"{psutil.virtual_memory().total / GB:.0f} GB RAM, Python {platform.python_version()}",
        "items": args.items, "encoder": "minilm", "sampling": "RSS every 0.2 s, PSS every 1 s",
        "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
        "ray_log": ray_logs,
    }
    report(runs, meta, args.out)
    return 0


def report(runs: dict[str, dict[str, Any]], meta: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    def parts(r: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v / GB:.2f}" for k, v in sorted(r["peak_rss_parts"].items()))

    table = Table(title=f"Peak memory embedding {meta['items']} items (minilm)")
    for col in ("run", "peak RSS sum (GB)", "at the peak (GB)", "peak PSS sum (GB)", "processes", "seconds",
                "items/s", "rows out"):
        table.add_column(col)
    for name, r in runs.items():
        table.add_row(name, f"{r['peak_rss'] / GB:.2f}", parts(r), f"{r['peak_pss'] / GB:.2f}", str(r["processes"]),
                      f"{r['seconds']:.0f}", f"{meta['items'] / r['seconds']:.0f}", str(r["rows"]))
    Console().print(table)
    for k, v in meta.items():
        print(f"{k}: {v}")

    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Peak memory: embedding {meta['items']} text items (minilm)", "",
             f"Command: `{meta['command']}`  ", f"Run {meta['date']} on {meta['machine']}.", "",
             "Driver + every descendant process (Ray raylet, GCS, system actors, encoder actors), "
             f"{meta['sampling']}. Target for the Ray job: peak < 3 GB.", "",
             "| run | peak RSS sum (GB) | at the peak, by role (GB) | peak PSS sum (GB) | processes | seconds "
             "| items/s | rows out |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | {r['peak_rss'] / GB:.2f} | {parts(r)} | {r['peak_pss'] / GB:.2f} | {r['processes']} | "
              f"{r['seconds']:.0f} | {meta['items'] / r['seconds']:.0f} | {r['rows']} |" for name, r in runs.items()]
    lines += ["", "Ray job logs (last lines):", ""]
    for name, log in meta["ray_log"].items():
        lines += [f"- {name}:"] + [f"    {line}" for line in log]
    lines += [""]
    (out / "embed_memory.md").write_text("\n".join(lines), encoding="utf-8")
    data = {"meta": meta, "runs": {k: {**v, "peak_rss_gb": round(v["peak_rss"] / GB, 3),
                                       "peak_pss_gb": round(v["peak_pss"] / GB, 3)} for k, v in runs.items()}}
    (out / "embed_memory.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
