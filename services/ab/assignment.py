"""``tlrec ab assign``: the variant of every listed user, as a Parquet file.

Uses :func:`serving.experiments.assign_variant`, the function the API calls,
so a file made here and the live service agree user by user.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import polars as pl
from tlrec.services.files import read_id_list
from tlrec.serving.experiments import EXPERIMENT, VARIANT, Experiment, assign_many
from tlrec.tables import Columns

from tlrec.files import write_parquet_atomic

logger = logging.getLogger(__name__)


def assign_users(experiment: Experiment, users: Sequence[str]) -> pl.DataFrame:
    """``[n_in, 3]`` ``user_id, experiment, variant`` for the users inside the traffic share, input order.

    Users outside the share (``traffic < 1``) are left out; duplicates are kept once.
    """
    unique = list(dict.fromkeys(users))
    variants = assign_many(unique, experiment)
    frame = pl.DataFrame({Columns.USER: unique, VARIANT: variants},
                         schema={Columns.USER: pl.String, VARIANT: pl.String})
    frame = frame.filter(pl.col(VARIANT).is_not_null())
    return frame.select(Columns.USER, pl.lit(experiment.name).alias(EXPERIMENT), VARIANT)


def assign_job(experiment: Experiment, users_path: Path, out: Path) -> tuple[pl.DataFrame, dict[str, int]]:
    """Assign the users of ``users_path`` (one id a line) and write ``out`` atomically.

    Returns the frame and the number of users per variant (plus ``"(not in experiment)"``).
    """
    users = list(dict.fromkeys(read_id_list(users_path, "user", Columns.USER)))
    frame = assign_users(experiment, users)
    write_parquet_atomic(frame, out)
    counts = {v: int((frame[VARIANT] == v).sum()) for v in experiment.variant_names}
    counts["(not in experiment)"] = len(users) - frame.height
    logger.info("assigned %d of %d users to %s -> %s", frame.height, len(users), experiment.name, out)
    return frame, counts
