"""Throughput of the Ray embedding job against the in-process loop, same encoder, same catalog.

    .venv/bin/python bench/embed_ray.py                  # 5,000 items, default Ray layout, 2 rounds
    .venv/bin/python bench/embed_ray.py --sweep          # also other actor x thread / rows-per-task layouts

A deterministic 5,000-item text catalog (titles of 2-8 words; descriptions from
empty to ~120 words, so lengths are mixed) is embedded with MiniLM by
``embeddings.embed_catalog.embed_catalog`` (in process, torch with all cores) and by
``embeddings.batch.embed_catalog_ray`` (Ray Data job on a local Ray started once
before the timings, as on an existing cluster; the ``ray.init`` time is reported
apart). Runs alternate in-process / Ray in each round, so a burst of load from
other processes hits both; the ratio is the median over rounds of
``ray items/s / in-process items/s`` in the same round. Every run starts cold:
the in-process run clears the encoder cache (so it loads the model, like a Ray
actor), every Ray run starts new actors. A Ray job on 16 items measures the
fixed cost of a job (actor start and model load).

Writes ``bench/results/embed_ray.md`` and ``.json`` (``embed_ray_sweep.*`` with
``--sweep``) and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

RESULTS = Path(__file__).resolve().parent / "results"
SYLLABLES = ["ka", "lo", "mi", "ner", "tas", "vo", "ri", "pen", "du", "sa", "bel", "cor", "fi", "gan", "hu",
             "jor", "ke", "lum", "mo", "nu", "pra", "qui", "ros", "sel", "tri", "ul", "ven", "wes", "xa", "zo"]


def make_catalog(n: int, seed: int = 0, max_desc_words: int = 120) -> pl.DataFrame:
    """``n`` items with deterministic pseudo-word titles and mixed-length descriptions."""
    rng = np.random.default_rng(seed)
    vocab = sorted({"".join(rng.choice(SYLLABLES, size=rng.integers(1, 4))) for _ in range(4000)})
    words = np.array(vocab)
    titles, descs = [], []
    for _ in range(n):
        titles.append(" ".join(rng.choice(words, size=int(rng.integers(2, 9)))).capitalize())
        kind = rng.random()
        if kind < 0.2:
            k = 0
        elif kind < 0.6:
            k = int(rng.integers(5, 25))
        elif kind < 0.9:
            k = int(rng.integers(25, 60))
        else:
            k = int(rng.integers(60, max_desc_words + 1))
        descs.append(" ".join(rng.choice(words, size=k)) + "." if k else None)
    return pl.DataFrame({"item_id": [f"item{i:06d}" for i in range(n)], "title": titles, "description": descs})


class CpuMeter:
    """CPU seconds used by this process and all its descendants (Ray's processes, actors) during a run.

    Samples every 0.3 s and keeps each process's last reading (a process that
    exits loses at most its last 0.3 s), grouped as driver / actors / Ray system.
    """

    def __init__(self) -> None:
        import threading

        import psutil

        self._psutil = psutil
        self._me = psutil.Process()
        self._last: dict[int, tuple[str, float]] = {}
        self._start: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def _sample(self) -> None:
        procs = [self._me]
        with __import__("contextlib").suppress(self._psutil.Error):
            procs += self._me.children(recursive=True)
        for p in procs:
            try:
                t = p.cpu_times()
                name = p.name() if p.pid != self._me.pid else "driver"
                cmd = " ".join(p.cmdline()[:1]) if p.pid != self._me.pid else ""
            except self._psutil.Error:
                continue
            group = "driver" if name == "driver" else "actors" if "MapBatches" in name + cmd else "ray"
            self._last[p.pid] = (group, t.user + t.system)

    def _loop(self) -> None:
        while not self._stop.wait(0.3):
            self._sample()

    def __enter__(self) -> CpuMeter:
        self._sample()
        self._start = {pid: cpu for pid, (_, cpu) in self._last.items()}
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        self._thread.join()
        self._sample()
        self.by_group: dict[str, float] = {}
        for pid, (group, cpu) in self._last.items():
            self.by_group[group] = self.by_group.get(group, 0.0) + cpu - self._start.get(pid, 0.0)


def run_in_process(catalog: pl.DataFrame, out: Path, batch_size: int) -> tuple[float, dict[str, float]]:
    from tlrec.embeddings.registry import clear_cache
    from tlrec.embeddings.embed_catalog import embed_catalog

    clear_cache()
    for p in (out, out.with_suffix(".manifest.json")):
        p.unlink(missing_ok=True)
    with CpuMeter() as cpu:
        t0 = time.perf_counter()
        embed_catalog(catalog, out, image=None, audio=None, progress=False, batch_size=batch_size, reuse=False)
        wall = time.perf_counter() - t0
    return wall, cpu.by_group


def run_ray(catalog: pl.DataFrame, out: Path, batch_size: int,
            layout: dict[str, Any]) -> tuple[float, dict[str, float]]:
    from tlrec.embeddings.batch import embed_catalog_ray

    with CpuMeter() as cpu:
        t0 = time.perf_counter()
        embed_catalog_ray(catalog, out, image=None, audio=None, progress=False, batch_size=batch_size,
                          reuse=False, **layout)
        wall = time.perf_counter() - t0
    return wall, cpu.by_group


def layouts(sweep: bool) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {"default": {}}
    if sweep:
        out.update({
            "2 actors x 1 thread": {"threads_per_actor": 1},
            "2 x 1, 32 rows/task (as the first version)": {"threads_per_actor": 1, "rows_per_task": 32},
            "1 x 2, 256 rows/task": {"rows_per_task": 256},
            "2 x 2 threads (oversubscribed)": {"actors": 2, "threads_per_actor": 2},
        })
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=5000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--sweep", action="store_true", help="also time other actor/thread/rows-per-task layouts")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    import ray
    import torch

    from tlrec.embeddings.batch import _layout

    catalog = make_catalog(args.items)
    chars = catalog.select((pl.col("title").str.len_chars() + pl.col("description").fill_null("").str.len_chars())
                           .alias("n"))["n"]
    cpus = os.cpu_count() or 1
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    ray.init(num_cpus=cpus, include_dashboard=False, logging_level=logging.WARNING, log_to_driver=False)
    init_s = time.perf_counter() - t0
    configs = layouts(args.sweep)
    work = Path(tempfile.mkdtemp(prefix="embed_ray_"))
    times: dict[str, list[float]] = {"in-process": [], **{name: [] for name in configs}}
    cpus_used: dict[str, list[dict[str, float]]] = {name: [] for name in times}
    try:
        overhead, _ = run_ray(make_catalog(16, seed=1), work / "tiny.parquet", args.batch_size, {})
        for r in range(args.rounds):
            wall, cpu = run_in_process(catalog, work / "local.parquet", args.batch_size)
            times["in-process"].append(wall)
            cpus_used["in-process"].append(cpu)
            print(f"round {r + 1}: in-process {args.items / wall:.1f} items/s", flush=True)
            for name, layout in configs.items():
                wall, cpu = run_ray(catalog, work / f"ray_{len(times[name])}.parquet", args.batch_size, layout)
                times[name].append(wall)
                cpus_used[name].append(cpu)
                print(f"round {r + 1}: ray {name} {args.items / wall:.1f} items/s", flush=True)
        from tlrec.embeddings.vectors import load_item_vectors

        ref = load_item_vectors(work / "local.parquet")
        got = load_item_vectors(work / "ray_0.parquet")
        max_diff = float(np.abs(ref.fused - got.fused).max()) if ref.item_ids == got.item_ids else float("nan")
    finally:
        ray.shutdown()
        for p in work.iterdir():
            p.unlink()
        work.rmdir()
    load_after = os.getloadavg()

    rows = []
    base = times["in-process"]
    for name, ts in times.items():
        layout = {} if name == "in-process" else configs[name]
        if name == "in-process":
            shape = f"1 process x {torch.get_num_threads()} torch threads"
        else:
            a, th, res, rpt = _layout(cpus, args.items, layout.get("actors"), layout.get("threads_per_actor"),
                                      layout.get("rows_per_task"))
            shape = f"{a} actor(s) x {th} thread(s), {rpt} rows/task, {res:g} CPU reserved each"
        ratios = [b / t for b, t in zip(base, ts)]  # items/s ratio in the same round
        rows.append({
            "run": name, "layout": shape,
            "seconds": [round(t, 2) for t in ts],
            "items_per_s": round(args.items / statistics.median(ts), 1),
            "ratio_vs_in_process": round(statistics.median(ratios), 3),
            "cpu_s": {g: round(statistics.median(c.get(g, 0.0) for c in cpus_used[name]), 1)
                      for g in ("driver", "actors", "ray")},
        })

    meta = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {cpus} cores, Python {platform.python_version()}, "
                   f"torch {torch.__version__}, ray {ray.__version__}",
        "items": args.items, "rounds": args.rounds, "encoder": "minilm", "batch_size": args.batch_size,
        "text_chars": {"min": int(chars.min()), "median": int(chars.median()), "max": int(chars.max())},
        "ray_init_s": round(init_s, 2), "ray_job_fixed_cost_s (16 items)": round(overhead, 2),
        "load_avg_before_after": [round(load_before[0], 2), round(load_after[0], 2)],
        "max_abs_diff_fused_ray_vs_in_process": max_diff,
    }
    report(rows, meta, args.out, "embed_ray_sweep" if args.sweep else "embed_ray")
    return 0


def _cpu(row: dict[str, Any]) -> str:
    c = row["cpu_s"]
    return f"{c['driver']:.1f} / {c['actors']:.1f} / {c['ray']:.1f}"


def report(rows: list[dict[str, Any]], meta: dict[str, Any], out: Path, name: str) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"Ray embedding job vs in-process ({meta['items']} items, minilm)")
    for col in ("run", "layout", "seconds per round", "items/s (median)", "ray / in-process",
                "CPU s: driver / actors / ray"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["run"], r["layout"], ", ".join(f"{s:.1f}" for s in r["seconds"]), f"{r['items_per_s']:.1f}",
                      f"{r['ratio_vs_in_process']:.3f}", _cpu(r))
    Console().print(table)
    for k, v in meta.items():
        print(f"{k}: {v}")

    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Ray embedding job vs in-process loop ({meta['items']} text items, minilm)", "",
             f"Command: `{meta['command']}`  ",
             f"Run {meta['date']} on {meta['machine']}.", "",
             "| run | layout | seconds per round | items/s (median) | ray / in-process (median of rounds) "
             "| CPU s: driver / actors / ray |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['run']} | {r['layout']} | {', '.join(f'{s:.1f}' for s in r['seconds'])} | "
              f"{r['items_per_s']:.1f} | {r['ratio_vs_in_process']:.3f} | {_cpu(r)} |" for r in rows]
    lines += [""] + [f"- {k}: {v}" for k, v in meta.items() if k not in ("command", "date", "machine")] + [""]
    (out / f"{name}.md").write_text("\n".join(lines), encoding="utf-8")
    (out / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n",
                                        encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
