"""Choose a pre-trained encoder: list the model cards, and compare candidates on the user's own data.

``compare_encoders`` answers "which encoder should I use for *my* catalog?" with
three numbers per candidate:

* **speed**: items/s encoding the catalog's items of the encoder's modality
  (model load and a short warm-up excluded);
* **size**: parameters and MB of weights on disk (from the model card);
* **accuracy**: cold-item Recall@k / NDCG@k of a content-only recommender
  (:class:`training.models.content.ContentProfileModel`). A seeded share of
  items leaves training with all their interactions
  (:func:`training.splits.cold_item_split`); each user's profile is the mean of
  the encoder's vectors of their training items; the held-out (cold) items are
  ranked by cosine to the profile, among the cold items only, and scored with
  :func:`training.metrics.evaluate_rankings` on the held-out interactions.

Items whose input is missing or fails to encode get no vector: they add
nothing to a profile and score 0 as candidates. Every encoder sees the same
split. Only test users with at least one training interaction are evaluated
(a user with none has no profile, whatever the encoder).

Outputs: a rich table, ``encoders_compare.md``, ``encoders_compare.json`` and
``encoders_compare.png`` (accuracy against speed, log x axis, one labelled point
per encoder), each written atomically.
"""

from __future__ import annotations

import io
import json
import logging
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Sequence

import numpy as np
import polars as pl

from tlrec.errors import UsageError
from tlrec.tables import Columns, DataError

if TYPE_CHECKING:  # pragma: no cover
    from rich.table import Table

    from tlrec.embeddings.base import ModelCard

logger = logging.getLogger(__name__)

__all__ = [
    "CompareReport",
    "EncoderResult",
    "cards_table",
    "compare_encoders",
    "compare_table",
    "default_encoders",
    "list_cards",
    "write_report",
]

REPORT_STEM = "encoders_compare"
_WARMUP_ITEMS = 4
#: Items timed for the speed column when every vector was reused from a vectors file.
SPEED_SAMPLE = 64


# --------------------------------------------------------------------------- cards


def list_cards() -> list[ModelCard]:
    """Model cards of the built-in encoders (loads each encoder once)."""
    from tlrec.embeddings.registry import list_cards as registry_cards

    return registry_cards()


def cards_table(cards: Sequence[ModelCard]) -> Table:
    """A rich table: one row per model card."""
    from rich.table import Table

    table = Table(title="pre-trained encoders (tlrec encoders compare measures them on your data)")
    for col, kw in (("name", {"no_wrap": True}), ("modality", {}), ("dim", {"justify": "right"}),
                    ("params", {"justify": "right"}), ("size MB", {"justify": "right"}), ("framework", {}),
                    ("file format", {}), ("input", {}), ("source", {})):
        table.add_column(col, **kw)
    for c in cards:
        table.add_row(c.name, c.modality, str(c.dim), f"{c.params / 1e6:.2f}M", f"{c.size_mb:.1f}", c.framework,
                      c.file_format, c.input_spec, c.source)
    return table


# --------------------------------------------------------------------------- inputs


def default_encoders(catalog: pl.DataFrame) -> list[str]:
    """Registry defaults (``tlrec embed``'s) for the modalities the catalog has input for; the larger
    ones (``crepe-full``: about 40x slower than ``crepe-tiny``) are compared when named."""
    from tlrec.embeddings.base import MODALITIES
    from tlrec.embeddings.catalog_inputs import has_input
    from tlrec.embeddings.registry import DEFAULTS

    return [DEFAULTS[modality] for modality in MODALITIES if has_input(catalog, modality)]


# --------------------------------------------------------------------------- comparison


@dataclass
class EncoderResult:
    """One encoder's figures on the user's data (``recall`` / ``ndcg`` at the report's ``k``)."""

    encoder: str
    modality: str
    dim: int
    params: int
    size_mb: float
    framework: str
    file_format: str
    version: str
    items_with_input: int
    items_failed: int
    coverage: float  # share of catalog items that got a vector
    load_s: float  # 0 if the encoder was already loaded in this process
    encode_s: float
    items_per_s: float
    recall: float
    ndcg: float
    metrics: dict[str, float] = field(default_factory=dict)
    items_reused: int = 0  # vectors taken from the given vectors file (speed then timed on a sample)


@dataclass
class CompareReport:
    """Everything ``compare_encoders`` measured (JSON-serialisable via :meth:`to_dict`)."""

    catalog: str
    interactions: str
    k: int
    seed: int
    cold_fraction: float
    n_items: int
    n_interactions: int
    n_cold_items: int
    n_test_users: int
    n_users_without_profile: int
    random_recall: float  # expected Recall@k of a random ranking of the cold items
    results: list[EncoderResult]

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["results"] = [asdict(r) for r in self.results]
        return out


def _split(interactions: pl.DataFrame, fraction: float, seed: int) -> tuple[pl.DataFrame, pl.DataFrame, list[str]]:
    from tlrec.training.splits import cold_item_split

    return cold_item_split(interactions, fraction=fraction, seed=seed)


def _encode_timed(encoder: Any, inputs: list[Any], batch_size: int, progress: bool) -> tuple[np.ndarray, float]:
    """Encode ``inputs`` after a short untimed warm-up; returns ``(vectors, seconds)``."""
    encoder.encode(inputs[:_WARMUP_ITEMS], batch_size=batch_size)
    start = time.perf_counter()
    vectors = encoder.encode(inputs, batch_size=batch_size, progress=progress)
    return np.asarray(vectors, dtype=np.float32), time.perf_counter() - start


def _encode_estimated(encoder: Any, inputs: list[Any], batch_size: int, progress: bool) -> tuple[np.ndarray, float]:
    """``_encode_timed``, after logging an estimate of the time from a first timed batch."""
    first = inputs[:batch_size]
    start = time.perf_counter()
    encoder.encode(first, batch_size=batch_size)  # also the warm-up
    per_item = (time.perf_counter() - start) / max(1, len(first))
    logger.info("%s: %d items to encode, about %s (%.2f s per item on a first batch)", encoder.card.name,
                len(inputs), _duration(per_item * len(inputs)), per_item)
    start = time.perf_counter()
    vectors = encoder.encode(inputs, batch_size=batch_size, progress=progress)
    return np.asarray(vectors, dtype=np.float32), time.perf_counter() - start


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


def _previous_vectors(path: str | Path | None) -> Any:
    """A ``PreviousVectors`` index of ``path`` (``None`` for no path); DataError if it is not a vectors file."""
    if path is None:
        return None
    from tlrec.embeddings.embed_catalog import PreviousVectors

    previous = PreviousVectors.open(path)
    if previous is None:
        raise DataError(f"{path}: not a readable item-vectors file (from `tlrec embed`)")
    return previous


def _evaluate(vectors: np.ndarray, data: Any, cold_idx: np.ndarray, test: pl.DataFrame, k: int) -> dict[str, float]:
    """Cold-item metrics of the content-only model on ``vectors`` (``[n_items, d]``, zero rows = none)."""
    from tlrec.training.metrics import evaluate_rankings
    from tlrec.training.models.content import ContentProfileModel

    model = ContentProfileModel().fit(data, vectors)
    users = np.arange(data.n_users)
    items, _ = model.recommend(users, k, candidates=cold_idx)
    ext_users = data.users.to_external(users)
    recs = {u: data.items.to_external(row[row >= 0]) for u, row in zip(ext_users, items)}
    return evaluate_rankings(recs, test, ks=[k])


def compare_encoders(catalog_path: str | Path, interactions_path: str | Path,
                     encoders: Sequence[str] | None = None, *, k: int = 20, cold_fraction: float = 0.2,
                     seed: int = 0, batch_size: int = 32, progress: bool = False,
                     vectors_path: str | Path | None = None,
                     on_result: Callable[[CompareReport], None] | None = None) -> CompareReport:
    """Measure speed, size and cold-item accuracy of each encoder on the given catalog.

    Vectors of an existing vectors file (``vectors_path``, from ``tlrec embed``) are reused where
    its encoder version and the item's content hash match: only the other items are encoded, and
    speed is timed on a sample of ``SPEED_SAMPLE`` items. Before encoding, each encoder logs an
    estimate of its time (from a first timed batch); ``on_result`` gets the report so far after
    each encoder, so a long comparison that is stopped keeps what it measured.

    Args:
        catalog_path, interactions_path: files read and validated with
            :func:`training.data.load_catalog` / :func:`training.data.load_interactions`
            (interactions naming unknown items are dropped with a warning).
        encoders: registry names (``minilm``, ``efficientnet-lite0``, ``crepe-tiny``,
            ``crepe-full``, ``hf:<dir-or-id>`` ...); default :func:`default_encoders`.
        k: cut-off of Recall@k / NDCG@k.
        cold_fraction, seed: share of items held out cold, and the split's seed.
        batch_size: encoder batch size.
        progress: show a progress bar while encoding.
        vectors_path: an item-vectors Parquet to reuse vectors from (optional).
        on_result: called with the report so far after each encoder.

    Returns:
        A :class:`CompareReport`, encoders in the order given.

    Raises:
        DataError: bad catalog or interactions file (names file, row, column).
        ValueError: unknown encoder name (lists the allowed ones), an encoder
            whose modality has no input in the catalog, bad ``k`` / fraction.
        OSError: an ``hf:`` model that cannot be loaded.
    """
    from tlrec.embeddings.catalog_inputs import content_hashes, encoder_inputs
    from tlrec.embeddings.registry import canonical_name, get_encoder, modality_of
    from tlrec.training.data import load_catalog, load_interactions
    from tlrec.training.id_map import IdMap
    from tlrec.training.interaction_data import InteractionData

    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise UsageError(f"k must be an integer >= 1, got {k!r}")
    catalog = load_catalog(catalog_path)
    interactions = load_interactions(interactions_path, catalog=catalog)
    if interactions.height == 0:
        raise DataError(f"{Path(interactions_path).name}: no interaction names an item of the catalog")
    names = [canonical_name(n) for n in (encoders if encoders else default_encoders(catalog))]
    if not names:
        raise DataError(f"{Path(catalog_path).name}: no item has text, image or audio input to encode")
    names = list(dict.fromkeys(names))
    inputs_by_modality: dict[str, list[Any]] = {}
    for name in names:
        modality = modality_of(name)
        if modality not in inputs_by_modality:
            inputs_by_modality[modality] = encoder_inputs(catalog, modality, None)  # paths made absolute on load
        if all(v is None for v in inputs_by_modality[modality]):
            raise DataError(f"encoder {name!r} reads {modality}, but no item of {Path(catalog_path).name} "
                             f"has {modality} input")

    train, test, cold = _split(interactions, cold_fraction, seed)
    items = IdMap(catalog[Columns.ITEM].to_list())
    data = InteractionData.build(train, items)
    test_users = test[Columns.USER].unique()
    known = test_users.is_in(pl.Series(data.users.external.tolist(), dtype=pl.String).implode())
    test_eval = test.filter(pl.col(Columns.USER).is_in(test_users.filter(known).implode()))
    n_without = int((~known).sum())
    if n_without:
        logger.info("%d of %d test users have no training interaction (no profile) and are not evaluated",
                    n_without, test_users.len())
    if k >= len(cold):
        logger.warning("k=%d >= %d cold items: every cold item is in every top-k, so Recall@%d is 1 for "
                       "every encoder; use a larger catalog or a smaller k", k, len(cold), k)
    cold_idx = items.to_internal(cold)
    random_recall = min(k, len(cold)) / len(cold)  # each relevant cold item is in a random top-k w.p. k/n

    previous = _previous_vectors(vectors_path)
    results: list[EncoderResult] = []
    report = CompareReport(
        catalog=str(catalog_path), interactions=str(interactions_path), k=k, seed=seed,
        cold_fraction=cold_fraction, n_items=len(items), n_interactions=interactions.height,
        n_cold_items=len(cold), n_test_users=int(test_eval[Columns.USER].n_unique()),
        n_users_without_profile=n_without, random_recall=random_recall, results=results,
    )
    item_ids = items.external.tolist()
    for name in names:
        modality = modality_of(name)
        inputs = inputs_by_modality[modality]
        rows = [i for i, v in enumerate(inputs) if v is not None]
        start = time.perf_counter()
        encoder = get_encoder(name)
        load_s = time.perf_counter() - start
        card = encoder.card
        reused: dict[int, np.ndarray] = {}
        if previous is not None:  # same encoder version and same input bytes: the same vector
            reused = previous.lookup(modality, card.version, item_ids, content_hashes(modality, inputs))
        todo = [i for i in rows if i not in reused]
        vectors = np.full((len(items), card.dim), np.nan, dtype=np.float32)
        for i, vec in reused.items():
            vectors[i] = vec
        if todo:
            vectors[todo], encode_s = _encode_estimated(encoder, [inputs[i] for i in todo], batch_size, progress)
            timed = len(todo)
        else:  # every vector reused: time a sample for the speed column
            timed = min(SPEED_SAMPLE, len(rows))
            _, encode_s = _encode_timed(encoder, [inputs[i] for i in rows[:timed]], batch_size, False)
        logger.info("%s (%s, %d-d): %d items encoded, %d reused from %s", card.name, modality, card.dim, len(todo),
                    len(reused), vectors_path)
        failed = np.isnan(vectors).any(axis=1)
        vectors[failed] = 0.0
        metrics = _evaluate(vectors, data, cold_idx, test_eval, k)
        n_failed = int(failed[rows].sum())
        results.append(EncoderResult(
            encoder=name, modality=modality, dim=card.dim, params=card.params, size_mb=card.size_mb,
            framework=card.framework, file_format=card.file_format, version=card.version,
            items_with_input=len(rows), items_failed=n_failed,
            coverage=(len(rows) - n_failed) / max(1, len(items)),
            load_s=load_s, encode_s=encode_s, items_per_s=timed / max(encode_s, 1e-9),
            recall=float(metrics[f"recall@{k}"]), ndcg=float(metrics[f"ndcg@{k}"]),
            metrics={key: float(v) for key, v in metrics.items()}, items_reused=len(reused),
        ))
        logger.info("%s: %.1f items/s, recall@%d %.4f, ndcg@%d %.4f", name, results[-1].items_per_s, k,
                    results[-1].recall, k, results[-1].ndcg)
        if on_result is not None:
            on_result(report)
    return report


# --------------------------------------------------------------------------- output

_HEADERS = ("encoder", "modality", "dim", "params (M)", "size MB", "items/s", "recall@{k}", "ndcg@{k}",
            "coverage")


def _row(r: EncoderResult) -> list[str]:
    return [r.encoder, r.modality, str(r.dim), f"{r.params / 1e6:.2f}", f"{r.size_mb:.1f}", f"{r.items_per_s:.1f}",
            f"{r.recall:.4f}", f"{r.ndcg:.4f}", f"{r.coverage:.0%}"]


def compare_table(report: CompareReport) -> Table:
    """A rich table: one row per encoder."""
    from rich.table import Table

    table = Table(title=f"encoders on {Path(report.catalog).name}: cold-item accuracy "
                        f"({report.n_cold_items} cold items, {report.n_test_users} users), speed, size",
                  caption=f"random ranking: recall@{report.k} = {report.random_recall:.4f}")
    for i, head in enumerate(_HEADERS):
        table.add_column(head.format(k=report.k), justify="left" if i < 2 else "right", no_wrap=i == 0)
    for r in report.results:
        table.add_row(*_row(r))
    return table


def to_markdown(report: CompareReport) -> str:
    """The report as Markdown (setup, table, how to read it)."""
    k = report.k
    lines = [
        f"# Encoders compared on {Path(report.catalog).name}",
        "",
        f"Catalog `{report.catalog}` ({report.n_items} items), interactions `{report.interactions}` "
        f"({report.n_interactions} rows). Cold-item split: {report.n_cold_items} items "
        f"({report.cold_fraction:.0%}, seed {report.seed}) held out with all their interactions; "
        f"{report.n_test_users} test users evaluated ({report.n_users_without_profile} without a training "
        f"interaction skipped).",
        "",
        "| " + " | ".join(h.format(k=k) for h in _HEADERS) + " |",
        "| " + " | ".join(["---"] * 2 + ["---:"] * (len(_HEADERS) - 2)) + " |",
    ]
    lines += ["| " + " | ".join(_row(r)) + " |" for r in report.results]
    lines += [
        "",
        f"- accuracy: content-only recommender (user profile = mean of the encoder's vectors of their "
        f"training items), cold items ranked by cosine among the cold items only; a random ranking "
        f"scores recall@{k} = {report.random_recall:.4f}.",
        "- items/s: encoding every catalog item of the encoder's modality (load and warm-up excluded); "
        "coverage: share of catalog items with a vector.",
        "- size: weights on disk (model card); params of the encoding network.",
        "",
    ]
    return "\n".join(lines)


def plot_png(report: CompareReport) -> bytes:
    """PNG of accuracy (recall@k, y) against speed (items/s, log x), one labelled point per encoder."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(7, 4.5), dpi=110)
    ax = fig.add_subplot()
    colours = {"text": "tab:blue", "image": "tab:orange", "audio": "tab:green"}
    for r in report.results:
        x = max(r.items_per_s, 1e-3)
        ax.scatter([x], [r.recall], s=40 + 12 * math.sqrt(max(r.size_mb, 0.0)), color=colours.get(r.modality, "k"),
                   alpha=0.8, edgecolors="black", linewidths=0.5, zorder=3)
        label = r.encoder
        if label.startswith("hf:") and "/" in label:  # a local directory: its last part is the model's name
            label = "hf:" + label.rstrip("/").rsplit("/", 1)[-1]
        size = f"{r.size_mb:.0f}" if r.size_mb >= 10 else f"{r.size_mb:.1f}"
        ax.annotate(f"{label}\n{size} MB", (x, r.recall), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax.axhline(report.random_recall, color="grey", linestyle="--", linewidth=1, label="random ranking")
    ax.set_xscale("log")
    ax.set_xlabel("speed (items/s, log scale)")
    ax.set_ylabel(f"cold-item recall@{report.k}")
    ax.set_ylim(0, 1.05)
    xs = [max(r.items_per_s, 1e-3) for r in report.results] or [1.0]
    ax.set_xlim(min(xs) / 2, max(xs) * 3)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(f"{Path(report.catalog).name}: accuracy vs speed (marker size ~ MB)", fontsize=10)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()


def write_report(report: CompareReport, out_dir: str | Path) -> dict[str, Path]:
    """Write ``encoders_compare.md``, ``.json`` and ``.png`` into ``out_dir`` (atomically); returns the paths."""
    from tlrec.files import write_bytes_atomic

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"--out {out_dir} is a file, not a directory")
    paths = {ext: out_dir / f"{REPORT_STEM}.{ext}" for ext in ("md", "json", "png")}
    png = plot_png(report)
    write_bytes_atomic(paths["json"], (json.dumps(report.to_dict(), indent=2) + "\n").encode())
    write_bytes_atomic(paths["md"], to_markdown(report).encode())
    write_bytes_atomic(paths["png"], png)
    return paths
