"""`tlrec demo`: the whole system on the built-in demo catalog, end to end.

Leaves in ``out``: the catalog (with images and audio), interactions, the planted
truth, item vectors, a temporal train/test split, artifacts (popularity, and the model
``tlrec train`` chooses by validation: ``current``) and ``evaluation.json``, so every other
command can be tried on them. Prints the validation table of the model selection, an
evaluation table and sample recommendations beside each history.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path

import polars as pl
from rich.console import Console
from rich.table import Table

from tlrec.embeddings.embed_catalog import embed_catalog
from tlrec.embeddings.vectors import load_item_vectors
from tlrec.serving.served_model import ServedModel
from tlrec.files import write_json_atomic, write_parquet_atomic
from tlrec.training.artifacts import read_json
from tlrec.services.demo_catalog import generate_demo
from tlrec.services.jobs import evaluate_job, metrics_table, train_job
from tlrec.tables import Columns
from tlrec.training.data import load_catalog, load_interactions
from tlrec.training.splits import temporal_split

logger = logging.getLogger(__name__)

KS = (10, 20)
#: The evaluation's name for the model `tlrec train` chose.
SERVED = "served"


@dataclass
class DemoResult:
    """Where the demo left its files, and the evaluation per model."""

    out: Path
    catalog: Path
    interactions: Path
    vectors: Path
    train: Path
    test: Path
    artifacts: Path
    metrics: dict[str, dict[str, float]]


def run_demo(out: Path, n_items: int = 2000, n_users: int = 1000, seed: int = 0,
             console: Console | None = None) -> DemoResult:
    """Generate, embed, split, train popularity and the chosen model, evaluate, show recommendations."""
    console = console or Console(stderr=False)
    start = time.perf_counter()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)

    console.rule("[bold]1/5 demo catalog")
    files = generate_demo(out, n_items=n_items, n_users=n_users, seed=seed)
    catalog = load_catalog(files.catalog)
    interactions = load_interactions(files.interactions, catalog=catalog, strict=True)
    console.print(f"{catalog.height} items ({_domains(catalog)}), {interactions[Columns.USER].n_unique()} users, "
                  f"{interactions.height} interactions -> {out}")

    console.rule("[bold]2/5 item vectors from pre-trained encoders")
    vectors_path = embed_catalog(catalog, out / "vectors.parquet")
    vectors = load_item_vectors(vectors_path)
    console.print(_encoders_table(vectors.manifest.get("encoders") or {}))
    console.print(f"{len(vectors.item_ids)} items -> {vectors.fused.shape[1]}-d fused vectors")

    console.rule("[bold]3/5 temporal split (each user's last 20% of events to test)")
    train, test = temporal_split(interactions, test_fraction=0.2)
    train_path, test_path = out / "train.parquet", out / "test.parquet"
    write_parquet_atomic(train, train_path)
    write_parquet_atomic(test, test_path)
    console.print(f"train {train.height} / test {test.height} interactions")

    console.rule("[bold]4/5 training (candidates compared on a validation split of the training events)")
    artifacts = out / "artifacts"
    versions = {"popularity": train_job(files.catalog, train_path, artifacts, model="popularity")}
    versions[SERVED] = train_job(files.catalog, train_path, artifacts, vectors_path=vectors_path)
    selection = read_json(versions[SERVED] / "manifest.json").get("selection") or {}
    console.print(_selection_table(selection))
    console.print(f"served: [bold]{selection.get('choice')}[/bold] ({versions[SERVED].name})")

    console.rule("[bold]5/5 evaluation on the held-out test events")
    metrics = {model: evaluate_job(path, test_path, KS)["all"] for model, path in versions.items()}
    console.print(metrics_table(metrics, KS))
    ratio = metrics[SERVED]["ndcg@10"] / max(metrics["popularity"]["ndcg@10"], 1e-12)
    console.print(f"served NDCG@10 / popularity NDCG@10 = [bold]{ratio:.2f}x[/bold]")
    write_json_atomic(out / "evaluation.json", {"metrics": metrics, "served_model": selection.get("choice"),
                                                "ndcg@10_ratio_served_over_popularity": ratio})

    _show_samples(console, ServedModel.load(artifacts), catalog, train, files.truth)
    console.print(f"done in {time.perf_counter() - start:.0f}s. Try:\n"
                  f"  tlrec evaluate --artifacts {artifacts} --interactions {test_path}\n"
                  f"  TLREC_API_KEYS=dev-key tlrec serve --artifacts {artifacts}   (or --insecure on a laptop)")
    return DemoResult(out, files.catalog, files.interactions, vectors_path, train_path, test_path, artifacts, metrics)


def _selection_table(selection: dict) -> Table:
    """The validation table of ``tlrec train --model auto`` (the manifest's ``selection``)."""
    split = selection.get("validation") or {}
    table = Table(title=f"model selection ({split.get('by', '?')} validation split)")
    for col, justify in (("candidate", "left"), ("val NDCG@10", "right"), ("fit s", "right"), ("note", "left")):
        table.add_column(col, justify=justify)  # type: ignore[arg-type]
    for c in selection.get("candidates") or []:
        score = c.get("validation_ndcg")
        served = " [bold](served)[/bold]" if c.get("name") == selection.get("choice") else ""
        table.add_row(c.get("name", "?"), "-" if score is None else f"{score:.4f}", f"{c.get('fit_seconds', 0):.1f}",
                      f"{c.get('note', '')}{served}")
    return table


def _encoders_table(cards: dict[str, dict]) -> Table:
    """The registry's model cards of the encoders the demo used."""
    table = Table(title="pre-trained encoders (frozen)")
    for col in ("modality", "encoder", "dim", "params", "weights from"):
        table.add_column(col)
    for modality, card in cards.items():
        table.add_row(modality, card.get("name", "?"), str(card.get("dim", "?")),
                      f"{card.get('params', 0) / 1e6:.1f}M", str(card.get("source", "")))
    return table


def _domains(catalog: pl.DataFrame) -> str:
    if "domain" not in catalog.columns:
        return "one domain"
    counts = catalog.group_by("domain").len().sort("domain")
    return ", ".join(f"{n} {d}" for d, n in counts.iter_rows())


def _show_samples(console: Console, served: ServedModel, catalog: pl.DataFrame, train: pl.DataFrame,
                  truth_dir: Path, n_users: int = 3, n_show: int = 5) -> None:
    """Sample users: their last items beside their top recommendations (planted-taste hits marked)."""
    titles = dict(zip(catalog[Columns.ITEM].to_list(), catalog[Columns.TITLE].to_list()))
    topic_of, tastes = _truth(truth_dir)
    users = train.group_by(Columns.USER).len().filter(pl.col("len") >= 20).sort(Columns.USER)[Columns.USER]
    users = users.head(n_users).to_list()
    recs = served.recommend(users, n_show, exclude_seen=True)
    for user, rec in zip(users, recs):
        history = train.filter(pl.col(Columns.USER) == user).sort(Columns.TIMESTAMP).tail(n_show)[Columns.ITEM]
        liked = tastes.get(user, set())
        table = Table(title=f"user {user}  (planted tastes: {', '.join(sorted(liked)) or '?'})", expand=True)
        table.add_column("recent history")
        table.add_column("recommended")
        for i in range(n_show):
            h = history[i] if i < len(history) else None
            r = rec.item_ids[i] if i < len(rec.item_ids) else None
            table.add_row(_label(h, titles, topic_of, liked), _label(r, titles, topic_of, liked))
        console.print(table)


def _label(item: str | None, titles: dict, topic_of: dict, liked: set) -> str:
    if item is None:
        return ""
    topic = topic_of.get(item)
    mark = "[green]*[/green] " if topic in liked else "  "
    return f"{mark}{titles.get(item, item)} [dim]({topic or item})[/dim]"


def _truth(truth_dir: Path) -> tuple[dict[str, str], dict[str, set[str]]]:
    try:
        items = pl.read_parquet(truth_dir / "item_topics.parquet")
        users = pl.read_parquet(truth_dir / "user_tastes.parquet")
    except (OSError, pl.exceptions.PolarsError):
        return {}, {}
    tastes: dict[str, set[str]] = {}
    for user, topic in users.select("user_id", "topic").iter_rows():
        tastes.setdefault(user, set()).add(topic)
    return dict(zip(items["item_id"].to_list(), items["topic"].to_list())), tastes
