"""`tlrec score`: top-k for a list of users, written as one Parquet file.

Output columns ``user_id, item_id, score, rank`` (rank 1 = best), k rows per user
(fewer only when fewer than k items are allowed, e.g. a short candidate list). The
file is written to a temporary name and renamed, so a failed run leaves nothing.
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl
from tqdm.auto import tqdm

from serving.recommender import ServedModel
from services.files import read_id_list, write_parquet_atomic
from services.jobs import frame_of_recommendations
from training.data import DataError

logger = logging.getLogger(__name__)


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
