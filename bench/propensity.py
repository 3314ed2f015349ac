"""Event propensity on MovieLens: tlrec's calibrated model against logistic regression and gradient boosting.

Protocol (one run, every model side by side; issue 15's "like" task):

* **like** — per-user temporal 80/20 split (``temporal_split``); label ``rating >= 4``; the test
  examples are the test ratings of items known in training. Every model is tuned on a
  time-based validation split of the training part only (each user's newest 10%), then
  refitted on the whole training part:

  - base rate: the training share of likes, for every pair;
  - logistic regression on one-hot user + item (scikit-learn, ``C`` by validation log loss);
  - gradient boosting (``HistGradientBoostingClassifier``) on user and item like rates and
    counts (out of fold on training rows) and the item's genres (learning rate by validation);
  - tlrec: ``tlrec train --task propensity --positive rating>=4`` (``PropensityArtifact.fit``)
    with the pre-trained text vectors, and without them (the transfer ablation).

* **transfer** — the same split, but a fifth of the items are held out of training with all
  their ratings (new items) and a fifth of the users keep only their first 5 training ratings
  (short histories). tlrec with and without the pre-trained content, paired on the same test
  examples: the gain in AUC and in log loss with bootstrap 95% intervals.

Metrics: ROC-AUC, PR-AUC, log loss, Brier, ECE (15 equal-width bins). Run:
``python bench/propensity.py --vectors VECTORS`` (vectors of the imported catalog, from
``tlrec embed``). Writes ``bench/results/propensity.md`` and ``.json``.
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
from pathlib import Path
from typing import Any, Callable

import numpy as np
import polars as pl
import scipy.sparse as sp
from rich.console import Console
from rich.markdown import Markdown
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss, roc_auc_score

from tlrec.tables import Columns
from tlrec.training.data import load_catalog, load_interactions
from tlrec.training.id_map import IdMap
from tlrec.training.positive_spec import PositiveSpec
from tlrec.training.probability_metrics import probability_metrics
from tlrec.training.propensity_artifact import PropensityArtifact
from tlrec.training.splits import cold_item_split, temporal_split

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import load_vectors  # noqa: E402

logger = logging.getLogger("bench.propensity")

POSITIVE = PositiveSpec.parse("rating>=4")
VALIDATION_FRACTION = 0.1
LR_C = (0.03, 0.1, 0.3, 1.0, 3.0)
GBM_RATES = (0.03, 0.1, 0.3)
SHORT_HISTORY = 5
BOOTSTRAP = 1000

Predictor = Callable[[pl.DataFrame, pl.DataFrame], np.ndarray]  # (train, test) -> P(like) per test row


def labels(frame: pl.DataFrame) -> np.ndarray:
    return POSITIVE.labels(frame).to_numpy().astype(np.float64)


def _tuned(name: str, grid: tuple[float, ...], train: pl.DataFrame,
           fit: Callable[[pl.DataFrame, pl.DataFrame, float], np.ndarray]) -> Callable[[pl.DataFrame], np.ndarray]:
    """Choose ``grid``'s value by log loss on a time-based validation split of ``train``; returns the
    predictor refitted on all of ``train`` with it."""
    fit_part, held = temporal_split(train, VALIDATION_FRACTION)
    losses = {v: log_loss(labels(held), np.clip(fit(fit_part, held, v), 1e-7, 1 - 1e-7)) for v in grid}
    best = min(losses, key=losses.__getitem__)
    logger.info("%s: chose %s (validation log loss %s)", name, best,
                ", ".join(f"{v}: {loss:.4f}" for v, loss in losses.items()))
    return lambda test: fit(train, test, best)


def one_hot_logistic(train: pl.DataFrame, test: pl.DataFrame, c: float) -> np.ndarray:
    """Logistic regression on one-hot user + item indicators; ``c``: inverse L2 strength."""
    users, items = IdMap.from_values(train[Columns.USER]), IdMap.from_values(train[Columns.ITEM])

    def design(frame: pl.DataFrame) -> sp.csr_matrix:
        u = users.to_internal(frame[Columns.USER], missing="ignore")
        i = items.to_internal(frame[Columns.ITEM], missing="ignore")
        rows = np.arange(frame.height)
        keep_u, keep_i = u >= 0, i >= 0
        return sp.csr_matrix((np.ones(keep_u.sum() + keep_i.sum()),
                              (np.concatenate([rows[keep_u], rows[keep_i]]),
                               np.concatenate([u[keep_u], len(users) + i[keep_i]]))),
                             shape=(frame.height, len(users) + len(items)))

    model = LogisticRegression(C=c, max_iter=2000).fit(design(train), labels(train))
    return model.predict_proba(design(test))[:, 1]


def gradient_boosting(catalog: pl.DataFrame) -> Callable[[pl.DataFrame, pl.DataFrame, float], np.ndarray]:
    """Boosted trees on user/item like rates and counts (out of fold on training rows) and genres."""
    genres = catalog.select(Columns.ITEM, pl.col("genres").str.split("|")).explode("genres")
    names = sorted(g for g in genres["genres"].unique().drop_nulls().to_list())
    genre_table = (genres.with_columns(pl.lit(1.0).alias("one")).pivot("genres", index=Columns.ITEM, values="one",
                                                                        aggregate_function="first")
                   .fill_null(0.0).select(Columns.ITEM, *names))

    def rates(source: pl.DataFrame, frame: pl.DataFrame) -> pl.DataFrame:
        """``frame`` with the user's and the item's like rate (smoothed) and count in ``source``."""
        t = source.with_columns(pl.Series("y", labels(source)))
        for key in (Columns.USER, Columns.ITEM):
            stats = t.group_by(key).agg(((pl.col("y").sum() + 1) / (pl.len() + 2)).alias(f"{key}_rate"),
                                        pl.len().alias(f"{key}_n"))
            frame = frame.join(stats, on=key, how="left")
        return frame

    def features(train: pl.DataFrame, frame: pl.DataFrame, own: bool) -> np.ndarray:
        """Rates out of fold for training rows (5 folds: a row's own label never is its feature), from
        the whole training part for test rows; counts from the whole training part; genres."""
        frame = frame.with_row_index("_row")
        if own:
            fold = np.random.default_rng(0).integers(0, 5, frame.height)
            parts = [rates(train.filter(pl.Series(fold != f)), frame.filter(pl.Series(fold == f))) for f in range(5)]
            frame = pl.concat(parts).sort("_row")
        else:
            frame = rates(train, frame)
        counts = rates(train, frame.select("_row", Columns.USER, Columns.ITEM))
        frame = frame.drop(f"{Columns.USER}_n", f"{Columns.ITEM}_n").join(
            counts.select("_row", f"{Columns.USER}_n", f"{Columns.ITEM}_n"), on="_row")
        frame = frame.join(genre_table, on=Columns.ITEM, how="left").sort("_row")
        cols = [f"{Columns.USER}_rate", f"{Columns.USER}_n", f"{Columns.ITEM}_rate", f"{Columns.ITEM}_n", *names]
        return frame.select(cols).to_numpy().astype(np.float32)  # NaN (unseen) is a value the trees handle

    def fit(train: pl.DataFrame, test: pl.DataFrame, rate: float) -> np.ndarray:
        model = HistGradientBoostingClassifier(learning_rate=rate, max_iter=300, early_stopping=True, random_state=0)
        model.fit(features(train, train, own=True), labels(train))
        return model.predict_proba(features(train, test, own=False))[:, 1]

    return fit


def tlrec_propensity(catalog: pl.DataFrame, content: np.ndarray | None) -> Predictor:
    items = IdMap(catalog[Columns.ITEM].to_list())

    def predict(train: pl.DataFrame, test: pl.DataFrame) -> np.ndarray:
        artifact = PropensityArtifact.fit(train, items, POSITIVE, content, {"progress": False})
        logger.info("tlrec (%s): %s", "content" if content is not None else "no content", artifact.training)
        return artifact.predict(test[Columns.USER], test[Columns.ITEM])["probability"].to_numpy()

    return predict


def run_models(models: dict[str, Predictor], train: pl.DataFrame, test: pl.DataFrame
               ) -> tuple[dict[str, dict[str, float]], dict[str, np.ndarray]]:
    y = labels(test)
    rows, predictions = {}, {}
    for name, predict in models.items():
        start = time.perf_counter()
        p = np.clip(predict(train, test), 0.0, 1.0)
        seconds = time.perf_counter() - start
        rows[name] = {**probability_metrics(y, p), "fit_seconds": round(seconds, 1)}
        predictions[name] = p
        logger.info("%s: %s", name, {k: round(v, 4) for k, v in rows[name].items()})
    return rows, predictions


def paired_gain(y: np.ndarray, with_content: np.ndarray, without: np.ndarray, seed: int = 0) -> dict[str, float]:
    """AUC and log-loss gains of ``with_content`` over ``without`` with bootstrap 95% intervals (examples resampled)."""
    rng = np.random.default_rng(seed)
    eps = 1e-7
    ll = lambda p, idx: -np.mean(y[idx] * np.log(np.clip(p[idx], eps, 1)) + (1 - y[idx]) * np.log(np.clip(1 - p[idx], eps, 1)))  # noqa: E731
    idx_all = np.arange(len(y))
    auc_gain, ll_gain = [], []
    for _ in range(BOOTSTRAP):
        idx = rng.integers(0, len(y), len(y))
        if 0 < y[idx].sum() < len(idx):
            auc_gain.append(roc_auc_score(y[idx], with_content[idx]) - roc_auc_score(y[idx], without[idx]))
            ll_gain.append(ll(without, idx) - ll(with_content, idx))
    return {"n": len(y),
            "auc_gain": roc_auc_score(y, with_content) - roc_auc_score(y, without),
            "auc_lo": float(np.quantile(auc_gain, 0.025)), "auc_hi": float(np.quantile(auc_gain, 0.975)),
            "log_loss_gain": ll(without, idx_all) - ll(with_content, idx_all),
            "log_loss_lo": float(np.quantile(ll_gain, 0.025)), "log_loss_hi": float(np.quantile(ll_gain, 0.975))}


def transfer(catalog: pl.DataFrame, train: pl.DataFrame, test: pl.DataFrame, content: np.ndarray,
             seed: int = 0) -> dict[str, dict[str, float]]:
    """Gains of the pre-trained content for new items and for users with <= SHORT_HISTORY training ratings."""
    warm, _, new_items = cold_item_split(train, 0.2, seed=seed)
    users = warm[Columns.USER].unique().sort()
    short = set(users.sample(fraction=0.2, seed=seed).to_list())
    warm = (warm.sort(Columns.USER, Columns.TIMESTAMP, maintain_order=True)
            .filter(~pl.col(Columns.USER).is_in(list(short)) | (pl.int_range(pl.len()).over(Columns.USER)
                                                                < SHORT_HISTORY)))
    known = set(warm[Columns.ITEM].to_list())
    segments = {
        "new items": test.filter(pl.col(Columns.ITEM).is_in(new_items)),
        f"users with <= {SHORT_HISTORY} ratings": test.filter(pl.col(Columns.USER).is_in(list(short))
                                                             & pl.col(Columns.ITEM).is_in(list(known))),
    }
    out = {}
    with_content, without = tlrec_propensity(catalog, content), tlrec_propensity(catalog, None)
    both = pl.concat(list(segments.values()))
    p_with, p_without = with_content(warm, both), without(warm, both)
    start = 0
    for name, frame in segments.items():
        sl = slice(start, start + frame.height)
        start += frame.height
        y = labels(frame)
        out[name] = {**paired_gain(y, p_with[sl], p_without[sl]),
                     "auc_with": probability_metrics(y, p_with[sl])["roc_auc"],
                     "auc_without": probability_metrics(y, p_without[sl])["roc_auc"]}
        logger.info("transfer %s: %s", name, {k: round(v, 4) for k, v in out[name].items()})
    return out


def render(result: dict[str, Any]) -> str:
    like = result["like"]
    names = ["roc_auc", "pr_auc", "log_loss", "brier", "ece", "fit_seconds"]
    lines = ["# Propensity: like (rating >= 4) on ml-latest-small", "",
             f"{result['when']}, {result['machine']}. Per-user temporal 80/20 split; test = "
             f"{int(next(iter(like.values()))['n'])} test ratings of items known in training, base rate "
             f"{next(iter(like.values()))['base_rate']:.3f}. Each model tuned on a time-based validation split of "
             "the training part only. Run: `python bench/propensity.py --vectors VECTORS`.", "",
             "| model | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    lines += [f"| {m} | " + " | ".join(f"{r[n]:.4f}" if n != "fit_seconds" else f"{r[n]:.1f}" for n in names) + " |"
              for m, r in like.items()]
    base = [m for m in like if m.startswith(("logistic", "gradient"))]
    best = max(base, key=lambda m: like[m]["roc_auc"])
    ours = like["tlrec propensity (pre-trained content)"]
    lines += ["", f"Targets: AUC >= best baseline ({best}, {like[best]['roc_auc']:.4f}) + 0.02 = "
                  f"{like[best]['roc_auc'] + 0.02:.4f}: **{ours['roc_auc']:.4f}** "
                  f"({'met' if ours['roc_auc'] >= like[best]['roc_auc'] + 0.02 else 'missed'}); log loss below every "
                  f"baseline ({min(like[m]['log_loss'] for m in base):.4f}): **{ours['log_loss']:.4f}** "
                  f"({'met' if ours['log_loss'] < min(like[m]['log_loss'] for m in base) else 'missed'}); "
                  f"ECE <= 0.02: **{ours['ece']:.4f}** ({'met' if ours['ece'] <= 0.02 else 'missed'})."]
    if "transfer" in result:
        lines += ["", "## Transfer: the pre-trained content on new items and short histories", "",
                  "A fifth of the items held out of training with all their ratings; a fifth of the users keep their "
                  f"first {SHORT_HISTORY} training ratings. tlrec with against without the content vectors, same "
                  "test examples; bootstrap 95% intervals over examples.", "",
                  "| segment | n | AUC with | AUC without | AUC gain [95% CI] | log-loss gain [95% CI] |",
                  "|---|---|---|---|---|---|"]
        lines += [f"| {s} | {int(g['n'])} | {g['auc_with']:.4f} | {g['auc_without']:.4f} | {g['auc_gain']:+.4f} "
                  f"[{g['auc_lo']:+.4f}, {g['auc_hi']:+.4f}] | {g['log_loss_gain']:+.4f} [{g['log_loss_lo']:+.4f}, "
                  f"{g['log_loss_hi']:+.4f}] |" for s, g in result["transfer"].items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ml-latest-small"))
    parser.add_argument("--vectors", type=Path, required=True, help="item vectors of the imported catalog")
    parser.add_argument("--skip-transfer", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    from tlrec.services.movielens import import_movielens

    with tempfile.TemporaryDirectory(prefix="tlrec-propensity-") as tmp:
        catalog_path, interactions_path = import_movielens(args.data, Path(tmp))
        catalog = load_catalog(catalog_path)
        interactions = load_interactions(interactions_path, catalog=catalog)
    content = load_vectors(args.vectors, IdMap(catalog[Columns.ITEM].to_list()))
    train, test = temporal_split(interactions, 0.2)
    test = test.filter(pl.col(Columns.ITEM).is_in(train[Columns.ITEM].unique().to_list()))
    models: dict[str, Predictor] = {
        "base rate": lambda tr, te: np.full(te.height, labels(tr).mean()),
        "logistic regression, one-hot user + item": lambda tr, te: _tuned("logistic", LR_C, tr, one_hot_logistic)(te),
        "gradient boosting, rates + counts + genres": lambda tr, te: _tuned("boosting", GBM_RATES, tr,
                                                                             gradient_boosting(catalog))(te),
        "tlrec propensity (no content)": tlrec_propensity(catalog, None),
        "tlrec propensity (pre-trained content)": tlrec_propensity(catalog, content),
    }
    start = time.perf_counter()
    result: dict[str, Any] = {
        "when": dt.datetime.now().isoformat(timespec="seconds"),
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        "command": "python bench/propensity.py " + " ".join(sys.argv[1:] if argv is None else argv),
    }
    result["like"], _ = run_models(models, train, test)
    if not args.skip_transfer:
        result["transfer"] = transfer(catalog, train, test, content)
    result["total_seconds"] = round(time.perf_counter() - start, 1)
    md = render(result)
    Console(width=160).print(Markdown(md))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "propensity.md").write_text(md + f"\nTotal {result['total_seconds']} s.\n")
    (args.out / "propensity.json").write_text(json.dumps(result, indent=2, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
