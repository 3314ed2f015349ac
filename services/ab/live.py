"""The analysis of a served experiment, as the web console shows it while the experiment runs.

``tlrec serve`` hands :func:`analyze_live` to the app (``serving.console.experiments.ExperimentAnalyzer``):
the same analysis and plots as ``tlrec ab analyze --out`` (step 9 of the README's walk-through),
with the exposures the API logged and the events posted to the API as outcomes.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import polars as pl

from tlrec.services.ab.analysis import analyze
from tlrec.services.ab.inputs import OUTCOME_COLUMNS, load_exposures
from tlrec.services.ab.report import plots
from tlrec.serving.event_log import iter_all_events
from tlrec.serving.experiments import Experiment
from tlrec.tables import Columns


def api_outcomes(events_dir: Path) -> pl.DataFrame:
    """Every event the API's log holds as outcomes ``user_id, event, value, timestamp`` (as README step 9 reads
    them: a value not sent stays null)."""
    rows = [(e["user_id"], e["event"], None if e["value"] is None else float(e["value"]), int(e["timestamp"]))
            for e in iter_all_events(events_dir)]
    schema = {Columns.USER: pl.String, Columns.EVENT: pl.String, Columns.VALUE: pl.Float64,
              Columns.TIMESTAMP: pl.Int64}
    return pl.DataFrame(rows, schema=schema, orient="row").select(OUTCOME_COLUMNS)


def analyze_live(experiment: Experiment, exposures_file: Path, events_dir: Path
                 ) -> tuple[dict[str, Any], dict[str, bytes]]:
    """``(tlrec ab analyze --json, {"effects.png", "variants.png", "sequential.png": PNG bytes})`` of the
    exposures so far; ``DataError`` when there is nothing to analyse yet (no exposure, or none in control)."""
    result = analyze(load_exposures(exposures_file, experiment), api_outcomes(events_dir), experiment)
    return result.to_dict(), plots(result)
