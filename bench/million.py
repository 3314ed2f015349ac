"""A million items: the approximate index, NCF's sampled-softmax fit, batch scoring and the API at that scale.

    .venv/bin/python bench/million.py [--items 1000000] [--users 1000000] [--stages index,train,train-10k,score,api]

Four stages, each in a child process whose whole process tree is sampled for memory (RSS every
0.2 s, ``embed_memory.MemorySampler``); each writes its part of ``million.json`` and the table is
rebuilt from all of them, so a stage can be run again alone (``--stages score``).

1. **index** -- synthetic vectors (dim 257 like the served NCF's; a fixed random projection of
   100 wide latent clusters, items and queries drawn around them): ``VectorIndex.build`` (above
   ``EXACT_MAX_ITEMS``: an inverted file with its rule-set ``nlist`` and calibrated ``nprobe``)
   against an exact ``IndexFlatIP``: build seconds, memory, recall@10 of 1,000 fresh queries
   against exact search, queries/s of each (same queries, batches of 16, FAISS on 1 thread).
2. **train** (and **train-10k**: the same users over 10,000 items, for the API's yardstick) --
   1,000,000 users x 10 events over the 1,000,000 items (users like 1-2 clusters of
   items, Zipf popularity within a cluster): ``train_into`` with NCF (ids only, sampled softmax,
   ``--epochs`` epochs, no validation split), the artifact published with its index: fit seconds
   and peak memory (issue 17: <= 8 GB).
3. **score** -- ``tlrec score --no-ray`` over all the users, top-10: seconds, users/s, peak memory.
4. **api** -- ``tlrec serve`` of that artifact and of a 10,000-item one made the same way (same
   users), wrk at 16 connections on ``/v1/users/{id}/recommendations?k=10`` (500 users
   rotating): p99 at a million items against 10,000 (issue 17: <= 2x).

Hours of machine time on 2 cores: run it in the background. Writes ``bench/results/million.md``
and ``.json``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from embed_memory import MemorySampler  # noqa: E402

RESULTS = ROOT / "bench" / "results"
GB = 1e9
DIM = 257
CLUSTERS = 100
LATENT = 32
EVENTS_PER_USER = 10
logger = logging.getLogger("bench.million")


# --------------------------------------------------------------------------- synthetic data
def cluster_vectors(n: int, seed: int, centres_seed: int = 0) -> np.ndarray:
    """float32 ``[n, DIM]``: points around ``CLUSTERS`` latent centres (as wide as the centres are apart, so cells
    do not line up with clusters) through one fixed random projection, norms spread log-normally (popularity)."""
    base = np.random.default_rng(centres_seed)
    centres = base.normal(size=(CLUSTERS, LATENT)).astype(np.float32)
    projection = base.normal(size=(LATENT, DIM)).astype(np.float32) / np.sqrt(LATENT)
    rng = np.random.default_rng(seed)
    out = np.empty((n, DIM), np.float32)
    for lo in range(0, n, 100_000):
        hi = min(n, lo + 100_000)
        latent = centres[rng.integers(0, CLUSTERS, hi - lo)] + rng.normal(size=(hi - lo, LATENT))
        x = latent.astype(np.float32) @ projection + 0.1 * rng.normal(size=(hi - lo, DIM))
        out[lo:hi] = x * rng.lognormal(0.0, 0.3, (hi - lo, 1))
    return out


def interactions(n_users: int, n_items: int, seed: int = 0):
    """Catalog and interactions (polars): each user takes ``EVENTS_PER_USER`` items of 1-2 liked clusters."""
    import polars as pl

    rng = np.random.default_rng(seed)
    cluster = rng.integers(0, CLUSTERS, n_items)
    order = np.argsort(cluster, kind="stable")
    starts = np.searchsorted(cluster[order], np.arange(CLUSTERS + 1))
    user = np.repeat(np.arange(n_users), EVENTS_PER_USER)
    liked = rng.integers(0, CLUSTERS, (n_users, 2))[user, rng.integers(0, 2, len(user))]
    size = starts[liked + 1] - starts[liked]
    rank = np.minimum(rng.zipf(1.5, len(user)) - 1, np.maximum(size - 1, 0))  # Zipf popularity within a cluster
    item = order[starts[liked] + rank]
    width = len(str(max(n_items, n_users)))
    items = pl.Series("item_id", np.arange(n_items)).cast(pl.String).str.zfill(width)
    frame = pl.DataFrame({
        "user_id": "u" + pl.Series(user).cast(pl.String).str.zfill(width),
        "item_id": "i" + items.gather(item),
        "timestamp": 1_700_000_000 + rng.integers(0, 90 * 86_400, len(user)),
        "event": "view",
    }).unique(["user_id", "item_id"], keep="first")
    catalog = pl.DataFrame({"item_id": "i" + items, "title": "item " + items})
    return catalog, frame


# --------------------------------------------------------------------------- stages (child processes)
def stage_index(work: Path, n_items: int) -> dict[str, Any]:
    import faiss

    from tlrec.training.index import VectorIndex

    faiss.omp_set_num_threads(1)
    items = cluster_vectors(n_items, seed=1)
    queries = cluster_vectors(1256, seed=2)
    calibration, test = queries[:256], queries[256:]
    out: dict[str, Any] = {"items": n_items, "dim": DIM}
    for name, build in (("exact", lambda: VectorIndex.build(items, exact_max_items=n_items)),
                        ("approximate", lambda: VectorIndex.build(items, queries=calibration))):
        rss0 = _rss()
        t = time.perf_counter()
        index = build()
        out[f"{name}_build_s"] = time.perf_counter() - t
        out[f"{name}_index_gb"] = (_rss() - rss0) / GB
        t = time.perf_counter()
        found = np.concatenate([index.search(test[lo : lo + 16], 10)[1] for lo in range(0, len(test), 16)])
        out[f"{name}_qps"] = len(test) / (time.perf_counter() - t)
        out[f"{name}_ids"] = found
        if name == "approximate":
            inner = index.index
            out["index_type"] = type(inner).__name__
            out["nlist"], out["nprobe"] = int(getattr(inner, "nlist", 0)), int(getattr(inner, "nprobe", 0))
        del index
    exact, approx = out.pop("exact_ids"), out.pop("approximate_ids")
    out["recall_at_10"] = float(np.mean([len(set(a) & set(e)) / 10 for a, e in zip(approx.tolist(),
                                                                                     exact.tolist())]))
    out["qps_ratio"] = out["approximate_qps"] / out["exact_qps"]
    return out


def stage_train(work: Path, n_items: int, n_users: int, epochs: int, dim: int, tag: str) -> dict[str, Any]:
    from tlrec.training.artifacts import new_version, staged_version
    from tlrec.training.train import train_into

    t = time.perf_counter()
    catalog, frame = interactions(n_users, n_items)
    data_s = time.perf_counter() - t
    (work / f"users_{tag}.txt").write_text("\n".join(frame["user_id"].unique().sort().to_list()) + "\n")
    manifest: dict[str, Any] = {"bench": "bench/million.py synthetic data"}
    version = new_version()
    t = time.perf_counter()
    with staged_version(work / f"artifacts_{tag}", version=version, manifest=manifest) as stage:
        _, info = train_into(stage, catalog, frame, None, "ncf",
                             {"dim": dim, "epochs": epochs, "val_fraction": 0.0, "progress": True})
        manifest.update(info)
    return {"items": n_items, "users": n_users, "interactions": frame.height, "data_s": data_s,
            "train_and_publish_s": time.perf_counter() - t, "fit_s": info["fit_seconds"],
            "index": info.get("index"), "dim": dim, "epochs": epochs}


def stage_score(work: Path, tag: str) -> dict[str, Any]:
    from tlrec.services.batch_scoring import score_job

    t = time.perf_counter()
    result = score_job(work / f"artifacts_{tag}", work / f"users_{tag}.txt", 10, work / f"scores_{tag}.parquet",
                       exclude_seen=True, progress=True, ray_address=None)
    seconds = time.perf_counter() - t
    (work / f"scores_{tag}.parquet").unlink()
    return {"users": result.users, "rows": result.rows, "seconds": seconds, "users_per_s": result.users / seconds}


STAGES = {"index": stage_index, "train": stage_train, "score": stage_score}


def _rss() -> float:
    import psutil

    return psutil.Process().memory_info().rss


def run_stage(name: str, work: Path, args: list[str]) -> dict[str, Any]:
    """``name`` in a child process (this file, ``--child``), memory sampled over its process tree."""
    tag = args[args.index("--tag") + 1] if "--tag" in args else ""
    log = work / f"{name}{'_' + tag if tag else ''}.log"
    t = time.perf_counter()
    with open(log, "w") as fh:
        proc = subprocess.Popen([sys.executable, __file__, "--child", name, "--work", str(work), *args],
                                stdout=subprocess.PIPE, stderr=fh, text=True,
                                env={**os.environ, "HF_HUB_OFFLINE": "1"})
        with MemorySampler(proc.pid) as sampler:
            stdout, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"stage {name} failed (exit {proc.returncode}); see {log}:\n{log.read_text()[-3000:]}")
    result = json.loads(next(line for line in stdout.splitlines() if line.startswith("RESULT "))[7:])
    return {**result, "wall_s": time.perf_counter() - t, "peak_rss_gb": sampler.peak_rss / GB}


# --------------------------------------------------------------------------- the API stage (parent process)
def stage_api(work: Path, tags: list[str], seconds: int) -> dict[str, Any]:
    from api_load import serving
    from api_wrk import LUA, run_wrk

    script = work / "rotate.lua"
    script.write_text(LUA)
    out: dict[str, Any] = {}
    for tag in tags:
        users = (work / f"users_{tag}.txt").read_text().split()[:500]
        paths = work / f"paths_{tag}.txt"
        paths.write_text("\n".join(f"/v1/users/{u}/recommendations?k=10" for u in users) + "\n")
        with serving(work / f"artifacts_{tag}", work / f"events_{tag}", ready_timeout=900) as base:
            run_wrk(base, paths, script, 16, 3)  # warm-up
            runs = [run_wrk(base, paths, script, 16, seconds) for _ in range(3)]
        out[tag] = {"rps": sum(r["requests"] for r in runs) / sum(r["seconds"] for r in runs),
                    "p50_ms": max(r["p50_ms"] for r in runs), "p99_ms": max(r["p99_ms"] for r in runs),
                    "errors": sum(r["errors"] for r in runs)}
        logger.info("api %s: %s", tag, out[tag])
    return out


# --------------------------------------------------------------------------- report
def to_markdown(r: dict[str, Any]) -> str:
    lines = ["# A million items (issue 17)", "",
             "Command: `python bench/million.py` (a stage alone: `--stages NAME`; the last run: "
             f"`{r.get('command', '')}`)  ", f"{r.get('date', '')}; {r.get('machine', '')}.", ""]
    if (ix := r.get("index")) is not None:
        lines += [f"## Index: {ix['items']:,} items x {ix['dim']} dims (synthetic clusters)", "",
                  "| index | build s | memory GB | queries/s (1 thread, batches of 16) | recall@10 vs exact |",
                  "| --- | ---: | ---: | ---: | ---: |",
                  f"| exact (IndexFlatIP) | {ix['exact_build_s']:.1f} | {ix['exact_index_gb']:.2f} | "
                  f"{ix['exact_qps']:.0f} | 1.000 |",
                  f"| {ix['index_type']} (nlist {ix['nlist']}, nprobe {ix['nprobe']}, by the rule) | "
                  f"{ix['approximate_build_s']:.1f} | {ix['approximate_index_gb']:.2f} | {ix['approximate_qps']:.0f} | "
                  f"{ix['recall_at_10']:.3f} |", "",
                  f"Target: recall@10 >= 0.95 at >= 5x the exact search's queries/s: recall **{ix['recall_at_10']:.3f}**, "
                  f"**{ix['qps_ratio']:.1f}x** ({'met' if ix['recall_at_10'] >= 0.95 and ix['qps_ratio'] >= 5 else 'missed'}). "
                  f"Peak RSS of the stage {ix['peak_rss_gb']:.2f} GB.", ""]
    for tag in ("1m", "10k"):
        if (tr := r.get(f"train_{tag}")) is not None:
            lines += [f"## NCF fit, {tr['items']:,} items, {tr['users']:,} users ({tr['interactions']:,} interactions)",
                      "", f"{'Sampled' if tr['items'] > 50_000 else 'Full'} softmax (ids only, dim {tr['dim']}, "
                      f"{tr['epochs']} epoch(s), no validation split): "
                      f"fit **{tr['fit_s']:.0f} s**, train + index + publish {tr['train_and_publish_s']:.0f} s, "
                      f"peak RSS **{tr['peak_rss_gb']:.2f} GB** (target <= 8 GB: "
                      f"{'met' if tr['peak_rss_gb'] <= 8 else 'missed'}); index {tr['index']}.", ""]
    if (sc := r.get("score_1m")) is not None:
        lines += ["## Batch scoring, every user, top-10 (`tlrec score --no-ray`)", "",
                  f"{sc['users']:,} users, {sc['rows']:,} rows in {sc['seconds']:.0f} s ({sc['users_per_s']:.0f} users/s), "
                  f"peak RSS **{sc['peak_rss_gb']:.2f} GB**.", ""]
    if (api := r.get("api")) is not None and {"1m", "10k"} <= set(api):
        ratio = api["1m"]["p99_ms"] / api["10k"]["p99_ms"]
        lines += ["## API at 16 connections (wrk, `/v1/users/{id}/recommendations?k=10`)", "",
                  "| catalog | req/s | p50 ms | p99 ms | errors |", "| --- | ---: | ---: | ---: | ---: |"]
        lines += [f"| {tag} items | {a['rps']:.0f} | {a['p50_ms']:.2f} | {a['p99_ms']:.2f} | {a['errors']} |"
                  for tag, a in api.items()]
        lines += ["", f"p99 at a million items / at 10,000: **{ratio:.2f}x** (target <= 2x: "
                      f"{'met' if ratio <= 2 else 'missed'}).", ""]
    return "\n".join(lines)


def run_context() -> dict[str, str]:
    """The command, date and machine a stage ran on."""
    import torch

    return {
        "command": "python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]]),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}, "
                   f"load avg {os.getloadavg()[0]:.2f}",
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--users", type=int, default=1_000_000)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--dim", type=int, default=256, help="NCF's dim (the default config's).")
    parser.add_argument("--stages", default="index,train,train-10k,score,api")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tlrec-million"))
    parser.add_argument("--seconds", type=int, default=10, help="Seconds per wrk round (api).")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--report-only", action="store_true", help="Rebuild million.md from million.json.")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--tag", default="1m", help=argparse.SUPPRESS)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    args.work.mkdir(parents=True, exist_ok=True)
    if args.child:
        result = (stage_index(args.work, args.items) if args.child == "index" else
                  stage_train(args.work, args.items, args.users, args.epochs, args.dim, args.tag)
                  if args.child == "train" else stage_score(args.work, args.tag))
        print("RESULT " + json.dumps(result, default=float), flush=True)
        return 0

    path = args.out / "million.json"
    report: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    stages = [] if args.report_only else args.stages.split(",")
    if unknown := [s for s in stages if s not in ("index", "train", "train-10k", "score", "api")]:
        raise SystemExit(f"unknown stage(s) {unknown}: choose from index, train, train-10k, score, api")
    common = ["--items", str(args.items), "--users", str(args.users), "--epochs", str(args.epochs),
              "--dim", str(args.dim)]
    small = ["--items", "10000", "--users", str(args.users), "--epochs", str(args.epochs), "--dim", str(args.dim)]
    args.out.mkdir(parents=True, exist_ok=True)
    for stage in stages:
        logger.info("stage %s ...", stage)
        if stage == "index":
            report["index"] = run_stage("index", args.work, common)
        elif stage == "train":
            report["train_1m"] = run_stage("train", args.work, [*common, "--tag", "1m"])
        elif stage == "train-10k":
            report["train_10k"] = run_stage("train", args.work, [*small, "--tag", "10k"])
        elif stage == "score":
            report["score_1m"] = run_stage("score", args.work, ["--tag", "1m"])
        else:
            report["api"] = stage_api(args.work, ["10k", "1m"], args.seconds)
        report.update(run_context())
        path.write_text(json.dumps(report, indent=2, default=float) + "\n")  # each stage saved as it ends
    (args.out / "million.md").write_text(to_markdown(report))
    print(to_markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
