"""``tlrec split``: one interactions file into ``train.parquet`` and ``test.parquet``.

Evaluate a model on events it was not trained on: train on ``train.parquet``, evaluate on
``test.parquet``. The ways to split (``training.splits``):

* ``time``: each user's newest ``--test-fraction`` of events (at least one stays in train);
* ``random``: as many of each user's events, drawn at random (when time order means nothing);
* ``global-time``: every event after one cutoff time (the newest fraction of all events);
* ``users`` / ``items``: a share of the users (new users) or items (new items) with all
  their events;
* ``auto`` (default): ``time`` when the order of each user's events carries signal, else
  ``random`` (``training.validation.time_signal``, which says why in the log).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

from tlrec.errors import UsageError
from tlrec.files import write_parquet_atomic
from tlrec.tables import Columns, DataError
from tlrec.training.data import load_interactions
from tlrec.training.splits import (
    cold_item_split,
    cold_user_split,
    global_temporal_split,
    random_split,
    temporal_split,
)
from tlrec.training.validation import time_signal

logger = logging.getLogger(__name__)

__all__ = ["SPLITS", "SplitResult", "split_job"]

SplitBy = Literal["auto", "time", "random", "global-time", "users", "items"]
SPLITS: tuple[str, ...] = get_args(SplitBy)


@dataclass(frozen=True)
class SplitResult:
    """What ``split_job`` wrote: the two files, how it split and their sizes."""

    train: Path
    test: Path
    by: str
    train_rows: int
    test_rows: int
    test_users: int


def split_job(interactions_path: Path, out: Path, by: str = "auto", test_fraction: float = 0.2,
              seed: int = 0) -> SplitResult:
    """Split ``interactions_path`` (validated like ``tlrec train``'s input) into ``out/train.parquet`` and
    ``out/test.parquet`` (each written atomically, rows in input order). ``UsageError`` for a bad ``by``
    or fraction; ``DataError`` naming the file for bad input or a split that leaves one side empty."""
    if by not in SPLITS:
        raise UsageError(f"--by: expected one of {', '.join(SPLITS)}, got {by!r}")
    if not 0.0 < test_fraction < 1.0:
        raise UsageError(f"--test-fraction: expected a number between 0 and 1, got {test_fraction:g}")
    interactions = load_interactions(interactions_path)
    if by == "auto":
        carries, why = time_signal(interactions, seed=seed)
        by = "time" if carries else "random"
        logger.info("split by %s: %s", by, why)
    if by == "time":
        train, test = temporal_split(interactions, test_fraction)
    elif by == "random":
        train, test = random_split(interactions, test_fraction, seed=seed)
    elif by == "global-time":
        train, test = global_temporal_split(interactions, test_fraction)
    else:
        held_out = cold_user_split if by == "users" else cold_item_split
        train, test, _ = held_out(interactions, test_fraction, seed=seed)
    if train.is_empty() or test.is_empty():
        raise DataError(f"{interactions_path}: splitting by {by} leaves the {'test' if test.is_empty() else 'train'} "
                        f"side empty ({interactions.height} interactions; users need 2+ events for time and random)")
    out.mkdir(parents=True, exist_ok=True)
    paths = out / "train.parquet", out / "test.parquet"
    write_parquet_atomic(train, paths[0])
    write_parquet_atomic(test, paths[1])
    return SplitResult(*paths, by=by, train_rows=train.height, test_rows=test.height,
                       test_users=test[Columns.USER].n_unique())

