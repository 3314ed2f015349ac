"""Batch scoring: `tlrec score` (Ray job and in process) against a bare numpy loop, 100,000 users, top-100.

    .venv/bin/python bench/score_ray.py                       # 100,000 users, 10,000 items, k=100
    .venv/bin/python bench/score_ray.py --users 5000 --items 2000 --k 20     # a quick check

Data: a synthetic 10,000-item catalog (ids only: the model is trained without
content vectors, so no encoder runs) in 20 clusters, and 100,000 users who each
like one or two clusters (5-25 events each, ~1.5 M interactions). Model: NCF
(dim 32, one epoch by default, no validation split: quality is not the point; the ranking
head off, so its ranking is the inner product the index searches), published as an artifact
with its FAISS index, the same path the API serves (``ServedModel``: FAISS retrieve ->
NCF rank -> drop seen items).

Three runs over the same 100,000 users (top-100, seen items excluded), each in
its own child process whose whole process tree (driver + Ray's processes +
actors) is sampled for memory every 0.2 s (RSS sum; PSS every 1 s) with
``embed_memory.MemorySampler``:

1. bare loop (issue 17's baseline): the artifact's user vectors x its index's item vectors
   in blocks of 1,024 users (one BLAS product), seen items set to -inf, argpartition top-k,
   sort, one Parquet write; no id checks, no fallback, no partitions;
2. ``tlrec score --no-ray``: the partitioned job in process (parts of 5,000 users);
3. ``tlrec score`` on a local Ray started by the job: one actor per core, each
   loads the artifact once (1 torch/FAISS thread each).

Throughput is users per second of the whole child (artifact loading, and for
Ray its start, included); the Ray row also gives the figure without Ray's start.
The outputs are compared row by row with the bare loop's (``outputs_agree``): exact
ties aside, the rows are the same. Writes ``bench/results/score_ray.md`` and ``.json``
and prints a table.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import psutil

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_memory import MemorySampler  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
GB = 1e9
CLUSTERS = 20

CHILD = """
import json, logging, sys, time
logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
mode, artifacts, users, out, k = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
t0 = time.perf_counter()
init = 0.0
if mode == "bare":
    import faiss, numpy as np, polars as pl
    from pathlib import Path
    from tlrec.serving.served_model import ServedModel
    from tlrec.services.files import read_id_list
    from tlrec.tables import Columns
    served = ServedModel.load(Path(artifacts))
    ids = list(dict.fromkeys(read_id_list(Path(users), "user", Columns.USER)))
    rows = served.users.to_internal(ids)  # every bench user is known
    queries = served.model.query_vectors(rows)  # [n, d]
    inner = served.index.index
    vectors = faiss.rev_swig_ptr(inner.get_xb(), inner.ntotal * inner.d).reshape(inner.ntotal, inner.d)
    external = pl.Series(served.items.external.tolist(), dtype=pl.String)
    top, top_scores = [], []
    for lo in range(0, len(ids), 1024):
        scores = queries[lo : lo + 1024] @ vectors.T  # [b, n_items]
        seen = served.seen[rows[lo : lo + 1024]].tocoo()
        scores[seen.row, seen.col] = -np.inf
        part = np.argpartition(-scores, k, axis=1)[:, :k]
        part_scores = np.take_along_axis(scores, part, 1)
        order = np.argsort(-part_scores, axis=1, kind="stable")
        top.append(np.take_along_axis(part, order, 1))
        top_scores.append(np.take_along_axis(part_scores, order, 1))
    top, top_scores = np.concatenate(top), np.concatenate(top_scores)
    pl.DataFrame({Columns.USER: pl.Series(ids, dtype=pl.String).gather(np.repeat(np.arange(len(ids)), k)),
                  Columns.ITEM: external.gather(top.ravel()), Columns.SCORE: top_scores.ravel().astype(np.float64),
                  Columns.RANK: np.tile(np.arange(1, k + 1, dtype=np.int32), len(ids))}).write_parquet(out)
else:
    from tlrec.ray_cluster import start_ray
    from tlrec.services.batch_scoring import score_job
    if mode == "ray":
        start_ray("local")
        init = time.perf_counter() - t0
    score_job(artifacts, users, k, out, exclude_seen=True, progress=False,
              ray_address="local" if mode == "ray" else None)
    if mode == "ray":
        import ray
        ray.shutdown()
print("RESULT " + json.dumps({"seconds": time.perf_counter() - t0, "ray_init_s": init}), flush=True)
"""


class ScoringMemorySampler(MemorySampler):
    """``MemorySampler`` with the scoring actors in their own group."""

    @staticmethod
    def _group(proc: psutil.Process, root_pid: int) -> str:
        if proc.pid == root_pid:
            return "driver"
        try:
            name = proc.name() + " " + " ".join(proc.cmdline()[:1])
        except psutil.Error:
            return "ray system"
        return "scoring actors" if "PartitionScorer" in name else "ray system"


def make_world(n_users: int, n_items: int, seed: int = 0) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Catalog (``item_id``, ``title``) and interactions: users like 1-2 of 20 item clusters."""
    rng = np.random.default_rng(seed)
    items = np.array([f"i{j:05d}" for j in range(n_items)])
    cluster = rng.integers(0, CLUSTERS, n_items)
    members = [np.flatnonzero(cluster == c) for c in range(CLUSTERS)]
    popularity = rng.zipf(1.6, n_items).clip(max=1000).astype(float)
    counts = rng.integers(5, 26, n_users)
    user_of = np.repeat(np.arange(n_users), counts)
    fav = rng.integers(0, CLUSTERS, (n_users, 2))
    pick_fav = rng.random(len(user_of)) < 0.8
    which = fav[user_of, rng.integers(0, 2, len(user_of))]
    chosen = np.empty(len(user_of), dtype=np.int64)
    for c in range(CLUSTERS):
        rows = np.flatnonzero(pick_fav & (which == c))
        p = popularity[members[c]] / popularity[members[c]].sum()
        chosen[rows] = rng.choice(members[c], len(rows), p=p)
    rest = np.flatnonzero(~pick_fav)
    chosen[rest] = rng.choice(n_items, len(rest), p=popularity / popularity.sum())
    ts = 1_700_000_000 + rng.integers(0, 90 * 86_400, len(user_of))
    interactions = pl.DataFrame({
        "user_id": np.char.add("u", np.char.zfill(user_of.astype(str), 6)), "item_id": items[chosen],
        "timestamp": ts, "event": "view", "value": 1.0,
    }).unique(["user_id", "item_id"], keep="first").sort("user_id", "timestamp")
    catalog = pl.DataFrame({"item_id": items, "title": [f"item {j}" for j in range(n_items)]})
    return catalog, interactions


def train_artifact(root: Path, catalog: pl.DataFrame, interactions: pl.DataFrame, epochs: int) -> tuple[Path, float]:
    from tlrec.training.artifacts import new_version, staged_version
    from tlrec.training.train import train_into

    version = new_version()
    manifest: dict[str, Any] = {"inputs": "bench/score_ray.py synthetic data"}
    t0 = time.perf_counter()
    with staged_version(root, version=version, manifest=manifest) as stage:
        _, info = train_into(stage, catalog, interactions, None, "ncf",  # the complete version, index included
                             {"dim": 32, "epochs": epochs, "val_fraction": 0.0, "head_negatives": 0, "progress": False})
        manifest.update(info)
    return root / version, time.perf_counter() - t0


def run_child(mode: str, artifacts: Path, users: Path, out: Path, k: int, log: Path) -> dict[str, Any]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, "-c", CHILD, mode, str(artifacts), str(users), str(out), str(k)],
                                stdout=subprocess.PIPE, stderr=fh, text=True, env=env)
        with ScoringMemorySampler(proc.pid) as sampler:
            stdout, _ = proc.communicate()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise RuntimeError(f"{mode} child failed (exit {proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    result = json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[7:])
    return {"seconds": result["seconds"], "wall_s": wall, "ray_init_s": result["ray_init_s"],
            "peak_rss": sampler.peak_rss, "peak_rss_parts": sampler.peak_rss_parts, "peak_pss": sampler.peak_pss,
            "processes": sampler.peak_procs, "rows": pl.scan_parquet(out).select(pl.len()).collect().item()}


def compare_lists(a: Path, b: Path) -> dict[str, float]:
    """Share of (user, item, rank) rows and of (user, item) pairs two outputs have in common; max score diff."""
    x, y = pl.read_parquet(a), pl.read_parquet(b)
    ranked = x.select("user_id", "item_id", "rank").join(y.select("user_id", "item_id", "rank"),
                                                       on=["user_id", "item_id", "rank"]).height
    pairs = x.select("user_id", "item_id", "score").join(y.select("user_id", "item_id", "score"),
                                                         on=["user_id", "item_id"])
    return {"same_rows": round(ranked / x.height, 6), "same_items": round(pairs.height / x.height, 6),
            "max_score_diff": float((pairs["score"] - pairs["score_right"]).abs().max())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=10_000)
    parser.add_argument("--k", type=int, default=100)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")

    work = Path(tempfile.mkdtemp(prefix="score_ray_"))
    runs: dict[str, dict[str, Any]] = {}
    try:
        catalog, interactions = make_world(args.users, args.items)
        print(f"{catalog.height} items, {interactions['user_id'].n_unique()} users, "
              f"{interactions.height} interactions; training NCF ...", flush=True)
        artifact, train_s = train_artifact(work / "artifacts", catalog, interactions, args.epochs)
        users = work / "users.txt"
        users.write_text("\n".join(interactions["user_id"].unique().sort().to_list()) + "\n")
        del interactions
        load_before = os.getloadavg()[0]
        for name, mode in (("bare numpy loop (user x item vectors, top-k)", "bare"),
                           ("tlrec score --no-ray (partitioned, in process)", "no-ray"),
                           ("tlrec score (Ray job, local Ray)", "ray")):
            print(f"{name} ...", flush=True)
            runs[name] = run_child(mode, artifact, users, work / f"{mode}.parquet", args.k, work / f"{mode}.log")
            runs[name]["mode"] = mode
            print(f"  {args.users / runs[name]['seconds']:.0f} users/s, peak RSS "
                  f"{runs[name]['peak_rss'] / GB:.2f} GB", flush=True)
        checks = {f"{m} vs bare": compare_lists(work / "bare.parquet", work / f"{m}.parquet")
                  for m in ("no-ray", "ray")}
        load_after = os.getloadavg()[0]
    finally:
        shutil.rmtree(work, ignore_errors=True)

    import ray
    import torch

    meta = {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {psutil.virtual_memory().total / GB:.0f} GB RAM, "
                   f"Python {platform.python_version()}, torch {torch.__version__}, ray {ray.__version__}",
        "users": args.users, "items": args.items, "k": args.k, "exclude_seen": True,
        "model": f"NCF dim 32, {args.epochs} epochs, no content vectors, ranking head off; FAISS IndexFlatIP",
        "train_s": round(train_s, 1),
        "outputs_agree": checks,
        "load_avg_1min_before_after": [round(load_before, 2), round(load_after, 2)],
        "sampling": "RSS of the child and all its descendants every 0.2 s (PSS every 1 s)",
    }
    report(runs, meta, args.out)
    return 0


def report(runs: dict[str, dict[str, Any]], meta: dict[str, Any], out: Path) -> None:
    from rich.console import Console
    from rich.table import Table

    base = next(r for r in runs.values() if r["mode"] == "bare")
    n = meta["users"]

    def parts(r: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v / GB:.2f}" for k, v in sorted(r["peak_rss_parts"].items()))

    def row(name: str, r: dict[str, Any]) -> list[str]:
        ups = n / r["seconds"]
        no_init = f"{n / (r['seconds'] - r['ray_init_s']):.0f}" if r["ray_init_s"] else "-"
        return [name, f"{r['seconds']:.1f}", f"{ups:.0f}", no_init, f"{ups / (n / base['seconds']):.2f}",
                f"{r['peak_rss'] / GB:.2f}", parts(r), f"{r['peak_pss'] / GB:.2f}", str(r["processes"]),
                str(r["rows"])]

    cols = ["run", "seconds", "users/s", "users/s w/o Ray start", "throughput vs bare loop", "peak RSS sum (GB)",
            "at the peak, by role (GB)", "peak PSS sum (GB)", "processes", "rows out"]
    table = Table(title=f"Batch scoring {n} users x top-{meta['k']} over {meta['items']} items")
    for col in cols:
        table.add_column(col)
    for name, r in runs.items():
        table.add_row(*row(name, r))
    Console(width=220).print(table)
    for k, v in meta.items():
        print(f"{k}: {v}")

    out.mkdir(parents=True, exist_ok=True)
    lines = [f"# Batch scoring: tlrec score vs a bare numpy loop ({n} users, top-{meta['k']}, {meta['items']} items)", "",
             f"Command: `{meta['command']}`  ", f"Run {meta['date']} on {meta['machine']}.", "",
             "Each run is a child process; memory is summed over its whole process tree. Seconds include loading "
             "the artifact (and, for Ray, starting it).", "",
             "| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(row(name, r)) + " |" for name, r in runs.items()]
    lines += [""] + [f"- {k}: {v}" for k, v in meta.items() if k not in ("command", "date", "machine")] + [""]
    (out / "score_ray.md").write_text("\n".join(lines), encoding="utf-8")
    data = {"meta": meta, "runs": {k: {**v, "peak_rss_gb": round(v["peak_rss"] / GB, 3),
                                       "peak_pss_gb": round(v["peak_pss"] / GB, 3),
                                       "users_per_s": round(n / v["seconds"], 1)} for k, v in runs.items()}}
    (out / "score_ray.json").write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
