"""Reading the harness's input files: exposures, outcomes and pre-period events.

* exposures: ``user_id, experiment, variant, timestamp`` (one row per exposure;
  the API's ``ExposureLog`` writes one per user).
* outcomes / pre-period: ``user_id, event, value, timestamp`` (``value``
  optional, default 1.0): the shape of interactions, whose extra columns
  (``item_id`` ...) are ignored.

Parquet, CSV or JSON lines; timestamps as epoch seconds, datetimes or ISO-8601
strings (all become Int64 epoch seconds). Bad input raises a one-line
``DataError`` naming the file, row and column.
"""

from __future__ import annotations

import logging
from pathlib import Path

import polars as pl
from tlrec.serving.experiments import EXPERIMENT, EXPOSURE_COLUMNS, VARIANT, Experiment
from tlrec.tables import Columns, DataError
from tlrec.training.data import load_events

logger = logging.getLogger(__name__)

OUTCOME_COLUMNS = (Columns.USER, Columns.EVENT, Columns.VALUE, Columns.TIMESTAMP)
_ROW = "__row"


def _epoch(value: object) -> int | None:
    return None if value is None else int(value.timestamp())  # type: ignore[attr-defined]


def load_exposures(path: str | Path, experiment: Experiment) -> pl.DataFrame:
    """Exposures of ``experiment`` inside its ``[start, stop)`` window.

    Returns:
        ``[n, 4]`` ``user_id`` (str), ``experiment`` (str), ``variant`` (str),
        ``timestamp`` (Int64 s); rows of other experiments and outside the
        window are dropped (logged).

    Raises:
        DataError: a missing column, a variant the experiment does not define
            (names the row), or no exposure of this experiment at all.
    """
    path = Path(path)
    df = load_events(path, required=EXPOSURE_COLUMNS, string_columns=(EXPERIMENT, VARIANT))
    df = df.select(EXPOSURE_COLUMNS).with_row_index(_ROW, offset=1)
    others = df.filter(pl.col(EXPERIMENT) != experiment.name)
    if others.height:
        names = others[EXPERIMENT].unique().sort().head(3).to_list()
        logger.info("%s: ignoring %d exposures of other experiments (%s)", path.name, others.height,
                    ", ".join(names))
        df = df.filter(pl.col(EXPERIMENT) == experiment.name)
    if df.height == 0:
        found = others[EXPERIMENT].unique().sort().head(5).to_list()
        raise DataError(f"{path.name}: no exposures of experiment {experiment.name!r} "
                        f"(found experiments: {', '.join(found) or 'none'})")
    unknown = df.filter(~pl.col(VARIANT).is_in(experiment.variant_names))
    if unknown.height:
        rec = unknown.row(0, named=True)
        raise DataError.at(path, f"unknown variant {rec[VARIANT]!r} (experiment {experiment.name!r} has "
                           f"{', '.join(experiment.variant_names)})", row=rec[_ROW], column=VARIANT)
    df = df.drop(_ROW)
    start, stop = _epoch(experiment.start), _epoch(experiment.stop)
    if start is not None or stop is not None:
        inside = pl.lit(True)
        if start is not None:
            inside = inside & (pl.col(Columns.TIMESTAMP) >= start)
        if stop is not None:
            inside = inside & (pl.col(Columns.TIMESTAMP) < stop)
        kept = df.filter(inside)
        if kept.height < df.height:
            logger.warning("%s: %d exposures outside the experiment window [%s, %s) dropped", path.name,
                           df.height - kept.height, experiment.start, experiment.stop)
        if kept.height == 0:
            raise DataError(f"{path.name}: every exposure is outside the experiment window "
                            f"[{experiment.start}, {experiment.stop})")
        df = kept
    return df


def load_outcomes(path: str | Path, what: str = "outcomes") -> pl.DataFrame:
    """Outcome (or pre-period) events ``[n, 4]``: ``user_id, event, value, timestamp``.

    ``event`` is required; ``value`` defaults to 1.0. Raises DataError on bad input.
    """
    path = Path(path)
    df = load_events(path, required=(Columns.USER, Columns.EVENT, Columns.TIMESTAMP))
    if Columns.VALUE not in df.columns:
        df = df.with_columns(pl.lit(1.0, dtype=pl.Float64).alias(Columns.VALUE))
    logger.info("loaded %s %s: %d events, %d users", what, path.name, df.height, df[Columns.USER].n_unique())
    return df.select(OUTCOME_COLUMNS)
