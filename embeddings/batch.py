"""Embed a catalog as a Ray Data job (``tlrec embed``; ``--no-ray`` uses ``embeddings.embed_catalog.embed_catalog``).

Pipeline::

    catalog (DataFrame -> from_arrow, or Parquet -> read_parquet, streamed)
      -> blocks of ``rows_per_task`` rows
      -> map_batches(_EmbedBatch actors)        each actor loads its encoders once;
                                                embeds a batch with the shared
                                                ``embed_rows`` (reuse, encode, fuse),
                                                writes it as one Parquet part
                                                (temp + rename) and returns only
                                                {part path, rows, encoder cards}
      -> driver, in catalog order               streams each part into ONE vectors
                                                file, row group by row group
                                                (``VectorsFileWriter``), deletes
                                                the part, builds the manifest

* Same output as the in-process path: identical schema and manifest keys,
  written atomically (temp + fsync + ``os.replace``); parts live in a temp
  directory next to the output, removed at the end, also on failure.
* Bounded memory: the catalog streams through Ray Data (backpressured), vectors
  never pass through the object store or the driver as a whole; the driver
  holds one part at a time plus the per-item ids and hashes of the manifest.
* Incremental: a ``PreviousVectors`` index of the existing output (ids, row
  groups, content hashes, encoder versions; no vectors) is shared with the
  actors via the object store; unchanged items are copied from the previous
  file, only new or changed ones reach the encoders.
* Fault tolerance: actors restart (``max_restarts``) and their unfinished
  batches are retried (``max_task_retries``). A part is published with an
  atomic rename and only parts whose task returned are read, so a worker killed
  mid-batch leaves at most an unreferenced part; the driver also drops repeated
  item ids and checks that the output has exactly one row per catalog item.
* The driver needs the output folder (and, for Parquet input, the catalog) on a
  filesystem the workers share, and the workers need this package installed.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
import uuid
import warnings
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from tlrec.embeddings.base import Modality
from tlrec.embeddings.catalog_inputs import check_catalog, has_input, resolve_encoders
from tlrec.embeddings.embed_catalog import PreviousVectors, embed_rows
from tlrec.embeddings.vectors import ID_COL
from tlrec.embeddings.vectors_writer import ManifestBuilder, VectorsFileWriter, check_out_path
from tlrec.errors import InputError
from tlrec.ray_cluster import LOCAL, start_ray, stop_ray
from tlrec.tables import CATALOG_COLUMNS

logger = logging.getLogger(__name__)

#: Bounds of the catalog rows per Ray task (one ``__call__`` of an actor, one part file). Within
#: them a task is ~1/4 of an actor's share of the catalog: big tasks pad less (the text encoder sorts
#: a task's texts by length; tasks of 256 mixed-length texts cost ~15% more tokens than one sort
#: of the whole catalog, 1024 ~3%) and cost less per-task overhead; 4 tasks per actor keep the
#: actors evenly busy to the end and the progress bar moving.
MIN_ROWS_PER_TASK, MAX_ROWS_PER_TASK = 64, 1024
TASKS_PER_ACTOR = 4
#: Torch threads per actor when neither ``actors`` nor ``threads_per_actor`` is given. Every
#: actor holds its own torch, Ray Data worker and encoder copy (~0.9-1.2 GB RSS with MiniLM), so
#: two threads per actor halve that memory; single-thread actors are a little faster per CPU,
#: (bench/embed_ray.py --sweep) but on 2 cores they take the job over the 3 GB budget
#: (bench/embed_memory.py).
DEFAULT_THREADS_PER_ACTOR = 2
#: Actor restarts / retries of a batch whose actor died, before the job fails.
DEFAULT_MAX_RETRIES = 3


@dataclass
class _Catalog:
    """What the driver learns about the catalog before the job starts."""

    n_items: int
    modalities: list[Modality]
    base_dir: Path
    table: Any = None  # pyarrow.Table of the catalog columns (DataFrame input)
    path: Path | None = None  # Parquet file or directory (path input)
    columns: list[str] | None = None


def _scan_frame(catalog: pl.DataFrame, names: dict[Modality, str], base_dir: str | Path | None) -> _Catalog:
    import pyarrow as pa

    check_catalog(catalog)
    if catalog.height == 0:
        raise InputError("catalog is empty: nothing to embed")
    cols = [c for c in CATALOG_COLUMNS if c in catalog.columns]
    table = catalog.select([pl.col(c).cast(pl.String, strict=False) for c in cols]).to_arrow()
    table = table.cast(pa.schema([(c, pa.large_string()) for c in cols]))
    base = Path(base_dir) if base_dir is not None else Path.cwd()
    return _Catalog(catalog.height, [m for m in names if has_input(catalog, m)], base.resolve(), table=table)


def _scan_parquet(path: Path, names: dict[Modality, str], base_dir: str | Path | None) -> _Catalog:
    """One streamed pass over the catalog columns: count rows, check ids, find the modalities with input."""
    import pyarrow.dataset as pds

    if not path.exists():
        raise InputError(f"catalog {path} not found")
    try:
        dataset = pds.dataset(path, format="parquet")
    except Exception as exc:  # noqa: BLE001 - any Arrow error means: not a Parquet catalog
        raise InputError(f"catalog {path} is not readable Parquet: {exc}") from None
    cols = [c for c in CATALOG_COLUMNS if c in dataset.schema.names]
    if ID_COL not in cols:
        raise InputError(f"catalog {path} has no column {ID_COL!r} (columns: {', '.join(dataset.schema.names)})")
    seen: set[str] = set()
    found: set[Modality] = set()
    n = 0
    for batch in dataset.to_batches(columns=cols, batch_size=65_536):
        rows = pl.DataFrame(pl.from_arrow(batch))
        ids = rows.get_column(ID_COL).cast(pl.String, strict=False).to_list()
        for offset, iid in enumerate(ids):
            if iid is None:
                raise InputError(f"catalog {path} row {n + offset}, column {ID_COL!r}: item_id is null")
            if iid in seen:
                raise InputError(f"catalog {path} row {n + offset}, column {ID_COL!r}: duplicate item_id {iid!r}")
            seen.add(iid)
        found.update(m for m in names if m not in found and has_input(rows, m))
        n += len(ids)
    if n == 0:
        raise InputError(f"catalog {path} is empty: nothing to embed")
    base = Path(base_dir) if base_dir is not None else (path if path.is_dir() else path.parent)
    return _Catalog(n, [m for m in names if m in found], base.resolve(), path=path, columns=cols)


def _layout(cpus: float, n_items: int, actors: int | None = None, threads: int | None = None,
            rows_per_task: int | None = None) -> tuple[int, int, float, int]:
    """(actors, torch threads per actor, logical CPUs each actor reserves, rows per task).

    Actors x threads match the cluster's CPUs (no oversubscription). Each actor
    reserves a little less than its threads so one CPU stays free for Ray
    Data's light read/split tasks; otherwise the actors, started first, would
    hold every CPU and the reads could never be scheduled.
    """
    whole = max(1, int(cpus))
    if actors is None:
        threads = max(1, threads or DEFAULT_THREADS_PER_ACTOR)
        actors = max(1, whole // threads)
    else:
        if actors < 1:
            raise ValueError(f"actors must be >= 1, got {actors}")
        threads = max(1, threads or whole // actors)
    actors = max(1, min(actors, math.ceil(n_items / (rows_per_task or MIN_ROWS_PER_TASK))))
    if rows_per_task is None:
        share = math.ceil(n_items / (actors * TASKS_PER_ACTOR))
        rows_per_task = min(MAX_ROWS_PER_TASK, max(MIN_ROWS_PER_TASK, share))
    spare = min(1.0, cpus / 2)
    reserve = max(0.01, min(float(threads), (cpus - spare) / actors))
    return actors, threads, round(reserve, 3), rows_per_task


class _EmbedBatch:
    """Ray Data callable class: loads each encoder once, embeds batches, writes each as a part file.

    ``crash_marker`` is a TEST-ONLY hook: if set and the file does not exist
    yet, the first batch creates it, writes its part and then kills its own
    process (``os._exit``) before returning, as a worker lost mid-run would.
    """

    def __init__(self, names: dict[Modality, str], threads: int, base_dir: str, batch_size: int,
                 weights: dict[str, float] | None, previous: Any, part_dir: str,
                 crash_marker: str | None = None) -> None:
        import torch

        torch.set_num_threads(threads)
        from tlrec.embeddings.registry import get_encoder

        if previous is not None and not isinstance(previous, PreviousVectors):
            import ray

            previous = ray.get(previous)  # ObjectRef shared by all actors
        self.encoders = {m: get_encoder(name) for m, name in names.items()}
        self.cards = json.dumps({m: e.card.to_dict() for m, e in self.encoders.items()})
        self.base_dir, self.batch_size, self.weights = base_dir, batch_size, weights
        self.previous = previous
        self.part_dir = Path(part_dir)
        self.crash_marker = crash_marker
        self._libc = _libc()

    def __call__(self, batch: Any) -> Any:
        """Catalog rows (``pyarrow.Table``) -> ``{"part": str, "rows": int, "cards": str}`` (one row)."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        rows = pl.DataFrame(pl.from_arrow(batch))
        table = embed_rows(rows, self.encoders, base_dir=self.base_dir, batch_size=self.batch_size,
                           weights=self.weights, previous=self.previous)
        part = self.part_dir / f"part-{uuid.uuid4().hex}.parquet"
        tmp = part.with_name(f".{part.name}.tmp")
        pq.write_table(table, tmp)
        os.replace(tmp, part)
        if self.crash_marker is not None:
            try:
                with open(self.crash_marker, "x"):
                    pass
            except FileExistsError:
                pass
            else:
                os._exit(17)  # test hook: lose this worker after the work is done, before returning
        if self._libc is not None:
            self._libc.malloc_trim(0)  # hand the batch's freed activations back to the OS (glibc keeps them)
        return pa.table({"part": [str(part)], "rows": [table.num_rows], "cards": [self.cards]})


def _libc() -> Any:
    """glibc (for ``malloc_trim``), or None on other C libraries / platforms."""
    import ctypes

    try:
        libc = ctypes.CDLL("libc.so.6")
        libc.malloc_trim  # noqa: B018 - probe: glibc only
    except (OSError, AttributeError):
        return None
    return libc


def embed_catalog_ray(
    catalog: pl.DataFrame | str | Path,
    out_path: str | Path,
    address: str = LOCAL,
    text: str | None = "minilm",
    image: str | None = "efficientnet-lite0",
    audio: str | None = "crepe-tiny",
    batch_size: int = 32,
    actors: int | None = None,
    progress: bool = True,
    reuse: bool = True,
    base_dir: str | Path | None = None,
    *,
    weights: dict[str, float] | None = None,
    rows_per_task: int | None = None,
    threads_per_actor: int | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    _test_crash_marker: str | Path | None = None,
) -> Path:
    """Embed a catalog with a Ray Data job; same output as ``embed_catalog``.

    Args:
        catalog: a polars DataFrame, or a Parquet file / directory that is read
            with ``ray.data.read_parquet`` (streamed; the driver first streams
            the id and input columns once to validate ids). Columns as for
            ``embed_catalog``.
        out_path: vectors Parquet to write (manifest next to it).
        address: ``"local"`` starts a Ray on this machine (all CPUs, no
            dashboard) and shuts it down at the end; anything else (``"auto"``,
            ``"ray://host:10001"``, ``"host:6379"``) connects to that cluster.
            If Ray is already initialized in this process it is used as is.
        text, image, audio: encoder names, or ``None`` to skip a modality.
        batch_size: items per encoder forward pass.
        actors: encoder actors (default: cluster CPUs / ``threads_per_actor``);
            each runs ``cluster CPUs // actors`` torch threads unless
            ``threads_per_actor`` is given.
        progress: Ray Data progress bars.
        reuse: reuse unchanged items' vectors from an existing ``out_path``.
        base_dir: folder relative media paths are relative to (default: the
            catalog file's folder, or the working directory for a DataFrame).
        weights: fusion weight per modality (default equal).
        rows_per_task: catalog rows per Ray task (and per part file); default
            about a quarter of each actor's share, within
            ``MIN_ROWS_PER_TASK``..``MAX_ROWS_PER_TASK``.
        threads_per_actor: torch threads per actor.
        max_retries: restarts of a dead actor and retries of its batch.
        _test_crash_marker: TEST ONLY, see ``_EmbedBatch``.

    Returns:
        ``out_path``.

    Raises:
        ValueError: bad catalog (names the row and column), encoder name or output path.
        RuntimeError: the job's output does not hold each catalog item exactly once.
        Ray errors if a batch still fails after ``max_retries``. Any error
        leaves no partial output and no part files behind.
    """
    out_path = check_out_path(out_path)
    if (rows_per_task is not None and rows_per_task < 1) or batch_size < 1:
        raise ValueError("rows_per_task and batch_size must be >= 1")
    if isinstance(catalog, pl.DataFrame):
        names = resolve_encoders(text, image, audio)
        info = _scan_frame(catalog, names, base_dir)
    elif isinstance(catalog, (str, Path)):
        names = resolve_encoders(text, image, audio)
        info = _scan_parquet(Path(catalog), names, base_dir)
    else:
        raise TypeError(f"catalog must be a polars DataFrame or a Parquet path, got {type(catalog).__name__}")
    for modality in names:
        if modality not in info.modalities:
            logger.info("no item has %s input; skipping the %s encoder", modality, modality)
    if not info.modalities:
        raise InputError("nothing to embed: every modality is disabled or has no input in the catalog")
    previous = PreviousVectors.open(out_path) if reuse else None

    started = start_ray(address)
    try:
        return _run(info, {m: names[m] for m in info.modalities}, out_path, batch_size=batch_size, actors=actors,
                    progress=progress, weights=weights, rows_per_task=rows_per_task, threads=threads_per_actor,
                    max_retries=max_retries, previous=previous,
                    crash_marker=str(_test_crash_marker) if _test_crash_marker is not None else None)
    finally:
        stop_ray(started)


def _assemble(results: Iterable[dict[str, Any]], writer: VectorsFileWriter,
              builder: ManifestBuilder) -> tuple[str | None, int]:
    """Stream the job's parts (in order) into ``writer``; returns (encoder cards JSON, repeated rows dropped).

    Each part is read whole (one task's rows), rows whose item was already
    written are dropped (a batch retried after its first result had been
    delivered), and the part is deleted once written.
    """
    import pyarrow.parquet as pq

    seen: set[str] = set()
    repeated = 0
    cards: str | None = None
    for result in results:
        if cards is None:
            cards = result["cards"]
        elif result["cards"] != cards:
            raise RuntimeError("Ray workers loaded different encoder versions; install the same packages "
                               "on every node")
        part = Path(result["part"])
        table = pq.read_table(part)
        keep = []
        for iid in table.column(ID_COL).to_pylist():
            keep.append(iid not in seen)
            seen.add(iid)
        if not all(keep):
            repeated += len(keep) - sum(keep)
            table = table.filter(keep)
        writer.write(builder.add(table))
        part.unlink()
    return cards, repeated


def _run(info: _Catalog, names: dict[Modality, str], out_path: Path, *, batch_size: int, actors: int | None,
         progress: bool, weights: dict[str, float] | None, rows_per_task: int | None, threads: int | None,
         max_retries: int, previous: PreviousVectors | None, crash_marker: str | None) -> Path:
    import ray
    from ray.data import ActorPoolStrategy, DataContext

    cpus = float(ray.cluster_resources().get("CPU", 1.0))
    n_actors, n_threads, reserve, rows_per_task = _layout(cpus, info.n_items, actors, threads, rows_per_task)
    logger.info("embedding %d items (%s) on Ray: %d actor(s) x %d torch thread(s), %d rows per task",
                info.n_items, ", ".join(f"{m}={n}" for m, n in names.items()), n_actors, n_threads, rows_per_task)
    part_dir = Path(tempfile.mkdtemp(dir=out_path.parent, prefix=f".{out_path.name}.parts."))
    ctx = DataContext.get_current()
    saved = (ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.enable_operator_progress_bars,
             ctx.print_on_execution_start)
    try:
        ctx.execution_options.preserve_order = True  # parts come back in catalog order
        ctx.enable_progress_bars = ctx.enable_operator_progress_bars = progress
        ctx.print_on_execution_start = progress
        if info.table is not None:
            table = info.table
            ds = ray.data.from_arrow([table.slice(start, rows_per_task)
                                      for start in range(0, table.num_rows, rows_per_task)])
        else:
            ds = ray.data.read_parquet(str(info.path), columns=info.columns)
            ds = ds.repartition(target_num_rows_per_block=rows_per_task)
        with warnings.catch_warnings():
            # Ray 2.60 marks **ray_remote_args as deprecated but has no named parameter for
            # max_restarts / max_task_retries; its own defaults (-1, -1) would retry a batch that
            # kills its worker every time forever, so pass finite ones.
            warnings.filterwarnings("ignore", message=".*ray_remote_args.* is deprecated")
            ds = ds.map_batches(
                _EmbedBatch,
                batch_size=rows_per_task,
                batch_format="pyarrow",
                compute=ActorPoolStrategy(size=n_actors),
                num_cpus=reserve,
                fn_constructor_kwargs={
                    "names": names, "threads": n_threads, "base_dir": str(info.base_dir), "batch_size": batch_size,
                    "weights": weights, "previous": ray.put(previous) if previous is not None else None,
                    "part_dir": str(part_dir), "crash_marker": crash_marker},
                max_restarts=max_retries,
                max_task_retries=max_retries,
            )
        builder = ManifestBuilder(list(names))
        with VectorsFileWriter(out_path, list(names)) as writer:
            cards, repeated = _assemble(ds.iter_rows(), writer, builder)
            if repeated:
                logger.warning("dropped %d repeated rows (retried batches)", repeated)
            if builder.n_items != info.n_items or cards is None:
                raise RuntimeError(f"Ray job returned {builder.n_items} distinct items for a catalog of "
                                   f"{info.n_items}; nothing was written")
            manifest = builder.manifest(out_path, json.loads(cards), weights)
            writer.commit(manifest)
    finally:
        (ctx.execution_options.preserve_order, ctx.enable_progress_bars, ctx.enable_operator_progress_bars,
         ctx.print_on_execution_start) = saved
        shutil.rmtree(part_dir, ignore_errors=True)
    builder.log_summary()
    logger.info("wrote %d item vectors (fused dim %d) to %s", builder.n_items, manifest["fused_dim"], out_path)
    return out_path
