"""Does the model `tlrec train --model auto` picks on validation also win on held-out test data?

    .venv/bin/python bench/generalization.py --data ../shared/data/ml-latest-small --vectors ml/vectors.parquet
    .venv/bin/python bench/generalization.py --quick --out /tmp/generalization   # smoke test, a few minutes
    .venv/bin/python bench/generalization.py --only synthetic-counts,demo-film

Protocol, per dataset (``DATASETS``: MovieLens four ways, the demo world per domain, a generated
count dataset; each builder below says how it is made, and the report's "Datasets" section too):

1. a train/test split of the interactions: ``temporal_split(0.2)`` (each user's last 20% by
   time to test) or, for the datasets whose timestamps carry no order, ``random_split(0.2, seed=0)``;
2. ``training.train.fit_model(catalog, train, vectors, "auto")``: the model selection of
   ``training.selection`` runs on the train part only (its own validation split of it, by time
   or at random as ``training.validation.time_signal`` decides) and serves the winner refit on
   all of train;
3. on test, the served model and every candidate as ``--model NAME`` would serve it
   (``Selection.refit_candidate``: the tuned candidate refit on all of train; item vectors
   ``align_vectors(items, vectors)`` only for models whose ``wants_item_vectors()``) rank
   **every catalog item**, the user's training items excluded; test users are those with test
   events who are known in train; relevant = the user's distinct test items (the convention of
   ``training.metrics.evaluate_rankings``: a test item the user already had in train stays
   relevant and cannot be hit, the same for every model). NDCG@10 and Recall@20
   (``|hits| / min(20, |relevant|)``).

The summary row of a dataset: which model won validation (``Selection.choice``, a candidate or
"blend"); its test NDCG@10 alone (as ``--model NAME``) and as served (``Selection.model``: a
winner that cannot score new items is served inside a blend whose new items come from NCF's
content path); the share of the served top-10 slots given to items without training events
("new@10"); the best single candidate on test; served / best (target >= 0.98: the selection
loses at most 2% against an oracle that picks on test); served / tuned EASE (the strong simple
baseline); the seconds the whole selection took. The detail table lists every candidate's
validation and test figures; the blend has test figures only when it is served.

Writes ``<out>.md`` and ``<out>.json`` (default ``bench/results/generalization``), rewritten after
every dataset, and prints the tables. Demo vectors and the demo world are cached under ``--work``.
LightFM fits with ``num_threads=os.cpu_count()`` (Hogwild), so its figures move a little between
runs; every other step is seeded.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import logging
import os
import platform
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import polars as pl
from rich.console import Console
from rich.table import Table

from tlrec.embeddings.vectors import ItemVectors, load_item_vectors
from tlrec.tables import Columns
from tlrec.training.data import load_catalog, load_interactions
from tlrec.training.interaction_data import InteractionData
from tlrec.training.metrics import evaluate_rankings
from tlrec.training.models import BlendModel, Recommender
from tlrec.training.selection import AUTO, Selection
from tlrec.training.splits import random_split, temporal_split
from tlrec.training.train import align_vectors, fit_model

try:  # run as a script: bench/ is on sys.path
    from quality import recommend_all
except ImportError:  # imported as bench.generalization
    from bench.quality import recommend_all

logger = logging.getLogger("bench.generalization")

C = Columns
SEED = 0
TEST_FRACTION = 0.2
#: Served / best single candidate on test at or above this is a pass.
TARGET_RATIO = 0.98
DEMO_DOMAINS = ("film", "product", "track")  # tlrec.services.demo_catalog.DOMAINS
DATASETS = ("ml-ratings", "ml-binary", "ml-shuffled", "ml-playcounts",
            *(f"demo-{d}" for d in DEMO_DOMAINS), "synthetic-counts")
QUICK_DATASETS = ("synthetic-counts", "demo-film")
#: Always passed to the selection (``--set`` keys): no progress bars in the log.
BASE_CONFIG: dict[str, Any] = {"ncf.progress": False}
#: ``--quick`` caps the iterative candidates.
QUICK_CONFIG: dict[str, Any] = {"ncf.epochs": 10, "lightfm.epochs": 10}

SplitName = Literal["temporal", "random"]


@dataclass(frozen=True)
class Sizes:
    """Sizes of the generated worlds (the demo and the synthetic count data)."""

    demo_items: int
    demo_users: int
    synthetic_users: int
    synthetic_items: int
    synthetic_clusters: int


FULL = Sizes(demo_items=2000, demo_users=1000, synthetic_users=3000, synthetic_items=2000, synthetic_clusters=20)
QUICK = Sizes(demo_items=600, demo_users=400, synthetic_users=600, synthetic_items=400, synthetic_clusters=8)


@dataclass
class Dataset:
    """One data shape: catalog, interactions, how test is split off, optional item vectors."""

    name: str
    about: str
    catalog: pl.DataFrame
    interactions: pl.DataFrame
    split: SplitName
    vectors: ItemVectors | None
    vectors_about: str

    def train_test(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        if self.split == "temporal":
            return temporal_split(self.interactions, test_fraction=TEST_FRACTION)
        return random_split(self.interactions, test_fraction=TEST_FRACTION, seed=SEED)


# ------------------------------------------------------------------------------------------- sources
class Sources:
    """The raw inputs the datasets are built from, loaded once and only when a dataset needs them."""

    def __init__(self, data: Path, vectors: Path | None, work: Path, sizes: Sizes) -> None:
        self.data, self.vectors_path, self.work, self.sizes = data, vectors, work, sizes

    @functools.cached_property
    def movielens(self) -> tuple[pl.DataFrame, pl.DataFrame, ItemVectors | None]:
        """MovieLens as ``tlrec import-movielens`` writes it, and its vectors (``--vectors``) if given."""
        from tlrec.services.movielens import import_movielens

        catalog_path, interactions_path = import_movielens(self.data, self.work / "movielens")
        catalog = load_catalog(catalog_path)
        interactions = load_interactions(interactions_path, catalog=catalog)
        vectors = load_item_vectors(self.vectors_path) if self.vectors_path is not None else None
        return catalog, interactions, vectors

    @functools.cached_property
    def demo_dir(self) -> Path:
        """The demo world (``generate_demo``) at this run's size, generated once into ``--work``."""
        from tlrec.services.demo_catalog import generate_demo

        out = self.work / f"demo-{self.sizes.demo_items}x{self.sizes.demo_users}-s{SEED}"
        if not (out / "catalog.parquet").is_file():  # the catalog is written last: present = complete
            generate_demo(out, n_items=self.sizes.demo_items, n_users=self.sizes.demo_users, seed=SEED,
                          progress=False)
        return out

    @functools.cached_property
    def demo(self) -> tuple[pl.DataFrame, pl.DataFrame]:
        catalog = load_catalog(self.demo_dir / "catalog.parquet")
        return catalog, load_interactions(self.demo_dir / "interactions.parquet", catalog=catalog, strict=True)

    def demo_vectors(self, domain: str, catalog: pl.DataFrame) -> ItemVectors:
        """Pre-trained vectors of one domain's items (``embed_catalog`` reuses an unchanged file)."""
        from tlrec.embeddings.embed_catalog import embed_catalog

        path = embed_catalog(catalog, self.demo_dir / f"vectors-{domain}.parquet", progress=False)
        return load_item_vectors(path)


# ------------------------------------------------------------------------------------------ datasets
def ml_ratings(src: Sources) -> Dataset:
    catalog, interactions, vectors = src.movielens
    return Dataset("ml-ratings", "MovieLens as imported: every rating (0.5-5 stars) is an interaction",
                   catalog, interactions, "temporal", vectors, _ml_vectors_about(src))


def ml_binary(src: Sources) -> Dataset:
    catalog, interactions, vectors = src.movielens
    liked = interactions.filter(pl.col(C.VALUE) >= 4).with_columns(pl.lit(1.0).alias(C.VALUE))
    return Dataset("ml-binary", "MovieLens, only ratings >= 4 kept (value 1): implicit positive feedback",
                   catalog, liked, "temporal", vectors, _ml_vectors_about(src))


def ml_shuffled(src: Sources) -> Dataset:
    catalog, interactions, vectors = src.movielens
    rng = np.random.default_rng(SEED)
    shuffled = interactions.with_columns(
        pl.Series(C.TIMESTAMP, rng.permutation(interactions[C.TIMESTAMP].to_numpy()))
    ).sort([C.USER, C.TIMESTAMP], maintain_order=True)
    return Dataset("ml-shuffled", "MovieLens ratings with the timestamps permuted across all rows "
                   f"(seed {SEED}): time order carries no signal; test split at random",
                   catalog, shuffled, "random", vectors, _ml_vectors_about(src))


def ml_playcounts(src: Sources) -> Dataset:
    catalog, interactions, vectors = src.movielens
    rng = np.random.default_rng(SEED)
    rating = interactions[C.VALUE].to_numpy()
    counts = 1.0 + np.floor(rng.lognormal(mean=0.8 * (rating - 3.0), sigma=1.0))
    return Dataset("ml-playcounts", "MovieLens rows with the value replaced by a heavy-tailed count "
                   f"1 + floor(lognormal(0.8 (rating - 3), 1)) (seed {SEED}; median 1 at 1 star, 5 at 5 stars)",
                   catalog, interactions.with_columns(pl.Series(C.VALUE, counts)), "temporal", vectors,
                   _ml_vectors_about(src))


def _ml_vectors_about(src: Sources) -> str:
    return f"pre-trained vectors {src.vectors_path}" if src.vectors_path is not None else "none (no --vectors)"


def demo_domain(domain: str) -> Callable[[Sources], Dataset]:
    def build(src: Sources) -> Dataset:
        full_catalog, full_interactions = src.demo
        catalog = full_catalog.filter(pl.col("domain") == domain)
        interactions = full_interactions.filter(pl.col(C.ITEM).is_in(catalog[C.ITEM].implode()))
        vectors = src.demo_vectors(domain, catalog)
        modalities = ", ".join(vectors.manifest.get("modalities", []))
        return Dataset(
            f"demo-{domain}",
            f"demo world (generate_demo n_items={src.sizes.demo_items}, n_users={src.sizes.demo_users}, "
            f"seed {SEED}) restricted to its {domain} items (all events: view/click/cart/purchase); "
            "~5% of the items never interacted with",
            catalog, interactions, "temporal", vectors,
            f"pre-trained encoders ({modalities}) via embed_catalog of the domain's items, as `tlrec demo` does")
    return build


def synthetic_counts(src: Sources) -> Dataset:
    s = src.sizes
    catalog, interactions = synthetic_world(s.synthetic_users, s.synthetic_items, s.synthetic_clusters, SEED)
    return Dataset(
        "synthetic-counts",
        f"generated: {s.synthetic_users} users, {s.synthetic_items} items in {s.synthetic_clusters} latent clusters, "
        "Zipf(1) item popularity, each user 1-3 favourite clusters (75% of their items), distinct items per user "
        "lognormal (median 25, 5 to items/4), value = play count 1 + floor(lognormal) (higher in favourite "
        "clusters), timestamps uniform over 90 days (no time signal); test split at random",
        catalog, interactions, "random", None, "none")


def synthetic_world(n_users: int, n_items: int, n_clusters: int, seed: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A heavy-tailed count dataset with cluster preferences and no time order (catalog, interactions)."""
    rng = np.random.default_rng(seed)
    cluster = rng.integers(n_clusters, size=n_items)
    popularity = np.empty(n_items)
    popularity[rng.permutation(n_items)] = 1.0 / np.arange(1, n_items + 1)  # Zipf, exponent 1
    activity = rng.normal(0.0, 0.5, size=n_users)  # per-user play-count level
    sizes = np.clip(np.round(rng.lognormal(np.log(25), 0.8, size=n_users)), 5, n_items // 4).astype(int)
    start, window = 1_700_000_000, 90 * 86_400
    users, items, values = [], [], []
    for u in range(n_users):
        favourite = np.isin(cluster, rng.choice(n_clusters, size=rng.integers(1, 4), replace=False))
        p = 0.75 * popularity * favourite / (popularity * favourite).sum() + 0.25 * popularity / popularity.sum()
        chosen = rng.choice(n_items, size=sizes[u], replace=False, p=p)
        counts = 1.0 + np.floor(rng.lognormal(activity[u] + 0.8 * favourite[chosen], 1.0))
        users += [f"s{u + 1:05d}"] * len(chosen)
        items += [f"item-{i + 1:05d}" for i in chosen]
        values.append(counts)
    catalog = pl.DataFrame({C.ITEM: [f"item-{i + 1:05d}" for i in range(n_items)],
                            C.TITLE: [f"Item {i + 1} (cluster {c})" for i, c in enumerate(cluster)]})
    interactions = pl.DataFrame({
        C.USER: users, C.ITEM: items,
        C.TIMESTAMP: rng.integers(start, start + window, size=len(users)).astype(np.int64),
        C.EVENT: ["play"] * len(users), C.VALUE: np.concatenate(values),
    }).sort([C.USER, C.TIMESTAMP], maintain_order=True)
    return catalog, interactions


BUILDERS: dict[str, Callable[[Sources], Dataset]] = {
    "ml-ratings": ml_ratings, "ml-binary": ml_binary, "ml-shuffled": ml_shuffled, "ml-playcounts": ml_playcounts,
    **{f"demo-{d}": demo_domain(d) for d in DEMO_DOMAINS}, "synthetic-counts": synthetic_counts,
}


# ---------------------------------------------------------------------------------------- evaluation
def evaluate_on_test(model: Recommender, data: InteractionData, test: pl.DataFrame,
                     warm: set[str]) -> dict[str, float]:
    """NDCG@10 and Recall@20 over every catalog item, the user's training items excluded; and the share
    of top-10 slots given to items without training events (``warm``: the items with some)."""
    users = sorted(test[C.USER].unique().to_list())
    recs = recommend_all(model, data, users, 20, None, True)  # type: ignore[arg-type]  # None = all items
    m = evaluate_rankings(recs, test, ks=(10, 20))
    slots = [item for items in recs.values() for item in items[:10]]
    cold = sum(item not in warm for item in slots) / max(len(slots), 1)
    return {"ndcg@10": m["ndcg@10"], "recall@20": m["recall@20"], "cold_share@10": cold}


def known_users(test: pl.DataFrame, data: InteractionData) -> pl.DataFrame:
    """Test rows of users who have training events (the only ones a model can rank for)."""
    known = data.users.to_internal(test[C.USER], missing="ignore") >= 0
    return test.filter(pl.Series(known))


def candidate_rows(selection: Selection, data: InteractionData, vectors: np.ndarray | None,
                   test: pl.DataFrame, warm: set[str], served: dict[str, float]) -> list[dict[str, Any]]:
    """One row per candidate of the validation table, with its test figures as ``--model NAME`` serves it."""
    rows = []
    for c in selection.candidates:
        row: dict[str, Any] = {"candidate": c.name, "validation_ndcg@10": c.validation_ndcg,
                               "tune_seconds": round(c.fit_seconds, 2), "note": c.note,
                               "ndcg@10": None, "recall@20": None, "cold_share@10": None}
        if c.name in selection.tuned:
            start = time.perf_counter()
            model = selection.refit_candidate(c.name, data, vectors)
            row.update(evaluate_on_test(model, data, test, warm))
            logger.info("%s: test NDCG@10 %.4f, Recall@20 %.4f (refit + test %.1fs)", c.name, row["ndcg@10"],
                        row["recall@20"], time.perf_counter() - start)
        elif c.name == "blend" and selection.choice == "blend":
            row.update(served)
        rows.append(row)
    return rows


def run_dataset(ds: Dataset, config: dict[str, Any]) -> dict[str, Any]:
    """Select on train, evaluate the served model and every candidate on test; the report's figures."""
    train, test = ds.train_test()
    logger.info("%s: %d train / %d test rows; model selection on train", ds.name, train.height, test.height)
    start = time.perf_counter()
    served_model, data, selection = fit_model(ds.catalog, train, ds.vectors, AUTO, config, keep_candidates=True)
    fit_seconds = time.perf_counter() - start
    assert selection is not None
    test = known_users(test, data)
    vectors = align_vectors(data.items, ds.vectors) if ds.vectors is not None else None
    warm = set(train[C.ITEM].unique().to_list())
    served = evaluate_on_test(served_model, data, test, warm)
    logger.info("%s: served %s: test NDCG@10 %.4f", ds.name, served_label(selection), served["ndcg@10"])
    rows = candidate_rows(selection, data, vectors, test, warm, served)
    singles = [r for r in rows if r["candidate"] != "blend" and r["ndcg@10"] is not None]
    best = max(singles, key=lambda r: r["ndcg@10"], default=None)  # None: nothing was validated
    ease = next((r for r in singles if r["candidate"] == "ease"), None)
    winner = next((r for r in rows if r["candidate"] == selection.choice), None)
    return {
        "dataset": ds.name, "about": ds.about, "vectors": ds.vectors_about,
        "rows": ds.interactions.height, "users": ds.interactions[C.USER].n_unique(), "items": ds.catalog.height,
        "items_with_events": ds.interactions[C.ITEM].n_unique(),
        "test_split": f"{ds.split} {TEST_FRACTION:g}", "train_rows": train.height, "test_rows": test.height,
        "test_users": test[C.USER].n_unique(),
        "validation_split": selection.split.get("by"), "validation_reason": selection.split.get("reason"),
        "choice": selection.choice, "served_as": selection.served_as, "served": served_label(selection),
        "served_ndcg@10": served["ndcg@10"], "served_recall@20": served["recall@20"],
        "served_cold_share@10": served["cold_share@10"],
        "winner_alone_ndcg@10": winner["ndcg@10"] if winner else None,
        "best_on_test": best["candidate"] if best else None, "best_ndcg@10": best["ndcg@10"] if best else None,
        "served_over_best": _ratio(served["ndcg@10"], best["ndcg@10"]) if best else None,
        "served_over_ease": _ratio(served["ndcg@10"], ease["ndcg@10"]) if ease else None,
        "selection_seconds": round(selection.seconds, 1), "fit_model_seconds": round(fit_seconds, 1),
        "blend": selection.blend, "notes": selection.notes, "candidates": rows,
    }


def served_label(selection: Selection) -> str:
    """The choice, or how it is wrapped when served (a winner that cannot score new items)."""
    model = selection.model
    if selection.choice == "blend" or not isinstance(model, BlendModel):
        return selection.choice
    return f"{selection.choice} + new items from {model.config.cold_items_from}"


def _ratio(a: float, b: float) -> float | None:
    return a / b if b > 0 else None


# ------------------------------------------------------------------------------------------ report
SUMMARY = [  # (column header, key, format)
    ("dataset", "dataset", "s"), ("rows", "rows", "d"), ("users", "users", "d"), ("items", "items", "d"),
    ("val split", "validation_split", "s"), ("validation winner", "choice", "s"),
    ("winner alone NDCG@10", "winner_alone_ndcg@10", ".4f"), ("served NDCG@10", "served_ndcg@10", ".4f"),
    ("served R@20", "served_recall@20", ".4f"), ("served new@10", "served_cold_share@10", ".3f"),
    ("best on test", "best_on_test", "s"), ("best NDCG@10", "best_ndcg@10", ".4f"),
    ("served/best", "served_over_best", ".3f"), ("served/EASE", "served_over_ease", ".3f"),
    ("selection s", "selection_seconds", ".0f"),
]
DETAIL = [
    ("dataset", "dataset", "s"), ("candidate", "candidate", "s"), ("val NDCG@10", "validation_ndcg@10", ".4f"),
    ("test NDCG@10", "ndcg@10", ".4f"), ("test R@20", "recall@20", ".4f"), ("new@10", "cold_share@10", ".3f"),
    ("tune s", "tune_seconds", ".1f"),
    ("note", "note", "s"),
]


def _cell(value: Any, fmt: str) -> str:
    if value is None:
        return "-"
    return format(value, fmt) if fmt != "s" else str(value)


def _table(title: str, columns: list[tuple[str, str, str]], rows: list[dict[str, Any]],
           console: Console) -> list[str]:
    """Print a rich table; return it as markdown lines."""
    table = Table(title=title)
    for n, (header, _, fmt) in enumerate(columns):
        table.add_column(header, justify="left" if fmt == "s" else "right", no_wrap=n == 0)
    md = ["| " + " | ".join(h for h, _, _ in columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [_cell(row.get(key), fmt) for _, key, fmt in columns]
        table.add_row(*cells)
        md.append("| " + " | ".join(c.replace("|", "/") for c in cells) + " |")
    console.print(table)
    return md


def render(results: dict[str, Any], console: Console) -> str:
    """Print the two tables; return the whole report as markdown."""
    done = results["datasets"]
    md = ["# Generalization of `--model auto`: validation choice vs test", "",
          f"Command: `{results['command']}`  ", f"Run {results['date']} on {results['machine']}.", "",
          ("Per dataset: `fit_model(..., \"auto\")` selects on the train part (its own validation split of it); "
          "the served model and every candidate refit on all of train (`Selection.refit_candidate`) rank every "
          "catalog item for the test users known in train, training items excluded. served/best = served test "
          f"NDCG@10 over the best single candidate's (target >= {TARGET_RATIO}); served/EASE over the tuned EASE's. "
          "winner alone = the validation winner as `--model NAME` serves it (differs from served when a winner "
          "that cannot score new items is served in a blend whose new items come from NCF's content path). "
          "new@10 = share of top-10 slots given to items without training events. "
          f"Selection config: `{json.dumps(results['config'])}`."), "",
          "## Summary", ""]
    md += _table("validation choice vs test", SUMMARY, done, console)
    passed = [d for d in done if d["served_over_best"] is not None and d["served_over_best"] >= TARGET_RATIO]
    md += ["", f"served/best >= {TARGET_RATIO} on {len(passed)} of {len(done)} datasets.", "",
           "## Every candidate: validation vs test NDCG@10", "",
           ("Validation = the selection's own split of train (NDCG@10 over at most 2000 users); the blend's "
           "validation score is cross-fitted; it has a test figure only when served."), ""]
    detail = [{"dataset": d["dataset"], **r} for d in done for r in d["candidates"]]
    md += _table("every candidate", DETAIL, detail, console)
    md += ["", "## Datasets", ""]
    for d in done:
        md += [f"**{d['dataset']}**: {d['about']}. Item vectors: {d['vectors']}. {d['rows']} rows, {d['users']} users, "
               f"{d['items']} catalog items ({d['items_with_events']} with events); test split {d['test_split']}: "
               f"{d['train_rows']} train / {d['test_rows']} test rows, {d['test_users']} test users. "
               f"Validation split: {d['validation_split']} ({d['validation_reason']}). "
               f"Served: {d['served']}"
               + (f"; {'; '.join(d['notes'])}" if d["notes"] else "") + ".", ""]
    if results.get("total_seconds") is not None:
        md.append(f"Total {results['total_seconds']} s.")
    return "\n".join(md) + "\n"


def machine() -> str:
    import lightfm
    import torch

    load = f", load average {os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else ""
    return (f"{platform.machine()}, {os.cpu_count()} cores{load}, Python {platform.python_version()}, "
            f"numpy {np.__version__}, torch {torch.__version__}, lightfm {lightfm.__version__}")


def write(results: dict[str, Any], out: Path, console: Console) -> None:
    md_path, json_path = Path(f"{out}.md"), Path(f"{out}.json")
    md_path.parent.mkdir(parents=True, exist_ok=True)
    md_path.write_text(render(results, console))
    json_path.write_text(json.dumps(results, indent=2) + "\n")
    logger.info("wrote %s and %s", md_path, json_path)


# -------------------------------------------------------------------------------------------- main
def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ml-latest-small"),
                        help="MovieLens folder (ratings.csv + movies.csv, or u.data + u.item)")
    parser.add_argument("--vectors", type=Path, default=None,
                        help="item vectors of the imported MovieLens catalog (`tlrec embed`); ml-* datasets")
    parser.add_argument("--only", default=None, help=f"comma-separated subset of: {', '.join(DATASETS)}")
    parser.add_argument("--work", type=Path, default=Path("/tmp/tlrec-generalization"),
                        help="cache folder: imported MovieLens, the demo world and its vectors")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results" / "generalization",
                        help="results stem: writes <out>.md and <out>.json")
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke test: {', '.join(QUICK_DATASETS)} (unless --only), smaller worlds, "
                             f"config {json.dumps(QUICK_CONFIG)}")
    parser.add_argument("--set", dest="settings", action="append", default=[], metavar="KEY=VALUE",
                        help="selection config, as `tlrec train --set` (JSON values; e.g. ncf.refit=true)")
    args = parser.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # the encoders ship in packages; never wait on the hub
    names = [n.strip() for n in args.only.split(",") if n.strip()] if args.only else \
        list(QUICK_DATASETS if args.quick else DATASETS)
    bad = [n for n in names if n not in BUILDERS]
    if bad:
        parser.error(f"unknown dataset(s) {', '.join(bad)}; choose from: {', '.join(DATASETS)}")
    config = {**BASE_CONFIG, **(QUICK_CONFIG if args.quick else {})}
    for pair in args.settings:
        key, _, value = pair.partition("=")
        try:
            config[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            config[key.strip()] = value
    sizes = QUICK if args.quick else FULL
    sources = Sources(args.data, args.vectors, args.work, sizes)

    results: dict[str, Any] = {
        "command": "python bench/generalization.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": dt.datetime.now().isoformat(timespec="seconds"), "machine": machine(),
        "config": config, "sizes": sizes.__dict__, "test_fraction": TEST_FRACTION, "seed": SEED,
        "datasets": [], "total_seconds": None,
    }
    console = Console(width=None if sys.stdout.isatty() else 200)
    start = time.perf_counter()
    for name in names:
        t0 = time.perf_counter()
        logger.info("=== %s", name)
        results["datasets"].append(run_dataset(BUILDERS[name](sources), config))
        logger.info("=== %s done in %.0fs", name, time.perf_counter() - t0)
        if name != names[-1]:
            write(results, args.out, Console(quiet=True))  # partial results, tables not printed
    results["total_seconds"] = round(time.perf_counter() - start, 1)
    write(results, args.out, console)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
