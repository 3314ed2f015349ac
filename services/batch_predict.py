"""`tlrec predict`: calibrated probabilities of many pairs (propensity) or users (return), as a Ray
job or in process, into one Parquet file.

The input (pairs: ``user_id, item_id`` columns of a CSV, Parquet or JSONL file; users: one id a
line, duplicates dropped) runs through the partitioned job machinery of ``services.partitions``
(resumable after a crash, one part per partition, assembled into one file, input order kept);
``PartitionPredictor`` is its worker. An input that fits one partition runs in process unless a
cluster address is given (``ray_or_in_process``).

Output columns: pairs ``user_id, item_id, probability, known_user, known_item, model_version``;
users ``user_id, probability, known_user, horizon_days, as_of, model_version``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from tlrec.errors import UsageError
from tlrec.files import sha256_file, write_parquet_atomic
from tlrec.ray_cluster import LOCAL
from tlrec.services.batch_scoring import MODEL_VERSION
from tlrec.services.files import read_id_list
from tlrec.services.partitions import FAIL_PARTITION_ENV, PartResult, part_path, ray_or_in_process, run_partitions
from tlrec.tables import Columns, DataError, read_table
from tlrec.training.artifacts import ArtifactError, open_version, resolve_version
from tlrec.training.propensity_artifact import PropensityArtifact
from tlrec.training.return_artifact import ReturnArtifact

logger = logging.getLogger(__name__)

__all__ = ["PartitionPredictor", "PredictResult", "predict_job"]

#: Rows per partition (one part file, one Ray task): a probability is a few microseconds of work,
#: so partitions are large.
DEFAULT_PARTITION_SIZE = 100_000


@dataclass(frozen=True)
class PredictSpec:
    """What every partition needs to know (sent once to each actor)."""

    version_dir: str
    model_version: str
    task: str  # "propensity" (rows are (user, item) pairs) or "return" (rows are user ids)
    staging: str
    fail_partition: int | None = None


@dataclass(frozen=True)
class PredictResult:
    """What ``predict_job`` did: output path, rows, model version, task, partitions, where it ran."""

    path: Path
    rows: int
    model_version: str
    task: str
    partitions: int
    on_ray: bool


def _load(artifacts: Path) -> tuple[PropensityArtifact | ReturnArtifact, str, str]:
    """The verified probability model ``artifacts`` names: (artifact, version name, task)."""
    task = open_version(Path(artifacts)).manifest.get("task", "recommend")
    if task == "return":
        return *ReturnArtifact.load(artifacts), task
    try:
        return *PropensityArtifact.load(artifacts), "propensity"
    except ArtifactError as exc:
        raise ArtifactError(f"{exc} (or a return model: `tlrec train --task return --horizon 30d`)") from None


class PartitionPredictor:
    """Loads the artifact once; predicts partitions of rows and writes each as an atomic part file.

    The same class runs in process and as a Ray actor. ``threads`` sets torch's threads."""

    def __init__(self, spec: PredictSpec, threads: int | None = None, loaded: Any = None) -> None:
        if threads is not None:
            import torch

            torch.set_num_threads(threads)
        self.spec = spec
        self.artifact = loaded if loaded is not None else _load(Path(spec.version_dir))[0]

    def score(self, index: int, rows: Sequence[Any]) -> PartResult:
        """Probabilities of ``rows`` (partition ``index``) -> ``part-XXXXX.parquet`` in the staging folder."""
        start = time.perf_counter()
        spec = self.spec
        if spec.fail_partition == index:
            raise RuntimeError(f"test hook {FAIL_PARTITION_ENV}: partition {index} fails")
        if spec.task == "propensity":
            frame = self.artifact.predict([r[0] for r in rows], [r[1] for r in rows])
        else:
            frame = self.artifact.predict(list(rows))
        frame = frame.with_columns(pl.lit(spec.model_version, dtype=pl.String).alias(MODEL_VERSION))
        write_parquet_atomic(frame, part_path(Path(spec.staging), index))
        return PartResult(index, len(rows), frame.height, int((~frame["known_user"]).sum()),
                          time.perf_counter() - start)


def predict_job(artifacts: Path, out: Path, pairs_path: Path | None = None, users_path: Path | None = None,
                ray_address: str | None = LOCAL, partition_size: int = DEFAULT_PARTITION_SIZE,
                progress: bool = True, actors: int | None = None) -> PredictResult:
    """Probabilities of every pair in ``pairs_path`` (a propensity model) or user in ``users_path`` (a
    return model) into ``out``, input order kept.

    ``ray_address``: ``"local"`` starts a Ray here when there is more than one partition (else the
    work runs in process); ``"auto"`` / ``"ray://host:10001"`` joins a cluster; None: in process.
    ``UsageError`` / ``DataError`` / ``ArtifactError`` (one line) before any work: the wrong input for
    the model's task, a bad file, an item outside the catalog.
    """
    if (pairs_path is None) == (users_path is None):
        raise UsageError("predict needs exactly one of --pairs (a propensity model) and --users (a return model)")
    if partition_size < 1:
        raise UsageError(f"--partition-size must be >= 1, got {partition_size}")
    artifact, version, task = _load(artifacts)  # verified before anything is written
    if (task == "propensity") != (pairs_path is not None):
        raise UsageError(f"{artifacts}: a {task} model answers {'--pairs' if task == 'propensity' else '--users'}")
    if isinstance(artifact, PropensityArtifact):
        assert pairs_path is not None
        pairs = read_table(pairs_path, string_columns=(Columns.USER, Columns.ITEM))
        missing = [c for c in (Columns.USER, Columns.ITEM) if c not in pairs.columns]
        if missing:
            raise DataError.at(pairs_path, f"missing column(s) {', '.join(missing)} (found: "
                                           f"{', '.join(pairs.columns) or 'none'})")
        if pairs[Columns.USER].null_count() or pairs[Columns.ITEM].null_count():
            raise DataError.at(pairs_path, "user_id and item_id must not be empty")
        artifact.item_indices(pairs[Columns.ITEM], str(pairs_path))
        rows: list[Any] = list(zip(pairs[Columns.USER].to_list(), pairs[Columns.ITEM].to_list()))
        source = Path(pairs_path)
    else:
        assert users_path is not None
        rows = list(dict.fromkeys(read_id_list(users_path, "user", Columns.USER)))
        source = Path(users_path)
    ray_address = ray_or_in_process(ray_address, len(rows), partition_size)
    version_dir = resolve_version(Path(artifacts)).resolve()
    key = {"model_version": version, "manifest_sha256": sha256_file(version_dir / "manifest.json"),
           "input_sha256": sha256_file(source), "task": task, "partition_size": partition_size}
    fail = os.environ.get(FAIL_PARTITION_ENV)

    def spec(staging: Path) -> PredictSpec:
        return PredictSpec(str(version_dir), version, task, str(staging), int(fail) if fail else None)

    logger.info("predicting %d %s (%s model %s) %s", len(rows), "pairs" if task == "propensity" else "users", task,
                version, "in process" if ray_address is None else f"on Ray ({ray_address})")
    done = run_partitions(PartitionPredictor, spec, rows, out, key, partition_size, ray_address,
                          local=artifact if ray_address is None else None, actors=actors, progress=progress,
                          desc="predict", unit="row")
    logger.info("wrote %d probabilities to %s (%d rows about users the model does not know; model %s)", done.rows,
                out, sum(r.unknown for r in done.results), version)
    return PredictResult(Path(out), done.rows, version, task, done.partitions, ray_address is not None)

