"""`tlrec score`: top-k for a list of users, as a Ray job (default) or in process, into one Parquet file.

The users file (one id a line, duplicates dropped, order kept) runs through the partitioned
job machinery of ``services.partitions`` (resumable after a crash, one part per partition,
assembled into one file); ``PartitionScorer`` is its worker: it loads the artifact once and
scores a partition with ``ServedModel.recommend_frame`` (the API's retrieve -> rank -> filter path)
in batches.

Output columns ``user_id, item_id, score, rank, model_version`` (rank 1 = best), k
rows per user (fewer only when fewer than k items are allowed, e.g. a short
candidate list), users in file order. The job key is a hash of the artifact version, the
users and candidates files' bytes, k, exclude_seen and the partition size.
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

from tlrec.serving.served_model import ServedModel
from tlrec.files import sha256_file, write_parquet_atomic
from tlrec.services.files import read_id_list
from tlrec.errors import UsageError
from tlrec.ray_cluster import LOCAL
from tlrec.services.partitions import (
    DEFAULT_MAX_RETRIES,
    FAIL_PARTITION_ENV,
    PartResult,
    ScoringJobError,
    part_path,
    ray_or_in_process,
    run_partitions,
)
from tlrec.training.artifacts import resolve_version
from tlrec.tables import Columns, DataError
from tlrec.training.data import load_catalog
from tlrec.training.id_map import IdMap

logger = logging.getLogger(__name__)

__all__ = ["FAIL_PARTITION_ENV", "PartitionScorer", "ScoreResult", "ScoringJobError", "score_job"]

MODEL_VERSION = "model_version"
#: Users per partition: one part file, one Ray task. Bounds a worker's output memory
#: (partition x k rows) and the work a crash can lose.
DEFAULT_PARTITION_SIZE = 5_000
#: Users per ``ServedModel.recommend`` call inside a partition (bounds the scoring tensors).
DEFAULT_BATCH_SIZE = 1024


@dataclass(frozen=True)
class ScoreSpec:
    """What every partition needs to know (sent once to each actor)."""

    version_dir: str
    model_version: str
    k: int
    exclude_seen: bool
    candidates: list[str] | None
    staging: str
    batch_size: int
    fail_partition: int | None = None
    titles: dict[str, str] | None = None  # item_id -> title: adds a ``title`` column


@dataclass(frozen=True)
class ScoreResult:
    """What ``score_job`` did: output path, rows, users, model version, partitions scored / reused."""

    path: Path
    rows: int
    users: int
    model_version: str
    partitions: int
    reused: int


class PartitionScorer:
    """Loads the artifact once; scores partitions of users and writes each as an atomic part file.

    The same class runs in process and as a Ray actor (``ray.remote`` applied at run time).
    ``threads`` sets torch's and FAISS's threads (None: leave the defaults).
    """

    def __init__(self, spec: ScoreSpec, threads: int | None = None, loaded: ServedModel | None = None) -> None:
        if threads is not None:
            import faiss
            import torch

            torch.set_num_threads(threads)
            faiss.omp_set_num_threads(threads)
        self.spec = spec
        self.served = loaded if loaded is not None else ServedModel.load(Path(spec.version_dir))

    def score(self, index: int, users: Sequence[str]) -> PartResult:
        """Top-k for ``users`` (partition ``index``) -> ``part-XXXXX.parquet`` in the staging folder."""
        start = time.perf_counter()
        spec = self.spec
        if spec.fail_partition == index:
            raise RuntimeError(f"test hook {FAIL_PARTITION_ENV}: partition {index} fails")
        frames = []
        popular = 0
        for lo in range(0, len(users), spec.batch_size):
            part, unknown = self.served.recommend_frame(list(users[lo : lo + spec.batch_size]), spec.k,
                                                        spec.exclude_seen, spec.candidates)
            popular += unknown
            frames.append(part)
        frame = pl.concat(frames)
        if spec.titles is not None:
            title = pl.col(Columns.ITEM).replace_strict(spec.titles, default=None, return_dtype=pl.String)
            frame = frame.with_columns(title.alias(Columns.TITLE)).select(
                Columns.USER, Columns.ITEM, Columns.TITLE, Columns.SCORE, Columns.RANK)
        frame = frame.with_columns(pl.lit(spec.model_version, dtype=pl.String).alias(MODEL_VERSION))
        write_parquet_atomic(frame, part_path(Path(spec.staging), index))
        return PartResult(index, len(users), frame.height, popular, time.perf_counter() - start)


# --------------------------------------------------------------------------- the job


def _job_key(version_dir: Path, users_path: Path, candidates_path: Path | None, k: int, exclude_seen: bool,
             partition_size: int, catalog_path: Path | None = None) -> dict[str, Any]:
    return {
        "model_version": version_dir.name,
        "manifest_sha256": sha256_file(version_dir / "manifest.json"),
        "users_sha256": sha256_file(users_path),
        "candidates_sha256": sha256_file(candidates_path) if candidates_path is not None else None,
        "catalog_sha256": sha256_file(catalog_path) if catalog_path is not None else None,
        "k": k,
        "exclude_seen": exclude_seen,
        "partition_size": partition_size,
    }


def _titles(catalog_path: Path) -> dict[str, str]:
    """``item_id -> title`` of a catalog file (validated like ``tlrec train``'s)."""
    catalog = load_catalog(catalog_path)
    return dict(zip(catalog[Columns.ITEM].to_list(), catalog[Columns.TITLE].cast(pl.String).to_list()))


def _check_candidates(items: IdMap, candidates: list[str], candidates_path: Path, k: int) -> None:
    unknown = [c for c in candidates if c not in items]
    if len(unknown) == len(candidates):
        raise DataError(f"{candidates_path}: none of the {len(candidates)} candidate ids is in the model's catalog")
    if unknown:
        logger.warning("%s: %d candidate ids unknown to the model, ignored (e.g. %r)",
                       candidates_path, len(unknown), unknown[0])
    if len(candidates) - len(unknown) < k:
        logger.warning("only %d known candidates for k=%d: lists are shorter", len(candidates) - len(unknown), k)


def score_job(
    artifacts: Path,
    users_path: Path,
    k: int,
    out: Path,
    candidates_path: Path | None = None,
    exclude_seen: bool = False,
    batch_size: int = DEFAULT_BATCH_SIZE,
    progress: bool = True,
    ray_address: str | None = LOCAL,
    partition_size: int = DEFAULT_PARTITION_SIZE,
    actors: int | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    catalog_path: Path | None = None,
) -> ScoreResult:
    """Score every user in ``users_path`` into ``out`` (one Parquet file, or CSV when ``out`` ends in
    ``.csv``); unknown users get popular items.

    Args:
        artifacts: artifacts root (its ``current`` version, resolved once at the
            start) or a version directory.
        users_path: one user id a line.
        k: items per user (>= 1).
        out: output Parquet file.
        candidates_path: optional item ids (one a line): rank only among them.
        exclude_seen: drop items the user has in the training data.
        batch_size: users per ``recommend`` call.
        progress: a progress bar (users scored, users/s) on stderr.
        ray_address: ``"local"`` starts a Ray on this machine (stopped at the
            end) when there is more than one partition, else scores in process;
            ``"auto"`` / ``"ray://host:10001"`` joins a cluster; None scores in
            this process. An already initialised Ray is used as is.
        partition_size: users per partition (part file, Ray task).
        actors: Ray actors (default: the cluster's CPUs, at most one per partition).
        max_retries: restarts of a dead actor and retries of its partition.
        catalog_path: the catalog: adds each item's ``title`` (after ``item_id``) so a person can read the lists.

    Raises:
        UsageError / DataError: bad k, users or candidates file (before any work).
        ArtifactError: missing, corrupt or unloadable artifact (verified and loaded
            before the staging folder is created: nothing is left behind).
        ScoringJobError: partitions failed; complete ones stay in the staging
            folder and a re-run of the same call resumes.
    """
    if k < 1:
        raise UsageError(f"--k must be >= 1, got {k}")
    if partition_size < 1 or batch_size < 1:
        raise UsageError(f"--partition-size and batch size must be >= 1, got {partition_size} and {batch_size}")
    out = Path(out)
    users = list(dict.fromkeys(read_id_list(users_path, "user", Columns.USER)))
    ray_address = ray_or_in_process(ray_address, len(users), partition_size)
    candidates = read_id_list(candidates_path, "candidate item", Columns.ITEM) if candidates_path is not None else None
    version_dir = resolve_version(Path(artifacts)).resolve()
    # Load (verify every file, parse and check it) here, before the staging folder exists and any
    # worker starts: a bad artifact is one ArtifactError line naming the file and leaves nothing behind.
    # In process, this model does the scoring; on Ray each actor loads its own and this one is dropped.
    served = ServedModel.load(version_dir)
    if candidates is not None:
        _check_candidates(served.items, candidates, Path(candidates_path), k)  # type: ignore[arg-type]
    local = served if ray_address is None else None
    del served
    titles = _titles(catalog_path) if catalog_path is not None else None
    key = _job_key(version_dir, Path(users_path), candidates_path, k, exclude_seen, partition_size, catalog_path)
    fail = os.environ.get(FAIL_PARTITION_ENV)

    def spec(staging: Path) -> ScoreSpec:
        return ScoreSpec(str(version_dir), version_dir.name, k, exclude_seen, candidates, str(staging), batch_size,
                         int(fail) if fail else None, titles)

    logger.info("scoring %d users (top %d, model %s) %s", len(users), k, version_dir.name,
                "in process" if ray_address is None else f"on Ray ({ray_address})")
    done = run_partitions(PartitionScorer, spec, users, out, key, partition_size, ray_address, local=local,
                          actors=actors, max_retries=max_retries, progress=progress, desc="score", unit="user")
    unknown = sum(r.unknown for r in done.results)
    if unknown:
        logger.info("%d of %d scored users were unknown to the model and got popular items", unknown,
                    sum(r.rows_in for r in done.results))
    logger.info("wrote %d rows for %d users to %s (model %s)", done.rows, len(users), out, version_dir.name)
    return ScoreResult(out, done.rows, len(users), version_dir.name, done.partitions, done.reused)
