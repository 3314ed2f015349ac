"""The experiments page: what is served (variants, traffic, versions), exposures so far, and the analysis.

The analysis itself (effects with intervals, SRM, the report's plots) belongs to the A/B
harness in ``services.ab``, a layer above this one: ``tlrec serve`` hands it to the app as an
``ExperimentAnalyzer``. An app built without one lists the experiments and their exposures
and says the analysis is not available.
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlrec.errors import one_line
from tlrec.serving.api.variants import LiveExperiment
from tlrec.serving.console.reports import PLOT_LOCK
from tlrec.serving.experiments import Experiment

logger = logging.getLogger(__name__)

#: ``analyze(experiment, exposures file, events folder) -> (analysis as JSON, {"effects.png": PNG bytes, ...})``,
#: the same analysis and plots as ``tlrec ab analyze --out``, with the API's events as outcomes. Raises
#: (``TlrecError``, one line) when there is nothing to analyse yet.
ExperimentAnalyzer = Callable[[Experiment, Path, Path], tuple[dict[str, Any], dict[str, bytes]]]


@dataclass
class VariantView:
    name: str
    weight: float
    model_version: str
    exposures: int  # users exposed so far (the exposure log)


@dataclass
class ExperimentView:
    """One served experiment with its arms, exposures and (if it could be computed) its analysis."""

    name: str
    description: str
    traffic: float
    control: str
    start: float | None
    stop: float | None
    active: bool
    file: str
    variants: list[VariantView]
    analysis: dict[str, Any] | None = None
    plots: dict[str, bytes] = field(default_factory=dict)
    analysis_note: str | None = None  # why there is no analysis


def exposure_counts(path: Path) -> dict[tuple[str, str], int]:
    """Users exposed per ``(experiment, variant)`` in an exposure log (JSON lines; unreadable lines skipped)."""
    users: dict[tuple[str, str], set[str]] = defaultdict(set)
    try:
        with open(path, "rb") as lines:
            for line in lines:
                try:
                    record = json.loads(line)
                    users[(str(record["experiment"]), str(record["variant"]))].add(str(record["user_id"]))
                except (ValueError, KeyError, TypeError):
                    continue
    except FileNotFoundError:
        return {}
    return {key: len(found) for key, found in users.items()}


def _epoch(value: float) -> float | None:
    return value if math.isfinite(value) else None


def experiment_views(experiments: tuple[LiveExperiment, ...], exposures_file: Path, events_dir: Path,
                     analyzer: ExperimentAnalyzer | None, now: float) -> list[ExperimentView]:
    """Every served experiment as the page shows it; blocking (reads the logs, runs the analysis)."""
    counts = exposure_counts(exposures_file) if experiments else {}
    views = []
    for live in experiments:
        exp = live.experiment
        variants = [VariantView(v.name, v.weight, live.arms[v.name].model.version, counts.get((exp.name, v.name), 0))
                    for v in exp.variants]
        view = ExperimentView(exp.name, exp.description, exp.traffic, exp.control_variant, _epoch(live.start),
                              _epoch(live.stop), live.start <= now < live.stop, live.source.name, variants)
        if analyzer is None:
            view.analysis_note = "analysis not available in this app (tlrec serve provides it)"
        elif not any(v.exposures for v in variants):
            view.analysis_note = "no exposures yet"
        else:
            try:
                with PLOT_LOCK:  # the analyzer draws with pyplot
                    view.analysis, view.plots = analyzer(exp, exposures_file, events_dir)
            except Exception as exc:  # noqa: BLE001 - the page says why; the rest still shows
                logger.info("console: no analysis of %s: %s", exp.name, one_line(exc, 300))
                view.analysis_note = one_line(exc, 300)
        views.append(view)
    return views
