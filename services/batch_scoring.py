"""`tlrec score`: top-k for a list of users, written as one Parquet file.

Output columns ``user_id, item_id, score, rank`` (rank 1 = best), k rows per user
(fewer only when fewer than k items are allowed, e.g. a short candidate list). The
file is written to a temporary name and renamed, so a failed run leaves nothing.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import polars as pl
from tqdm.auto import tqdm

from serving.recommender import ServedModel
from services.jobs import frame_of_recommendations
from training.data import DataError

logger = logging.getLogger(__name__)


def read_id_list(path: Path, what: str) -> list[str]:
    """Ids from a text file, one per line (blank lines skipped); DataError names the file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: {what} file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}: not a UTF-8 text file of {what} ids (byte {exc.start})") from None
    ids = [line.strip() for line in text.splitlines() if line.strip()]
    if not ids:
        raise DataError(f"{path}: no {what} ids (expected one id a line)")
    return ids


def write_parquet_atomic(frame: pl.DataFrame, out: Path) -> None:
    """Write ``frame`` to ``out`` via a temp file in the same folder, fsync, rename."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    os.close(fd)
    try:
        frame.write_parquet(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def score_job(
    artifacts: Path,
    users_path: Path,
    k: int,
    out: Path,
    candidates_path: Path | None = None,
    exclude_seen: bool = False,
    batch_size: int = 1024,
    progress: bool = True,
) -> pl.DataFrame:
    """Score every user in ``users_path``; unknown users get the popular items."""
    if k < 1:
        raise ValueError(f"--k must be >= 1, got {k}")
    users = list(dict.fromkeys(read_id_list(users_path, "user")))
    candidates = read_id_list(candidates_path, "candidate item") if candidates_path is not None else None
    served = ServedModel.load(artifacts)
    if candidates is not None:
        unknown = [c for c in candidates if c not in served.items]
        if len(unknown) == len(candidates):
            raise DataError(f"{candidates_path}: none of the {len(candidates)} candidate ids is in the model's catalog")
        if unknown:
            logger.warning("%s: %d candidate ids unknown to the model, ignored (e.g. %r)",
                           candidates_path, len(unknown), unknown[0])
        if len(candidates) - len(unknown) < k:
            logger.warning("only %d known candidates for k=%d: lists are shorter", len(candidates) - len(unknown), k)
    recs = []
    for start in tqdm(range(0, len(users), batch_size), desc="score", unit="batch", disable=not progress):
        recs.extend(served.recommend(users[start : start + batch_size], k, exclude_seen, candidates))
    n_unknown = sum(r.source == "popular" for r in recs)
    if n_unknown:
        logger.info("%d of %d users unknown to the model got popular items", n_unknown, len(users))
    frame = frame_of_recommendations(recs)
    write_parquet_atomic(frame, out)
    logger.info("wrote %d rows for %d users to %s", frame.height, len(users), out)
    return frame
