"""Resumable partitioned batch jobs, as a Ray job or in process, into one Parquet file.

The machinery behind `tlrec score` (``batch_scoring``) and `tlrec predict` (``batch_predict``)::

    rows (user ids, or pairs), in input order
      -> partitions of ``partition_size`` rows (deterministic: same input, same partitions)
      -> a worker (the job's class), once per Ray actor (or once in process): loads the
         artifact once, handles a partition and writes ``part-XXXXX.parquet`` atomically
         (temp + fsync + rename) into the staging folder ``.<out name>.parts-<job key>/``
      -> driver: streams the parts, in partition order, into ONE Parquet file (a row group
         per part; temp + fsync + rename), then removes the staging folder

* Resumable: the job key (a hash of what the output depends on) names the staging folder.
  A re-run of the same job after a crash skips every partition whose part file exists (a
  part exists only once complete), so no row is lost or written twice. A failing partition
  does not stop the others; the job then raises ``ScoringJobError``.
* Memory: a worker holds the model plus one partition; the driver, while assembling, one part.
* Fault tolerance on Ray: an actor whose process dies is restarted and its partition retried
  (``max_retries``); parts are deterministic, so a retry rewrites the same file.
* The output folder must be on a filesystem the Ray workers share with the driver.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tqdm.auto import tqdm

from tlrec.progress import progress_bar
from tlrec.ray_cluster import LOCAL, start_ray, stop_ray

logger = logging.getLogger(__name__)

__all__ = ["FAIL_PARTITION_ENV", "PartResult", "PartitionsDone", "ScoringJobError", "part_path", "ray_or_in_process",
           "run_partitions"]

#: Restarts of a dead actor / retries of its partition before the partition counts as failed.
DEFAULT_MAX_RETRIES = 3
#: TEST ONLY: partition index (int) whose work raises, to simulate a crash mid-job.
FAIL_PARTITION_ENV = "TLREC_TEST_SCORE_FAIL_PARTITION"
STAGING_MARK = ".parts-"


class ScoringJobError(RuntimeError):
    """Some partitions failed; the complete ones are kept and a re-run of the same command resumes."""


@dataclass(frozen=True)
class PartResult:
    """One partition's outcome as the worker reports it: rows in and out, how many rows were about
    someone the model does not know (``unknown``), and the seconds it took."""

    index: int
    rows_in: int
    rows: int
    unknown: int
    seconds: float


@dataclass(frozen=True)
class PartitionsDone:
    """What ``run_partitions`` did: rows written, partitions in all and reused from an earlier run."""

    rows: int
    partitions: int
    reused: int
    results: list[PartResult]


class Worker(Protocol):
    """A job's worker class: ``Worker(spec, threads, loaded)``, then ``score(index, rows)`` per partition."""

    def __init__(self, spec: Any, threads: int | None = None, loaded: Any = None) -> None: ...

    def score(self, index: int, rows: Sequence[Any]) -> PartResult: ...


def part_path(staging: Path, index: int) -> Path:
    return staging / f"part-{index:05d}.parquet"


def ray_or_in_process(ray_address: str | None, rows: int, partition_size: int) -> str | None:
    """Where a job runs: ``ray_address``, except that the default local Ray (``"local"``) is skipped
    when the rows fit one partition (a Ray start costs more than such a job; said in the log).
    A cluster address is always kept."""
    if ray_address == LOCAL and rows <= partition_size:
        logger.info("%d rows fit one partition: running in process (a local Ray pays off from %d rows; "
                    "--partition-size sets it)", rows, partition_size + 1)
        return None
    return ray_address


def run_partitions(worker: type[Worker], spec_for: Callable[[Path], Any], rows: Sequence[Any], out: Path,
                   key: dict[str, Any], partition_size: int, ray_address: str | None, local: Any = None,
                   actors: int | None = None, max_retries: int = DEFAULT_MAX_RETRIES, progress: bool = True,
                   desc: str = "job", unit: str = "row") -> PartitionsDone:
    """Run ``worker`` over ``rows`` in partitions and assemble the parts into ``out``.

    ``spec_for(staging)``: what every worker is built with (it names the staging folder);
    ``local``: the loaded model an in-process worker reuses (``ray_address`` None); ``key``: what
    the output depends on (same key, same staging folder: a re-run resumes).
    ``ScoringJobError`` when partitions failed (the complete ones are kept for a re-run).
    """
    out = Path(out)
    staging = _staging_dir(out, key)
    partitions = [list(rows[lo : lo + partition_size]) for lo in range(0, len(rows), partition_size)]
    todo = [i for i in range(len(partitions)) if not part_path(staging, i).exists()]
    reused = len(partitions) - len(todo)
    if reused:
        logger.info("resuming: %d of %d partitions already done in %s", reused, len(partitions), staging.name)
    spec = spec_for(staging)
    done_rows = len(rows) - sum(len(partitions[i]) for i in todo)
    bar = progress_bar(total=len(rows), initial=done_rows, show=progress, desc=desc, unit=unit, smoothing=0.1)
    try:
        if ray_address is None:
            results, failures = _run_in_process(worker, spec, partitions, todo, bar, local)
        else:
            results, failures = _run_on_ray(worker, spec, partitions, todo, bar, ray_address, actors, max_retries)
    except BaseException:
        _drop_if_empty(staging)  # no complete part: nothing worth keeping for a re-run
        raise
    finally:
        bar.close()
    if failures:
        done = len(partitions) - len(failures)
        first = next(iter(failures.items()))
        _drop_if_empty(staging)
        kept = (f"{done} are kept in {staging} and a re-run of the same command resumes from them"
                if staging.is_dir() else "nothing was kept; a re-run starts over")
        raise ScoringJobError(
            f"{len(failures)} of {len(partitions)} partitions failed (partition {first[0]}: {first[1]}); {kept}")
    written = _assemble(staging, len(partitions), out)
    shutil.rmtree(staging, ignore_errors=True)
    return PartitionsDone(written, len(partitions), reused, results)


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


def _run_in_process(worker: type[Worker], spec: Any, partitions: list[list[Any]], todo: list[int],
                    bar: tqdm, local: Any = None) -> tuple[list[PartResult], dict[int, str]]:
    results: list[PartResult] = []
    failures: dict[int, str] = {}
    if not todo:
        return results, failures
    scorer = worker(spec, loaded=local)
    for i in todo:
        try:
            results.append(scorer.score(i, partitions[i]))
        except Exception as exc:  # noqa: BLE001 - one partition's failure must not lose the others
            logger.error("partition %d failed: %s", i, _one_line(exc))
            failures[i] = _one_line(exc)
        bar.update(len(partitions[i]))
    return results, failures


def _run_on_ray(worker: type[Worker], spec: Any, partitions: list[list[Any]], todo: list[int], bar: tqdm, address: str,
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
                                 max_task_retries=max_retries)(worker)
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
    """Stream the parts, in order, into one file at ``out`` (temp + fsync + rename): CSV with a header when
    ``out`` ends in ``.csv``, else Parquet; returns rows.

    polars streams the parts (``sink_*``, in parallel); parts whose column types differ (a column
    null in one part) are cast to a common type.
    """
    import polars as pl
    import pyarrow.parquet as pq

    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        parts = [part_path(staging, i) for i in range(n_partitions)]
        rows = sum(pq.read_metadata(p).num_rows for p in parts)
        frames = pl.concat([pl.scan_parquet(p) for p in parts], how="vertical_relaxed")
        if out.suffix.lower() == ".csv":
            frames.sink_csv(tmp)
        else:
            frames.sink_parquet(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return rows
