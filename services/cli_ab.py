"""``tlrec ab ...``: the A/B test harness (assign, analyze, replay, validate).

A typer sub-app; ``services/cli.py`` mounts it with ``app.add_typer(ab_app, name="ab")``.
Expected failures (a missing column, an unknown variant, weights that do not sum
to 1, a corrupt YAML file) go through ``services.cli.friendly_errors``: one line
``error: ...`` on stderr and exit code 2. ``--json`` prints exactly one JSON
object on stdout (logs go to stderr).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from tlrec.errors import UsageError
from tlrec.services.errors import friendly_errors

ab_app = typer.Typer(
    name="ab",
    help="A/B tests: assign users, analyse exposures and outcomes, replay artifacts offline.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


ExperimentArg = Annotated[Path, typer.Argument(help="Experiment YAML file.", show_default=False)]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object instead of tables.")]
OutOpt = Annotated[Path | None, typer.Option(help="Folder for report.md, analysis.json and the PNG plots.")]
LooksOpt = Annotated[int, typer.Option(help="Looks of the sequential (mSPRT) test, equally spaced in time.")]


def _console() -> Any:
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200, soft_wrap=False)


def _emit(analysis: Any, as_json: bool, out: Path | None, title: str) -> None:
    from tlrec.services.ab.report import rich_tables, write_report

    report = write_report(analysis, out, title) if out is not None else None
    if as_json:
        typer.echo(json.dumps(analysis.to_dict(), allow_nan=False))
        return
    console = _console()
    for table in rich_tables(analysis):
        console.print(table)
    for key in ("interleaving",):
        if key in analysis.extra:
            _interleaving_table(console, analysis.extra[key]["rows"])
    if report is not None:
        console.print(f"report: {report}")


def _interleaving_table(console: Any, rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="team-draft interleaving (each user sees both rankings)")
    for col in ("variant", "vs", "users", "wins", "losses", "ties", "win share", "interval", "p-value"):
        table.add_column(col, justify="left" if col in ("variant", "vs") else "right")
    for r in rows:
        table.add_row(r["variant"], r["control"], str(r["users"]), str(r["wins"]), str(r["losses"]), str(r["ties"]),
                      f"{r['win_share']:.4f}", f"[{r['ci_low']:.4f}, {r['ci_high']:.4f}]", f"{r['p_value']:.3g}",
                      style="bold" if r["significant"] else "")
    console.print(table)


@ab_app.command()
@friendly_errors
def validate(experiment: ExperimentArg) -> None:
    """Check an experiment file and print it as parsed (defaults filled in)."""
    from tlrec.serving.experiments import load_experiment

    typer.echo(load_experiment(experiment).model_dump_json(indent=2))


@ab_app.command()
@friendly_errors
def assign(
    experiment: ExperimentArg,
    users: Annotated[Path, typer.Option(
        help="Users: one id a line, or a table (Parquet, CSV, JSON lines) with a user_id column.")],
    out: Annotated[Path, typer.Option(help="Output Parquet: user_id, experiment, variant (users in the traffic).")],
) -> None:
    """Assign users to variants with the stable hash the API uses."""
    from rich.table import Table

    from tlrec.services.ab.assignment import assign_job
    from tlrec.serving.experiments import load_experiment

    exp = load_experiment(experiment)
    frame, counts = assign_job(exp, users, out)
    table = Table(title=f"{exp.name}: users per variant")
    table.add_column("variant")
    table.add_column("users", justify="right")
    table.add_column("weight", justify="right")
    for name, n in counts.items():
        table.add_row(name, str(n), f"{exp.weights[name]:g}" if name in exp.weights else "")
    console = _console()
    console.print(table)
    console.print(f"{out} ({frame.height} rows)")


@ab_app.command()
@friendly_errors
def analyze(
    experiment: ExperimentArg,
    exposures: Annotated[Path, typer.Option(help="Exposures: user_id, experiment, variant, timestamp.")],
    outcomes: Annotated[Path, typer.Option(help="Outcome events: user_id, event, value, timestamp.")],
    pre_period: Annotated[Path | None, typer.Option(help="Pre-period events (same columns) for CUPED.")] = None,
    covariate_from: Annotated[Path | None, typer.Option(
        help="A return model (tlrec train --task return): each user's predicted P(return) before exposure "
             "is the CUPED covariate, when there is no pre-period.")] = None,
    as_json: JsonOpt = False,
    out: OutOpt = None,
    looks: LooksOpt = 20,
) -> None:
    """Effects per variant with intervals, SRM check, CUPED, sequential test; Markdown + PNG with --out."""
    from tlrec.services.ab.analysis import analyze as run
    from tlrec.services.ab.covariate import predicted_covariate
    from tlrec.services.ab.inputs import load_exposures, load_outcomes
    from tlrec.serving.experiments import load_experiment

    exp = load_experiment(experiment)
    exposed = load_exposures(exposures, exp)
    result = run(exposed, load_outcomes(outcomes),
                 exp, load_outcomes(pre_period, "pre-period") if pre_period is not None else None, looks=looks,
                 covariate=predicted_covariate(covariate_from, exposed) if covariate_from is not None else None)
    _emit(result, as_json, out, f"A/B test {exp.name}")


@ab_app.command()
@friendly_errors
def replay(
    experiment: ExperimentArg,
    interactions: Annotated[Path, typer.Option(help="Logged interactions after the artifacts' training data.")],
    artifacts: Annotated[
        Path | None, typer.Option(help="Artifacts root the variants' `artifact` names are versions of.")
    ] = None,
    k: Annotated[int, typer.Option(help="Length of each recommended list.")] = 10,
    since: Annotated[
        str | None, typer.Option(help="Only interactions at/after this time (epoch seconds or ISO-8601).")
    ] = None,
    as_json: JsonOpt = False,
    out: OutOpt = None,
    looks: LooksOpt = 20,
) -> None:
    """Offline lift of each variant's artifact over control: replayed A/B test and team-draft interleaving."""
    import polars as pl

    from tlrec.services.ab.replay import load_models
    from tlrec.services.ab.replay import replay as run
    from tlrec.files import write_parquet_atomic
    from tlrec.serving.experiments import load_experiment
    from tlrec.tables import Columns, DataError
    from tlrec.training.data import load_interactions

    if k < 1:
        raise UsageError(f"--k must be >= 1, got {k}")
    exp = load_experiment(experiment)
    holdout = load_interactions(interactions)
    if since is not None:
        cutoff = _parse_time(since)
        holdout = holdout.filter(pl.col(Columns.TIMESTAMP) >= cutoff)
        if holdout.height == 0:
            raise DataError(f"{interactions.name}: no interactions at or after --since {since}")
    models = load_models(exp, artifacts, experiment.resolve().parent)
    result, data = run(exp, models, holdout, k=k, looks=looks)
    if out is not None:
        write_parquet_atomic(data.exposures, out / "replay_exposures.parquet")
        write_parquet_atomic(data.outcomes, out / "replay_outcomes.parquet")
    _emit(result, as_json, out, f"Offline replay of {exp.name}")


def _parse_time(text: str) -> int:
    import datetime as dt

    try:
        return int(float(text))
    except ValueError:
        pass
    try:
        parsed = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise UsageError(f"--since: expected epoch seconds or an ISO-8601 time, got {text!r}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.timezone.utc)
    return int(parsed.timestamp())
