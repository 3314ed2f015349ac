"""The jobs behind `tlrec embed`, `tlrec train` and `tlrec evaluate`.

Each job reads files, validates them (one-line ``DataError`` naming file, row and
column), and writes its output atomically: a failed job leaves nothing half-written.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from tlrec.embeddings.embed_catalog import embed_catalog
from tlrec.embeddings.registry import DEFAULTS
from tlrec.embeddings.vectors import ItemVectors, load_item_vectors
from tlrec.errors import UsageError
from tlrec.files import sha256_file, write_json_atomic
from tlrec.ray_cluster import TaskRunner, in_process, task_runner
from tlrec.serving.served_model import ServedModel
from tlrec.tables import Columns
from tlrec.training.artifacts import new_version, staged_version
from tlrec.training.data import load_catalog, load_interactions
from tlrec.training.evaluate import evaluate_segments, write_report
from tlrec.training.metrics import MRR_DEPTH, next_item_metrics
from tlrec.training.selection import AUTO, TASKS, candidate_configs, check_task
from tlrec.training.train import check_model_choice, train_into
from tlrec.training.transfer import (
    TransferReport,
    plot_gains,
    render_markdown,
    select_modalities,
    transfer_report,
)
from tlrec.training.transfer_next import next_item_transfer_report

logger = logging.getLogger(__name__)

VECTORS_IN_ARTIFACT = "item_vectors.parquet"


def embed_job(
    catalog_path: Path,
    out: Path,
    text: str | None = DEFAULTS["text"],
    image: str | None = DEFAULTS["image"],
    audio: str | None = DEFAULTS["audio"],
    ray_address: str | None = "local",
) -> Path:
    """Embed a catalog file into an item-vectors Parquet (+ manifest) at ``out``.

    The catalog is validated first (one-line ``DataError``). With ``ray_address``
    ("local", "auto" or a cluster address) the encoders run as a Ray Data job
    (``embeddings.batch``; a Parquet catalog is streamed); with None, in this process.
    """
    catalog = load_catalog(catalog_path)
    if ray_address is None:
        return embed_catalog(catalog, out, text=text, image=image, audio=audio)
    from tlrec.embeddings.batch import embed_catalog_ray

    source: pl.DataFrame | Path = catalog
    if Path(catalog_path).suffix.lower() in (".parquet", ".pq"):
        source = Path(catalog_path)  # streamed by Ray; media paths resolve against its folder
    return embed_catalog_ray(source, out, address=ray_address, text=text, image=image, audio=audio,
                             base_dir=Path(catalog_path).resolve().parent)


def input_record(path: Path) -> dict[str, str]:
    return {"path": str(Path(path).resolve()), "sha256": sha256_file(Path(path))}


def train_job(
    catalog_path: Path,
    interactions_path: Path,
    artifacts_root: Path,
    vectors_path: Path | None = None,
    model: str = AUTO,
    strict: bool = False,
    config: dict[str, Any] | None = None,
    modalities: str = "all",
    task: str = "recommend",
    ray_address: str | None = None,
) -> Path:
    """Validate inputs, embed the catalog if no vectors are given, fit, write the version (index included), publish.

    ``model``: a registry name, or ``auto`` (the default): candidates compared on a validation
    split of these interactions, the best served (``training.selection``). ``task``:
    ``recommend`` or ``next-item`` (``selection.TASKS``: candidates and validation split).

    ``modalities``: "all", a comma list (e.g. "text,image"), or "auto": measure the
    transfer of each modality on a time-based split of these interactions
    (``training.transfer``) and drop those that transfer negatively.
    ``ray_address``: the candidates of ``auto`` and the variants of ``--modalities auto`` run as
    parallel Ray tasks there (``tlrec.ray_cluster.task_runner``), with the in-process result.
    Returns the published version directory; ``artifacts_root/current`` names it.
    """
    wants_vectors = check_model_choice(model, config, task)  # a bad task, model name or config fails first
    catalog = load_catalog(catalog_path)
    interactions = load_interactions(interactions_path, catalog=catalog, strict=strict)
    vectors: ItemVectors | None = None
    if wants_vectors and vectors_path is not None:
        vectors = load_item_vectors(vectors_path)
    manifest: dict[str, Any] = {
        "inputs": {"catalog": input_record(catalog_path), "interactions": input_record(interactions_path)}
    }
    if vectors_path is not None:
        manifest["inputs"]["vectors"] = input_record(vectors_path)
    version = new_version()
    artifacts_root.mkdir(parents=True, exist_ok=True)
    with staged_version(artifacts_root, version=version, manifest=manifest) as stage, \
            task_runner(ray_address) as run:
        if wants_vectors and vectors is None:
            vectors = load_item_vectors(embed_catalog(catalog, stage / VECTORS_IN_ARTIFACT))
        if vectors is not None:
            manifest["encoders"] = vectors.manifest.get("encoders")
            vectors = _choose_modalities(catalog, interactions, vectors, modalities, model, config, manifest, task,
                                         run)
        _, info = train_into(stage, catalog, interactions, vectors, model, config, task, run)  # the complete version
        manifest.update(info)
    logger.info("published artifact %s", artifacts_root / version)
    return artifacts_root / version


def _choose_modalities(catalog: pl.DataFrame, interactions: pl.DataFrame, vectors: ItemVectors, modalities: str,
                       model: str, config: dict[str, Any] | None, manifest: dict[str, Any], task: str = "recommend",
                       run: TaskRunner = in_process) -> ItemVectors | None:
    """Apply ``--modalities`` to ``vectors``; "auto" runs the transfer measurement first (with NCF's settings:
    ``--set ncf.KEY=VALUE`` and shared keys under ``--model auto``)."""
    have = list(vectors.blocks)
    if modalities == "all":
        return vectors
    if modalities == "auto":
        if model not in ("ncf", AUTO):
            raise UsageError("--modalities auto measures transfer with NCF; use it with --model ncf or auto")
        ncf_config = candidate_configs(config, TASKS[task][0])["ncf"] if model == AUTO else config
        report = transfer_report(catalog, interactions, vectors, config=ncf_config, run=run)
        keep = report.keep_modalities()
        manifest["transfer"] = report.to_dict()
        dropped = [m for m in have if m not in keep]
        logger.info("--modalities auto: keeping %s%s", ", ".join(keep) or "no modality",
                    f"; dropped (negative transfer): {', '.join(dropped)}" if dropped else "")
    else:
        keep = [m.strip() for m in modalities.split(",") if m.strip()]
        unknown = [m for m in keep if m not in have]
        if unknown:
            raise UsageError(f"--modalities: {', '.join(unknown)} not in the item vectors (they have: "
                             f"{', '.join(have)}); use all, auto or a comma list of those")
    manifest["modalities"] = keep
    return select_modalities(vectors, keep)


def transfer_job(catalog_path: Path, interactions_path: Path, vectors_path: Path, out: Path | None,
                 config: dict[str, Any] | None = None, strict: bool = False,
                 task: str = "recommend", ray_address: str | None = None) -> TransferReport:
    """`tlrec evaluate --transfer-report`: train per content variant, measure gains, write the report
    (``task="next-item"``: the sequence model, ``training.transfer_next``; ``ray_address``: the
    variants as parallel Ray tasks there)."""
    check_task(task)
    catalog = load_catalog(catalog_path)
    interactions = load_interactions(interactions_path, catalog=catalog, strict=strict)
    vectors = load_item_vectors(vectors_path)
    measure = next_item_transfer_report if task == "next-item" else transfer_report
    with task_runner(ray_address) as run:
        report = measure(catalog, interactions, vectors, config=config, run=run)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "transfer.md").write_text(render_markdown(report) + "\n![gains](transfer_gains.png)\n")
        write_json_atomic(out / "transfer.json", report.to_dict())
        plot_gains(report, out / "transfer_gains.png")
        logger.info("wrote %s", out / "transfer.md")
    return report


def evaluate_job(
    artifacts: Path,
    interactions_path: Path,
    ks: Sequence[int] = (10, 20),
    exclude_seen: bool = True,
    report: Path | None = None,
    task: str = "recommend",
) -> dict[str, dict[str, float]]:
    """Rank all items for every user in the test interactions and score the lists.

    Users unknown to the model get the popular items (and count, like everyone).
    Returns ``{"all": metrics, "<segment>": metrics}`` (``training.evaluate``: users
    by training activity, with novelty); ``report`` writes Markdown + PNG there.
    ``task="next-item"``: ``{model name: next_item_metrics}`` of each user's first test event.
    """
    if not ks or min(ks) < 1:
        raise UsageError(f"--k values must be >= 1, got {list(ks)}")
    check_task(task)
    served = ServedModel.load(artifacts)
    test = load_interactions(interactions_path)
    known_items = test[Columns.ITEM].is_in(list(served.items.external))
    if (~known_items).any():
        logger.warning("%d test interactions name items the model does not know; dropped", int((~known_items).sum()))
        test = test.filter(known_items)
    seen = served.seen.tocoo()
    train = pl.DataFrame({Columns.USER: np.asarray(served.users.external, dtype=object)[seen.row].tolist(),
                          Columns.ITEM: np.asarray(served.items.external, dtype=object)[seen.col].tolist()},
                         schema={Columns.USER: pl.String, Columns.ITEM: pl.String})
    _warn_if_trained_on(test, train, interactions_path, exclude_seen)
    if task == "next-item":
        results = {served.model.name: evaluate_next_item(served, test, ks, exclude_seen)}
        if report is not None:
            report.mkdir(parents=True, exist_ok=True)
            names = [*(f"{m}@{k}" for k in ks for m in ("hit_rate", "ndcg")), "mrr", "users"]
            lines = [f"# Next-item evaluation of {served.version}", "",
                     f"Test interactions: `{interactions_path}`; each user's earliest test event is the target; "
                     f"full ranking, seen items {'excluded' if exclude_seen else 'kept'}; MRR within the top "
                     f"{MRR_DEPTH}.", "", "| model | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
            lines += [f"| {m} | " + " | ".join(f"{r[n]:.4f}" if n != "users" else str(int(r[n])) for n in names) + " |"
                      for m, r in results.items()]
            write_json_atomic(report / "next_item.json", results)
            (report / "report.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
        return results
    users = test[Columns.USER].unique(maintain_order=True).to_list()
    recs = served.recommend(users, max(ks), exclude_seen=exclude_seen)
    ranked = {r.user_id: r.item_ids for r in recs}
    results = evaluate_segments(ranked, test, train, ks=ks, n_items=len(served.items))
    if report is not None:
        path = write_report({served.model.name: results}, report, f"Evaluation of {served.version}", ks,
                            notes=[f"Test interactions: `{interactions_path}`; full ranking, "
                                   f"seen items {'excluded' if exclude_seen else 'kept'}."])
        logger.info("wrote %s", path)
    return results


#: Above this share of test interactions on pairs the model was trained on, the test set is probably training data.
TRAINED_ON_WARNING = 0.5


def _warn_if_trained_on(test: pl.DataFrame, train_pairs: pl.DataFrame, path: Path, exclude_seen: bool) -> float:
    """Log a warning when most test interactions are (user, item) pairs of the training data (``user_id,
    item_id``): with seen items excluded they can never be hits, so every figure is near zero. Returns the share."""
    if test.is_empty():
        return 0.0
    pairs = test.select(pl.col(Columns.USER).cast(pl.String), pl.col(Columns.ITEM).cast(pl.String))
    share = pairs.join(train_pairs, on=[Columns.USER, Columns.ITEM], how="semi").height / pairs.height
    if share >= TRAINED_ON_WARNING:
        consequence = ("they are excluded from the rankings as seen, so they cannot count as hits and the figures "
                       "are near zero" if exclude_seen else "the figures measure recall of training data")
        logger.warning("%s: %.0f%% of the test interactions are user-item pairs the model was trained on: %s. "
                       "Evaluate on held-out interactions: `tlrec split --interactions ALL --out DIR`, train on "
                       "DIR/train.parquet, evaluate on DIR/test.parquet", path, 100 * share, consequence)
    return share


def evaluate_next_item(served: ServedModel, test: pl.DataFrame, ks: Sequence[int],
                       exclude_seen: bool = True) -> dict[str, float]:
    """HR@k, NDCG@k and MRR of each test user's next event: their earliest test event (full ranking)."""
    firsts = (test.with_row_index("_row").sort(Columns.USER, Columns.TIMESTAMP, "_row")
              .unique(Columns.USER, keep="first", maintain_order=True))
    targets = dict(zip(firsts[Columns.USER].to_list(), firsts[Columns.ITEM].to_list()))
    recs = served.recommend(list(targets), min(max(*ks, MRR_DEPTH), len(served.items)), exclude_seen=exclude_seen)
    return next_item_metrics({r.user_id: r.item_ids for r in recs}, targets, ks)


def metrics_table(rows: dict[str, dict[str, float]], ks: Sequence[int]) -> "rich.table.Table":  # noqa: F821
    """A rich table: one row per metric@k, one column per model."""
    from rich.table import Table

    table = Table(title="evaluation (full ranking, seen items excluded)")
    table.add_column("metric")
    for model in rows:
        table.add_column(model, justify="right")
    for k in ks:
        for metric in ("ndcg", "recall", "hit_rate", "map", "coverage", "novelty"):
            name = f"{metric}@{k}"
            if any(name in m for m in rows.values()):
                table.add_row(name, *(f"{m[name]:.4f}" if name in m else "" for m in rows.values()))
    if any("mrr" in m for m in rows.values()):
        table.add_row(f"mrr (top {MRR_DEPTH})", *(f"{m['mrr']:.4f}" if "mrr" in m else "" for m in rows.values()))
    table.add_row("users", *(str(int(m.get("users", 0))) for m in rows.values()))
    return table


def probability_table(rows: dict[str, dict[str, float]]) -> "rich.table.Table":  # noqa: F821
    """A rich table of ``probability_metrics`` per segment (one row each)."""
    from rich.table import Table

    names = ("roc_auc", "pr_auc", "log_loss", "brier", "ece", "base_rate")
    table = Table(title="probabilities (ECE: 15 bins)")
    for name in ("segment", *names, "n"):
        table.add_column(name, justify="left" if name == "segment" else "right")
    for segment, m in rows.items():
        table.add_row(segment, *(f"{m[n]:.4f}" for n in names), str(int(m["n"])))
    return table
