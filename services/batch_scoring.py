"""`tlrec score`: top-k for a list of users, as a Ray job (default) or in process, into one Parquet file.

Pipeline::

    users file (one id a line, duplicates dropped, order kept)
      -> partitions of ``partition_size`` users (deterministic: same file, same partitions)
      -> PartitionScorer, once per Ray actor (or once in process with ``ray_address=None``):
         loads the artifact once, scores a partition with ``ServedModel.recommend``
         (the API's retrieve -> rank -> filter path) in batches, and writes
         ``part-XXXXX.parquet`` atomically (temp + fsync + rename) into the staging
         folder ``.<out name>.parts-<job key>/`` next to the output
      -> driver: streams the parts, in partition order, into ONE Parquet file (a row
         group per part; temp + fsync + rename), then removes the staging folder

Output columns ``user_id, item_id, score, rank, model_version`` (rank 1 = best), k
rows per user (fewer only when fewer than k items are allowed, e.g. a short
candidate list), users in file order.

* Resumable: the job key is a hash of the artifact version, the users and
  candidates files' bytes, k, exclude_seen and the partition size. A re-run of
  the same job after a crash finds the staging folder, skips every partition whose
  part file exists (a part exists only once complete) and scores the rest, so no
  user is lost or written twice. A failing partition does not stop the others.
* Memory: a worker holds the model plus one batch of one partition; the driver
  holds the user ids and, while assembling, one part.
* Fault tolerance on Ray: an actor whose process dies is restarted and its
  partition retried (``max_retries``); parts are deterministic, so a retry
  rewrites the same file.
* The output folder must be on a filesystem the Ray workers share with the driver.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl
from tqdm.auto import tqdm

from tlrec.serving.served_model import ServedModel
from tlrec.files import sha256_file, write_parquet_atomic
from tlrec.services.files import read_id_list
from tlrec.services.jobs import frame_of_recommendations
from tlrec.errors import UsageError
from tlrec.ray_cluster import LOCAL, start_ray, stop_ray
from tlrec.training.artifacts import resolve_version
from tlrec.tables import DataError
from tlrec.training.id_map import IdMap

logger = logging.getLogger(__name__)

__all__ = ["PartitionScorer", "ScoreResult", "ScoringJobError", "score_job"]

MODEL_VERSION = "model_version"
#: Users per partition: one part file, one Ray task. Bounds a worker's output memory
#: (partition x k rows) and the work a crash can lose.
DEFAULT_PARTITION_SIZE = 5_000
#: Users per ``ServedModel.recommend`` call inside a partition (bounds the scoring tensors).
DEFAULT_BATCH_SIZE = 1024
#: Restarts of a dead actor / retries of its partition before the partition counts as failed.
DEFAULT_MAX_RETRIES = 3
#: TEST ONLY: partition index (int) whose scoring raises, to simulate a crash mid-job.
FAIL_PARTITION_ENV = "TLREC_TEST_SCORE_FAIL_PARTITION"
STAGING_MARK = ".parts-"


class ScoringJobError(RuntimeError):
    """Some partitions failed; the complete ones are kept and a re-run of the same command resumes."""


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


@dataclass(frozen=True)
class PartResult:
    """One partition's outcome as the worker reports it."""

    index: int
    users: int
    rows: int
    popular: int
    seconds: float


@dataclass(frozen=True)
class ScoreResult:
    """What ``score_job`` did: output path, rows, users, model version, partitions scored / reused."""

    path: Path
    rows: int
    users: int
    model_version: str
    partitions: int
    reused: int


def part_path(staging: Path, index: int) -> Path:
    return staging / f"part-{index:05d}.parquet"


class PartitionScorer:
    """Loads the artifact once; scores partitions of users and writes each as an atomic part file.

    The same class runs in process and as a Ray actor (``ray.remote`` applied at run time).
    ``threads`` sets torch's and FAISS's threads (None: leave the defaults).
    """

    def __init__(self, spec: ScoreSpec, threads: int | None = None, served: ServedModel | None = None) -> None:
        if threads is not None:
            import faiss
            import torch

            torch.set_num_threads(threads)
            faiss.omp_set_num_threads(threads)
        self.spec = spec
        self.served = served if served is not None else ServedModel.load(Path(spec.version_dir))

    def score(self, index: int, users: Sequence[str]) -> PartResult:
        """Top-k for ``users`` (partition ``index``) -> ``part-XXXXX.parquet`` in the staging folder."""
        start = time.perf_counter()
        spec = self.spec
        if spec.fail_partition == index:
            raise RuntimeError(f"test hook {FAIL_PARTITION_ENV}: partition {index} fails")
        frames = []
        popular = 0
        for lo in range(0, len(users), spec.batch_size):
            recs = self.served.recommend(list(users[lo : lo + spec.batch_size]), spec.k, spec.exclude_seen,
                                         spec.candidates)
            popular += sum(r.source == "popular" for r in recs)
            frames.append(frame_of_recommendations(recs))
        frame = pl.concat(frames).with_columns(pl.lit(spec.model_version, dtype=pl.String).alias(MODEL_VERSION))
        write_parquet_atomic(frame, part_path(Path(spec.staging), index))
        return PartResult(index, len(users), frame.height, popular, time.perf_counter() - start)


# --------------------------------------------------------------------------- the job


def _job_key(version_dir: Path, users_path: Path, candidates_path: Path | None, k: int, exclude_seen: bool,
             partition_size: int) -> dict[str, Any]:
    return {
        "model_version": version_dir.name,
        "manifest_sha256": sha256_file(version_dir / "manifest.json"),
        "users_sha256": sha256_file(users_path),
        "candidates_sha256": sha256_file(candidates_path) if candidates_path is not None else None,
        "k": k,
        "exclude_seen": exclude_seen,
        "partition_size": partition_size,
    }


def _staging_dir(out: Path, key: dict[str, Any]) -> Path:
    """The job's staging folder next to ``out`` (created); drops stale ones of other jobs on ``out``."""
    digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:16]
    staging = out.parent / f".{out.name}{STAGING_MARK}{digest}"
    for other in out.parent.glob(f".{out.name}{STAGING_MARK}*"):
        if other != staging and other.is_dir():
            logger.warning("removing %s: parts of an earlier job on %s with other inputs", other.name, out.name)
            shutil.rmtree(other, ignore_errors=True)
    staging.mkdir(parents=True, exist_ok=True)
    job_file = staging / "job.json"
    if not job_file.exists():
        job_file.write_text(json.dumps(key, indent=2) + "\n")
    for tmp in staging.glob(".part-*.tmp"):  # a worker died while writing: never a complete part
        tmp.unlink(missing_ok=True)
    return staging


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
) -> ScoreResult:
    """Score every user in ``users_path`` into ``out`` (one Parquet file); unknown users get popular items.

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
            end); ``"auto"`` / ``"ray://host:10001"`` joins a cluster; None
            scores in this process. An already initialised Ray is used as is.
        partition_size: users per partition (part file, Ray task).
        actors: Ray actors (default: the cluster's CPUs, at most one per partition).
        max_retries: restarts of a dead actor and retries of its partition.

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
    users = list(dict.fromkeys(read_id_list(users_path, "user")))
    candidates = read_id_list(candidates_path, "candidate item") if candidates_path is not None else None
    version_dir = resolve_version(Path(artifacts)).resolve()
    # Load (verify every file, parse and check it) here, before the staging folder exists and any
    # worker starts: a bad artifact is one ArtifactError line naming the file and leaves nothing behind.
    # In process, this model does the scoring; on Ray each actor loads its own and this one is dropped.
    served = ServedModel.load(version_dir)
    if candidates is not None:
        _check_candidates(served.items, candidates, Path(candidates_path), k)  # type: ignore[arg-type]
    local = served if ray_address is None else None
    del served
    key = _job_key(version_dir, Path(users_path), candidates_path, k, exclude_seen, partition_size)
    staging = _staging_dir(out, key)
    partitions = [users[lo : lo + partition_size] for lo in range(0, len(users), partition_size)]
    todo = [i for i in range(len(partitions)) if not part_path(staging, i).exists()]
    reused = len(partitions) - len(todo)
    if reused:
        logger.info("resuming: %d of %d partitions already scored in %s", reused, len(partitions), staging.name)
    fail = os.environ.get(FAIL_PARTITION_ENV)
    spec = ScoreSpec(str(version_dir), version_dir.name, k, exclude_seen, candidates, str(staging), batch_size,
                     int(fail) if fail else None)
    logger.info("scoring %d users (top %d, model %s) in %d partitions of %d %s", len(users), k, version_dir.name,
                len(partitions), partition_size, "in process" if ray_address is None else f"on Ray ({ray_address})")
    done_users = len(users) - sum(len(partitions[i]) for i in todo)
    bar = tqdm(total=len(users), initial=done_users, desc="score", unit="user", disable=not progress, smoothing=0.1)
    try:
        if ray_address is None:
            results, failures = _run_in_process(spec, partitions, todo, bar, local)
        else:
            results, failures = _run_on_ray(spec, partitions, todo, bar, ray_address, actors, max_retries)
    except BaseException:
        _drop_if_empty(staging)  # no complete part: nothing worth keeping for a re-run
        raise
    finally:
        bar.close()
    popular = sum(r.popular for r in results)
    if popular:
        logger.info("%d of %d scored users were unknown to the model and got popular items", popular,
                    sum(r.users for r in results))
    if failures:
        done = len(partitions) - len(failures)
        first = next(iter(failures.items()))
        _drop_if_empty(staging)
        kept = (f"{done} are kept in {staging} and a re-run of the same command resumes from them"
                if staging.is_dir() else "nothing was kept; a re-run starts over")
        raise ScoringJobError(
            f"{len(failures)} of {len(partitions)} partitions failed (partition {first[0]}: {first[1]}); {kept}")
    rows = _assemble(staging, len(partitions), out)
    shutil.rmtree(staging, ignore_errors=True)
    logger.info("wrote %d rows for %d users to %s (model %s)", rows, len(users), out, version_dir.name)
    return ScoreResult(out, rows, len(users), version_dir.name, len(partitions), reused)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    cause = getattr(exc, "cause", None)  # RayTaskError wraps the worker's exception
    if cause is not None:
        text = [f"{type(cause).__name__}: {cause}"]
    return " ".join(text[-1].split())[:300] if text else type(exc).__name__


def _drop_if_empty(staging: Path) -> None:
    """Remove a job's staging folder when it holds no complete part (so a failed start leaves nothing)."""
    if staging.is_dir() and not any(staging.glob("part-*.parquet")):
        shutil.rmtree(staging, ignore_errors=True)


def _run_in_process(spec: ScoreSpec, partitions: list[list[str]], todo: list[int],
                    bar: tqdm, served: ServedModel | None = None) -> tuple[list[PartResult], dict[int, str]]:
    results: list[PartResult] = []
    failures: dict[int, str] = {}
    if not todo:
        return results, failures
    scorer = PartitionScorer(spec, served=served)
    for i in todo:
        try:
            results.append(scorer.score(i, partitions[i]))
        except Exception as exc:  # noqa: BLE001 - one partition's failure must not lose the others
            logger.error("partition %d failed: %s", i, _one_line(exc))
            failures[i] = _one_line(exc)
        bar.update(len(partitions[i]))
    return results, failures


def _run_on_ray(spec: ScoreSpec, partitions: list[list[str]], todo: list[int], bar: tqdm, address: str,
                actors: int | None, max_retries: int) -> tuple[list[PartResult], dict[int, str]]:
    """Partitions over a pool of actors, each holding one model; at most one partition in flight per actor."""
    results: list[PartResult] = []
    failures: dict[int, str] = {}
    if not todo:
        return results, failures
    import ray

    started = start_ray(address)
    try:
        cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
        n_actors = max(1, min(actors or cpus, len(todo)))
        threads = max(1, cpus // n_actors)
        actor_class = ray.remote(num_cpus=min(1.0, cpus / n_actors), max_restarts=max_retries,
                                 max_task_retries=max_retries)(PartitionScorer)
        pool = [actor_class.remote(spec, threads) for _ in range(n_actors)]
        logger.info("Ray: %d actor(s) x %d thread(s), %d partitions to score", n_actors, threads, len(todo))
        pending = list(reversed(todo))
        in_flight: dict[Any, tuple[int, Any]] = {}
        idle = list(pool)
        while pending or in_flight:
            while idle and pending:
                actor, i = idle.pop(), pending.pop()
                in_flight[actor.score.remote(i, partitions[i])] = (i, actor)
            (ref,), _ = ray.wait(list(in_flight), num_returns=1)
            i, actor = in_flight.pop(ref)
            try:
                results.append(ray.get(ref))
                idle.append(actor)
            except ray.exceptions.RayActorError as exc:  # restarts used up: the actor is gone
                logger.error("partition %d failed, its actor died: %s", i, _one_line(exc))
                failures[i] = _one_line(exc)
                if not idle and not in_flight:
                    failures.update({j: "no live actor left" for j in pending})
                    pending = []
            except Exception as exc:  # noqa: BLE001 - a task error: the actor lives on
                logger.error("partition %d failed: %s", i, _one_line(exc))
                failures[i] = _one_line(exc)
                idle.append(actor)
            bar.update(len(partitions[i]))
    finally:
        stop_ray(started)
    return results, failures


def _assemble(staging: Path, n_partitions: int, out: Path) -> int:
    """Stream the parts, in order, into one Parquet file at ``out`` (temp + fsync + rename); returns rows."""
    import pyarrow.parquet as pq

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    rows = 0
    writer = None
    try:
        for i in range(n_partitions):
            table = pq.read_table(part_path(staging, i))
            if writer is None:
                writer = pq.ParquetWriter(tmp, table.schema)
            elif table.schema != writer.schema:
                table = table.cast(writer.schema)
            writer.write_table(table)
            rows += table.num_rows
        if writer is not None:
            writer.close()
            writer = None
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        if writer is not None:
            writer.close()
        Path(tmp).unlink(missing_ok=True)
        raise
    return rows

