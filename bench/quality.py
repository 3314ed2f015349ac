"""Offline quality of the baseline recommenders on MovieLens (latest-small layout).

    .venv/bin/python bench/quality.py --data ../shared/data/ml-latest-small --skip-slow
    .venv/bin/python bench/quality.py --data ... --models ease,lightfm --vectors vectors.parquet

Protocol A (warm items): each user's last 20% of ratings by time is the test set
(``training.splits.temporal_split(test_fraction=0.2)``); every rating is an
interaction; each model ranks every item with at least one training interaction,
items the user rated in training excluded. Test items that never occur in
training stay in the relevant sets (they cannot be hit; the same for every model).

Protocol B (cold items): ``training.splits.cold_item_split(fraction=0.2, seed=0)``
holds out 20% of the items with all their ratings; models rank among the cold items
only. Item content is the title and the genres only (``services.movielens``);
the hybrid LightFM uses the genres (multi-hot) as item features, and with
``--vectors`` also the pre-trained item vectors from ``tlrec embed``. Popularity
has no signal here (every cold item has count 0, so ties fall back to catalog
order): it is the chance-level reference. NCF runs twice: as served (the recency
half-life of its user vectors chosen on its validation split, each user's latest
events) and with recency off, a diagnostic row: B's test holds every rating of a
cold item at any time, the user's whole taste rather than what comes next.

Writes ``<out>/quality.md`` and ``<out>/quality.json`` and prints a table. LightFM
runs with ``num_threads=os.cpu_count()`` (Hogwild), so its figures move a little
from run to run.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from tlrec.tables import Columns
from tlrec.training.data import load_catalog, load_interactions
from tlrec.training.id_map import IdMap
from tlrec.training.interaction_data import InteractionData
from tlrec.training.metrics import evaluate_rankings
from tlrec.training.models import (
    EASEModel,
    ItemKNNModel,
    LightFMConfig,
    ContentProfileModel,
    LightFMModel,
    NCFConfig,
    NCFModel,
    PopularityModel,
    Recommender,
)
from tlrec.training.splits import cold_item_split, temporal_split

logger = logging.getLogger("bench.quality")

MODEL_NAMES = ("popularity", "itemknn", "ease", "lightfm", "content", "ncf")
A_METRICS = ("ndcg@10", "recall@20", "hit_rate@10", "map@10", "coverage@20")
B_METRICS = ("recall@20", "ndcg@20", "hit_rate@20")
BATCH = 256


def genre_matrix(catalog: pl.DataFrame, items: IdMap) -> tuple[np.ndarray, list[str]]:
    """Multi-hot genres float32 ``[n_items, n_genres]`` in ``items`` order (no genre -> zero row)."""
    genres = catalog.select(Columns.ITEM, pl.col("genres").fill_null("")).to_dict(as_series=False)
    per_item = {
        i: [g for g in s.split("|") if g and g != "(no genres listed)"]
        for i, s in zip(genres[Columns.ITEM], genres["genres"])
    }
    names = sorted({g for gs in per_item.values() for g in gs})
    col = {g: j for j, g in enumerate(names)}
    out = np.zeros((len(items), len(names)), np.float32)
    for i, gs in per_item.items():
        row = items.to_internal([i])[0]
        for g in gs:
            out[row, col[g]] = 1.0
    return out, names


def recommend_all(
    model: Recommender, data: InteractionData, users: list[str], k: int, candidates: np.ndarray, exclude: bool
) -> dict[str, list[str]]:
    """External user -> top-k external item ids; users unknown to ``data`` are left out."""
    idx = data.users.to_internal(users, missing="ignore")
    known = [(u, i) for u, i in zip(users, idx.tolist()) if i >= 0]
    seen = data.seen() if exclude else None
    out: dict[str, list[str]] = {}
    for s in range(0, len(known), BATCH):
        chunk = known[s : s + BATCH]
        items, _ = model.recommend(np.array([i for _, i in chunk]), k, exclude=seen, candidates=candidates)
        for (u, _), row in zip(chunk, items):
            out[u] = data.items.to_external(row[row >= 0])
    return out


def run_model(
    label: str, make: Callable[[], Recommender], data: InteractionData, vectors: np.ndarray | None,
    test: pl.DataFrame, candidates: np.ndarray, exclude: bool, ks: tuple[int, ...],
) -> dict[str, Any]:
    logger.info("%s: fitting", label)
    model = make()
    start = time.perf_counter()
    model.fit(data, vectors)
    fit_s = time.perf_counter() - start
    start = time.perf_counter()
    users = sorted(test[Columns.USER].unique().to_list())
    recs = recommend_all(model, data, users, max(ks), candidates, exclude)
    rec_s = time.perf_counter() - start
    metrics = evaluate_rankings(recs, test, ks=ks, n_items=len(candidates))
    row: dict[str, Any] = {"model": label, **metrics, "fit_seconds": round(fit_s, 2),
                           "recommend_seconds": round(rec_s, 2), "config": model.config.model_dump(mode="json")}
    if isinstance(model, NCFModel) and model.net is not None:
        row["recency_half_life"] = float(model.net.half_life) or None
    if isinstance(model, EASEModel):
        row["l2"] = model.l2_
        row["l2_validation_ndcg@10"] = {f"{k:g}": round(v, 5) for k, v in model.tuning_.items()}
    logger.info("%s: %s", label, ", ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k != "users"))
    return row


def lightfm(**overrides: Any) -> Callable[[], Recommender]:
    return lambda: LightFMModel(LightFMConfig(**overrides))


def ncf(**overrides: Any) -> Callable[[], Recommender]:
    return lambda: NCFModel(NCFConfig(progress=False, **overrides))


def load_vectors(path: Path | None, items: IdMap) -> np.ndarray | None:
    if path is None:
        return None
    from tlrec.embeddings.vectors import load_item_vectors
    from tlrec.training.train import align_vectors

    return align_vectors(items, load_item_vectors(path))


def protocol_a(
    catalog: pl.DataFrame, interactions: pl.DataFrame, models: list[str], vectors_path: Path | None
) -> dict[str, Any]:
    train, test = temporal_split(interactions, test_fraction=0.2)
    items = IdMap(catalog[Columns.ITEM].to_list())
    data = InteractionData.build(train, items)
    counts = np.asarray(data.matrix().sum(axis=0)).ravel()
    candidates = np.flatnonzero(counts > 0)
    vectors = load_vectors(vectors_path, items)
    runs: list[tuple[str, Callable[[], Recommender], np.ndarray | None]] = []
    for m in MODEL_NAMES:
        if m not in models:
            continue
        if m == "ncf":
            runs.append(("ncf (no content)", ncf(), None))
            if vectors is not None:
                runs.append(("ncf + pre-trained content (served)", ncf(), vectors))
        elif m == "content":
            if vectors is not None:
                runs.append(("content profile (pre-trained vectors)", ContentProfileModel, vectors))
        else:
            makers: dict[str, Callable[[], Recommender]] = {
                "popularity": PopularityModel, "itemknn": ItemKNNModel, "ease": EASEModel, "lightfm": lightfm(),
            }
            runs.append(({"lightfm": "lightfm (warp)"}.get(m, m), makers[m], None))
    rows = [run_model(label, make, data, vec, test, candidates, True, (10, 20)) for label, make, vec in runs]
    return {
        "split": "temporal_split(test_fraction=0.2): each user's last 20% of ratings by time",
        "train_interactions": train.height, "test_interactions": test.height,
        "users": data.n_users, "candidate_items": int(len(candidates)), "rows": rows,
    }


def protocol_b(
    catalog: pl.DataFrame, interactions: pl.DataFrame, models: list[str], vectors_path: Path | None, skip_slow: bool
) -> dict[str, Any]:
    train, test, cold = cold_item_split(interactions, fraction=0.2, seed=0)
    items = IdMap(catalog[Columns.ITEM].to_list())
    data = InteractionData.build(train, items)
    candidates = np.sort(items.to_internal(cold))
    genres, genre_names = genre_matrix(catalog, items)
    runs: list[tuple[str, Callable[[], Recommender], np.ndarray | None]] = []
    if "popularity" in models:
        runs.append(("popularity", PopularityModel, None))
    vecs = load_vectors(vectors_path, items)
    if "lightfm" in models:
        runs.append(("lightfm hybrid (genres)", lightfm(features="vectors"), genres))
        if vecs is not None and not skip_slow:
            runs.append(("lightfm hybrid (pre-trained vectors)", lightfm(features="vectors"), vecs))
        elif vecs is not None:
            logger.info("--skip-slow: skipping lightfm hybrid with pre-trained vectors")
    if vecs is not None and "content" in models:
        runs.append(("content profile (pre-trained vectors)", ContentProfileModel, vecs))
    if vecs is not None and "ncf" in models:
        runs.append(("ncf + pre-trained content (served)", ncf(), vecs))
        # diagnostic, not a default: B's test holds every rating of a cold item, at any time, while
        # validation (each user's latest events) picks a recency half-life for what comes next
        runs.append(("ncf + pre-trained content, recency off (--set ncf.recency_half_life=null)",
                     ncf(recency_half_life=None), vecs))
    rows = [run_model(label, make, data, vec, test, candidates, False, (20,)) for label, make, vec in runs]
    n_test_users = test[Columns.USER].n_unique()
    unknown = n_test_users - int((data.users.to_internal(test[Columns.USER].unique(), missing="ignore") >= 0).sum())
    return {
        "split": "cold_item_split(fraction=0.2, seed=0); rank among the cold items only",
        "cold_items": len(cold), "train_interactions": train.height, "test_interactions": test.height,
        "test_users": n_test_users, "test_users_unknown_in_train": unknown,
        "genres": genre_names, "rows": rows,
    }


def _fmt(v: Any, column: str = "") -> str:
    if column.endswith("seconds"):
        return f"{v:.2f}"
    if column == "recency_half_life":
        return "none" if v is None else f"{v:g}" if isinstance(v, float) else str(v)
    return f"{v:.4f}" if isinstance(v, float) else str(v)


def render(results: dict[str, Any], console: Console) -> str:
    """Print rich tables; return the same as markdown."""
    md = [f"# Quality: {results['dataset']}", "", f"Command: `{results['command']}`  ",
          f"Run {results['date']} on {results['machine']}.", ""]
    for key, title, metrics in (("A", "Protocol A: warm items (temporal 80/20 per user)", A_METRICS),
                                ("B", "Protocol B: cold items (20% of items held out)", B_METRICS)):
        block = results.get("protocols", {}).get(key)
        if not block:
            continue
        extra = ["l2"] if key == "A" else ["recency_half_life"]
        cols = ["model", *metrics, "fit_seconds", *extra]
        table = Table(title=title)
        for c in cols:
            table.add_column(c, justify="left" if c == "model" else "right")
        md += [f"## {title}", "", block["split"] + ".", ""]
        facts = {k: v for k, v in block.items() if k not in ("rows", "split", "genres")}
        md += ["; ".join(f"{k}: {v}" for k, v in facts.items()), ""]
        if key == "A":
            md += ["recall@20 = |hits| / min(20, |relevant|) (training.metrics; the convention of the "
                   "EASE and VAE-CF papers).", ""]
        md += ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
        for row in block["rows"]:
            cells = [_fmt(row.get(c, ""), c) for c in cols]
            if "l2" in row:
                cells[-1] = f"{row['l2']:g}"
            table.add_row(*cells)
            md.append("| " + " | ".join(cells) + " |")
        md.append("")
        for row in block["rows"]:
            if "l2_validation_ndcg@10" in row:
                grid = ", ".join(f"{k}: {v:.4f}" for k, v in row["l2_validation_ndcg@10"].items())
                line = f"EASE l2 chosen by validation NDCG@10 (per-user temporal 10% of train): {grid}"
                md += [line, ""]
                console.print(line)
        console.print(table)
    return "\n".join(md)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ml-latest-small"),
                        help="MovieLens folder (ratings.csv + movies.csv, or u.data + u.item)")
    parser.add_argument("--models", default=",".join(MODEL_NAMES),
                        help=f"comma-separated subset of: {', '.join(MODEL_NAMES)}")
    parser.add_argument("--protocols", default="A,B", help="A (warm), B (cold items) or both")
    parser.add_argument("--vectors", type=Path, default=None,
                        help="item vectors from `tlrec embed` of the imported catalog (content models)")
    parser.add_argument("--skip-slow", action="store_true", help="skip LightFM hybrid with pre-trained vectors")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    bad = [m for m in models if m not in MODEL_NAMES]
    if bad:
        parser.error(f"unknown model(s) {', '.join(bad)}; choose from: {', '.join(MODEL_NAMES)}")
    protocols = [p.strip().upper() for p in args.protocols.split(",") if p.strip()]
    if not set(protocols) <= {"A", "B"}:
        parser.error(f"--protocols takes A, B or A,B, got {args.protocols!r}")

    from tlrec.services.movielens import import_movielens

    with tempfile.TemporaryDirectory(prefix="tlrec-quality-") as tmp:
        catalog_path, interactions_path = import_movielens(args.data, Path(tmp))
        catalog = load_catalog(catalog_path)
        interactions = load_interactions(interactions_path, catalog=catalog)

    import lightfm as _lightfm

    results: dict[str, Any] = {
        "dataset": args.data.name,
        "command": "python bench/quality.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
                   f"numpy {np.__version__}, lightfm {_lightfm.__version__}",
        "catalog_items": catalog.height, "interactions": interactions.height,
        "users": interactions[Columns.USER].n_unique(), "protocols": {},
    }
    start = time.perf_counter()
    if "A" in protocols:
        results["protocols"]["A"] = protocol_a(catalog, interactions, models, args.vectors)
    if "B" in protocols:
        results["protocols"]["B"] = protocol_b(catalog, interactions, models, args.vectors, args.skip_slow)
    results["total_seconds"] = round(time.perf_counter() - start, 1)

    console = Console(width=None if sys.stdout.isatty() else 160)
    md = render(results, console)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "quality.md").write_text(md + f"\nTotal {results['total_seconds']} s.\n")
    (args.out / "quality.json").write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"wrote {args.out / 'quality.md'} and {args.out / 'quality.json'} "
                  f"(total {results['total_seconds']} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
