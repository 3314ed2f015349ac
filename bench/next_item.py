"""Next-item prediction on MovieLens: tlrec's sequence model against popularity, EASE, NCF and RecTools' SASRec.

Protocol (one run, every model side by side):

* **warm** — leave-last-out by time: each user's last rating is the target, the rest trains.
  Full ranking over the items seen in training, the user's training items excluded; HR@10,
  NDCG@10 and MRR (target within the top 100). The served row is what ``tlrec train --task
  next-item`` serves: the model selection over the task's candidates (popularity, EASE, NCF,
  sasrec, and their blend) on the validation split of the training part (each user's last
  training event, ``ValidationSplit.of(by="last")``); each candidate's row is that candidate
  as ``--model NAME`` serves it (EASE's ``l2`` chosen on the same split). RecTools' ``SASRecModel`` runs in a
  virtual environment of its own (``bench/rectools_bridge.py``), softmax loss, settings
  reported in the table.
* **new items** — ``cold_item_split(0.2)``: a fifth of the items are held out of training with
  all their events. A user's target is their first event on a held-out item; their history is
  their training events before it (>= 1). Ranked among the held-out items only. SASRec by
  RecTools cannot rank items it never saw (it is listed with no score).

Run: ``python bench/next_item.py --vectors VECTORS`` (vectors of the imported catalog from
``tlrec embed``; without, the content rows are skipped). Writes ``bench/results/next_item.md``
and ``.json``.
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
from typing import Any

import numpy as np
import polars as pl
from rich.console import Console

from tlrec.tables import Columns
from tlrec.training.data import load_catalog, load_interactions
from tlrec.training.id_map import IdMap
from tlrec.training.interaction_data import InteractionData
from tlrec.training.metrics import MRR_DEPTH, next_item_metrics
from tlrec.training.models import Recommender, build_model
from tlrec.training.selection import TASKS, select_model
from tlrec.training.sequences import Sequences
from tlrec.training.splits import cold_item_split, leave_last_out
from tlrec.training.validation import ValidationSplit

sys.path.insert(0, str(Path(__file__).resolve().parent))
from quality import load_vectors  # noqa: E402

logger = logging.getLogger("bench.next_item")

K = 10
MODELS = ("served", "popularity", "ease", "ncf", "sasrec", "sasrec-ids", "content", "rectools")
LABELS = {"popularity": "popularity", "ease": "ease", "ncf": "tlrec ncf + pre-trained content",
          "sasrec": "tlrec sasrec + pre-trained content", "sasrec-ids": "tlrec sasrec (ids only)",
          "content": "content profile"}


def fit(name: str, data: InteractionData, vectors: np.ndarray | None, split: ValidationSplit,
        config: dict[str, Any]) -> tuple[Recommender, float]:
    """A tlrec model fitted on ``data``, choosing its settings on ``split``; returns it and the fit seconds."""
    model = build_model(name, config)
    start = time.perf_counter()
    model.fit(data, vectors if model.wants_item_vectors() else None, validation=split)
    return model, time.perf_counter() - start


def rank_warm(model: Recommender, data: InteractionData, test: pl.DataFrame) -> dict[str, list[str]]:
    """Top ``MRR_DEPTH`` over all items for every test user (training items excluded)."""
    users = data.users.to_internal(test[Columns.USER], missing="ignore")
    users = users[users >= 0]
    seen = data.seen()
    out: dict[str, list[str]] = {}
    for s in range(0, len(users), 256):
        rows = users[s : s + 256]
        items, _ = model.recommend(rows, MRR_DEPTH, exclude=seen)
        for u, row in zip(rows, items):
            out[data.users.external[int(u)]] = data.items.to_external(row[row >= 0])
    return out


def warm(catalog: pl.DataFrame, interactions: pl.DataFrame, vectors_path: Path | None, models: list[str],
         settings: dict[str, dict[str, Any]], work: Path) -> dict[str, Any]:
    train, test = leave_last_out(interactions)
    items = IdMap(catalog[Columns.ITEM].to_list())
    data = InteractionData.build(train, items)
    vectors = load_vectors(vectors_path, items)
    split = ValidationSplit.of(data, by="last")
    targets = dict(zip(test[Columns.USER].to_list(), test[Columns.ITEM].to_list()))
    rows = []
    candidates = tuple(m for m in TASKS["next-item"][0] if m in models and (m != "sasrec" or vectors is not None))
    if "served" in models or candidates:
        rows += selection_rows(data, vectors, split, candidates, settings, test, targets, "served" in models)
    for name in (m for m in models if m not in candidates and m != "served"):
        if name == "rectools":
            from rectools_bridge import run_sasrec

            result = run_sasrec(train.select(Columns.USER, Columns.ITEM, Columns.TIMESTAMP), list(targets),
                                MRR_DEPTH, work / "rectools", settings.get("rectools"))
            rows.append({"model": "RecTools SASRecModel (softmax)", **next_item_metrics(result.recs, targets, (K,)),
                         "fit_seconds": round(result.fit_seconds, 1), "settings": result.settings,
                         "versions": result.versions})
            continue
        if name in ("sasrec", "content") and vectors is None:
            logger.info("%s: skipped (no --vectors)", name)
            continue
        model_name = "sasrec" if name == "sasrec-ids" else name
        model, seconds = fit(model_name, data, None if name == "sasrec-ids" else vectors, split,
                             settings.get(name, {}))
        rows.append(model_row(LABELS[name], model, data, test, targets, seconds))
    return {"split": "leave_last_out: each user's last event by time is the target; full ranking over items seen "
                     "in training, training items excluded", "users": len(targets),
            "train_interactions": train.height, "rows": rows}


def selection_rows(data: InteractionData, vectors: np.ndarray | None, split: ValidationSplit,
                   candidates: tuple[str, ...], settings: dict[str, dict[str, Any]], test: pl.DataFrame,
                   targets: dict[str, str], served: bool) -> list[dict[str, Any]]:
    """``tlrec train --task next-item`` on ``data`` (model selection over ``candidates`` on ``split``):
    a row for the served model (when ``served``) and one per candidate as ``--model NAME`` serves it."""
    config = {f"{name}.{key}": value for name in candidates for key, value in settings.get(name, {}).items()}
    start = time.perf_counter()
    selection = select_model(data, vectors, config, candidates=candidates, split=split, keep_candidates=True,
                             task="next-item")
    rows = []
    if served:
        label = f"tlrec served (--task next-item: {selection.choice})"
        rows.append(model_row(label, selection.model, data, test, targets, time.perf_counter() - start))
        rows[-1]["selection"] = selection.to_dict()
    for c in selection.candidates:
        if c.name in selection.tuned:
            model = selection.refit_candidate(c.name, data, vectors)
            rows.append(model_row(LABELS[c.name], model, data, test, targets, c.fit_seconds))
    return rows


def model_row(label: str, model: Recommender, data: InteractionData, test: pl.DataFrame, targets: dict[str, str],
              seconds: float) -> dict[str, Any]:
    """The table row of a fitted tlrec model: its test figures, fit time and validation score."""
    row = {"model": label, **next_item_metrics(rank_warm(model, data, test), targets, (K,)),
           "fit_seconds": round(seconds, 1), "validation_ndcg@10": model.validation_ndcg_,
           "config": model.config.model_dump(mode="json")}
    logger.info("%s: %s", label, {k: round(v, 4) for k, v in row.items() if isinstance(v, float)})
    return row


def new_items(catalog: pl.DataFrame, interactions: pl.DataFrame, vectors_path: Path | None,
              settings: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Targets that are new items: each user's first event on a held-out item, ranked among the held-out items."""
    if vectors_path is None:
        return None
    train, test, cold = cold_item_split(interactions, fraction=0.2, seed=0)
    items = IdMap(catalog[Columns.ITEM].to_list())
    data = InteractionData.build(train, items)
    vectors = load_vectors(vectors_path, items)
    candidates = np.sort(items.to_internal(cold))
    firsts = test.sort(Columns.TIMESTAMP).unique(Columns.USER, keep="first", maintain_order=True)
    before = (train.join(firsts.select(Columns.USER, pl.col(Columns.TIMESTAMP).alias("_cut")), on=Columns.USER)
              .filter(pl.col(Columns.TIMESTAMP) < pl.col("_cut")).sort(Columns.USER, Columns.TIMESTAMP))
    histories = {u: data.items.to_internal(g[Columns.ITEM]) for (u,), g in before.group_by(Columns.USER)}
    users = [u for u in firsts[Columns.USER].to_list() if u in histories]
    targets = {u: t for u, t in zip(firsts[Columns.USER].to_list(), firsts[Columns.ITEM].to_list()) if u in histories}
    seqs = Sequences.from_lists([histories[u] for u in users])
    split = ValidationSplit.of(data, by="last")
    rows = []
    for name in ("sasrec", "ncf", "content"):
        model, seconds = fit(name, data, vectors, split, settings.get(name, {}))
        if model.retrieval:
            queries = model.sequence_vectors(seqs)
            scores = model.rank_vectors(queries, np.broadcast_to(candidates, (len(users), len(candidates))))
        else:
            scores = model.score_history(seqs.matrix(data.n_items), candidates)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :MRR_DEPTH]
        recs = {u: data.items.to_external(candidates[order[r]]) for r, u in enumerate(users)}
        rows.append({"model": LABELS[name], **next_item_metrics(recs, targets, (K,)), "fit_seconds": round(seconds, 1)})
    rows.append({"model": "RecTools SASRecModel", "note": "cannot rank items without interactions"})
    return {"split": "cold_item_split(0.2, seed 0): target = each user's first event on a held-out item, history = "
                     "their training events before it; ranked among the held-out items",
            "cold_items": len(cold), "users": len(users), "rows": rows}


def render(results: dict[str, Any]) -> str:
    cols = [f"hit_rate@{K}", f"ndcg@{K}", "mrr", "fit_seconds"]
    lines = [f"# Next-item prediction: {results['dataset']}", "", f"Command: `{results['command']}`  ",
             f"Run {results['date']} on {results['machine']}.", ""]
    for key, title in (("warm", "Warm: leave-last-out"), ("new_items", "Targets that are new items")):
        block = results.get(key)
        if not block:
            continue
        lines += [f"## {title}", "", block["split"], "", "| model | " + " | ".join(cols) + " |",
                  "|---" * (len(cols) + 1) + "|"]
        for row in block["rows"]:
            cells = [f"{row[c]:.4f}" if isinstance(row.get(c), float) and c != "fit_seconds"
                     else str(row.get(c, row.get("note", "-") if c == cols[0] else "")) for c in cols]
            lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
        lines.append("")
    for row in (results.get("warm") or {}).get("rows", []):
        if "settings" in row:
            lines += [f"RecTools settings: `{json.dumps(row['settings'])}`; versions `{json.dumps(row['versions'])}`", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("../shared/data/ml-latest-small"))
    parser.add_argument("--vectors", type=Path, default=None, help="item vectors of the imported catalog")
    parser.add_argument("--models", default=",".join(MODELS), help=f"subset of {', '.join(MODELS)}")
    parser.add_argument("--set", action="append", default=[], metavar="MODEL.KEY=JSON",
                        help="a model setting, e.g. sasrec.max_len=100 or rectools.epochs=50")
    parser.add_argument("--skip-new-items", action="store_true")
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "results")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if bad := [m for m in models if m not in MODELS]:
        parser.error(f"unknown model(s) {bad}")
    settings: dict[str, dict[str, Any]] = {}
    for item in args.set:
        key, _, value = item.partition("=")
        model, _, field = key.partition(".")
        settings.setdefault(model, {})[field] = json.loads(value)
    for name in ("sasrec", "ncf"):  # no progress bars in a bench log
        settings.setdefault(name, {}).setdefault("progress", False)
    settings["sasrec-ids"] = {**settings["sasrec"], **settings.get("sasrec-ids", {})}  # same settings, no content

    from tlrec.services.movielens import import_movielens

    with tempfile.TemporaryDirectory(prefix="tlrec-next-") as tmp:
        catalog_path, interactions_path = import_movielens(args.data, Path(tmp))
        catalog = load_catalog(catalog_path)
        interactions = load_interactions(interactions_path, catalog=catalog)
        results: dict[str, Any] = {
            "dataset": args.data.name,
            "command": "python bench/next_item.py " + " ".join(sys.argv[1:] if argv is None else argv),
            "date": dt.datetime.now().isoformat(timespec="seconds"),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
        }
        start = time.perf_counter()
        results["warm"] = warm(catalog, interactions, args.vectors, models, settings, Path(tmp))
        if not args.skip_new_items:
            results["new_items"] = new_items(catalog, interactions, args.vectors, settings)
        results["total_seconds"] = round(time.perf_counter() - start, 1)
    md = render(results)
    Console(width=160).print(md)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "next_item.md").write_text(md + f"\nTotal {results['total_seconds']} s.\n")
    (args.out / "next_item.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
