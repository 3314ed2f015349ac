"""The `tlrec` command (a contract: tests and outside checks call it).

Every command turns bad input into one line on stderr that names what was wrong
and where, and exits non-zero (2); nothing half-written is left behind.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

app = typer.Typer(
    name="tlrec",
    help="Recommendations and behaviour prediction built on transfer learning.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

from tlrec.services.cli_ab import ab_app  # noqa: E402  (a typer sub-app: `tlrec ab ...`)
from tlrec.services.cli_encoders import encoders_app  # noqa: E402  (a typer sub-app: `tlrec encoders ...`)
from tlrec.services.cli_events import events_app  # noqa: E402  (a typer sub-app: `tlrec events ...`)

app.add_typer(encoders_app, name="encoders")
app.add_typer(ab_app, name="ab")
app.add_typer(events_app, name="events")

logger = logging.getLogger("tlrec")

from tlrec.errors import ConfigError, UsageError  # noqa: E402
from tlrec.services.errors import friendly_errors, set_verbose  # noqa: E402
from tlrec.services.errors import one_line as _one_line  # noqa: E402


@app.callback()
def main(verbose: Annotated[bool, typer.Option(
        "--verbose", "-v", help="Debug logging, and the traceback of a failure.")] = False) -> None:
    """Set up logging (stderr) and offline model loading.

    A failure prints one ``error:`` line (``services.errors``): exit 2 for an expected one
    (bad input, corrupt artifact, bad option), 1 for a bug; ``--verbose`` adds its traceback.
    """
    set_verbose(verbose)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    for noisy in ("httpx", "urllib3", "filelock", "transformers", "huggingface_hub", "faiss.loader"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _parse_ks(value: str) -> list[int]:
    try:
        ks = [int(x) for x in value.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--k: expected comma-separated integers like 10,20, got {value!r}") from None
    if not ks or min(ks) < 1:
        raise UsageError(f"--k: every value must be >= 1, got {value!r}")
    return ks


def _settings(settings_class: Any, overrides: dict[str, Any]) -> Any:
    """``settings_class(**overrides)`` (reads TLREC_* too); ``ConfigError`` names the first bad setting."""
    from pydantic import ValidationError

    try:
        return settings_class(**overrides)
    except ValidationError as exc:
        first = exc.errors()[0]
        name = ".".join(str(x) for x in first["loc"]) or "settings"
        raise ConfigError(f"setting {name} (TLREC_{name.upper()} or its option): {first['msg']}") from None


def _parse_settings(pairs: list[str]) -> dict[str, Any]:
    """``["dim=128", "features=\"vectors\""]`` -> dict; values parse as JSON, else stay strings."""
    import json

    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--set: expected KEY=VALUE, got {pair!r}")
        try:
            out[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            out[key.strip()] = value
    return out


@app.command()
@friendly_errors
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo's catalog, vectors and artifacts.")] = Path("demo_out"),
    items: Annotated[int, typer.Option(help="Catalog size.")] = 2000,
    users: Annotated[int, typer.Option(help="Number of users.")] = 1000,
    seed: Annotated[int, typer.Option(help="Seed of the generated data.")] = 0,
) -> None:
    """End-to-end on the built-in demo catalog: generate, embed, train, evaluate, recommend."""
    from tlrec.services.demo import run_demo

    run_demo(out, n_items=items, n_users=users, seed=seed)


@app.command("import-movielens")
@friendly_errors
def import_movielens(
    path: Annotated[Path, typer.Argument(help="MovieLens folder (100k or latest-small layout).")],
    out: Annotated[Path, typer.Option(help="Output folder for catalog.parquet and interactions.parquet.")],
) -> None:
    """MovieLens -> catalog + interactions (title and genres as item text)."""
    from tlrec.services.movielens import import_movielens as run

    catalog, interactions = run(path, out)
    typer.echo(f"{catalog}\n{interactions}")


@app.command()
@friendly_errors
def split(
    interactions: Annotated[Path, typer.Option(help="All interactions (Parquet, CSV or JSON lines).")],
    out: Annotated[Path, typer.Option(help="Output folder for train.parquet and test.parquet.")],
    by: Annotated[str, typer.Option(
        help="auto (time if the order of each user's events carries signal, else random); time: each user's "
             "newest events; random: as many, drawn at random; global-time: everything after one cutoff; users, "
             "items: a share of users (items) with all their events.")] = "auto",
    test_fraction: Annotated[float, typer.Option(help="Share of events (of users, of items) in test.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the random draws.")] = 0,
) -> None:
    """Hold out test interactions: train on OUT/train.parquet, evaluate on OUT/test.parquet."""
    from tlrec.services.split import split_job

    result = split_job(interactions, out, by, test_fraction, seed)
    logger.info("split by %s: %d train / %d test interactions (%d users in test)", result.by, result.train_rows,
                result.test_rows, result.test_users)
    typer.echo(f"{result.train}\n{result.test}")


@app.command()
@friendly_errors
def embed(
    catalog: Annotated[Path, typer.Option(help="Catalog file (Parquet, CSV or JSONL).")],
    out: Annotated[Path, typer.Option(help="Item-vectors Parquet to write (+ .manifest.json).")],
    text: Annotated[str, typer.Option(help="Text encoder name, or 'none'.")] = "minilm",
    image: Annotated[str, typer.Option(help="Image encoder name, or 'none'.")] = "efficientnet-lite0",
    audio: Annotated[str, typer.Option(help="Audio encoder name, or 'none'.")] = "crepe-tiny",
    ray_address: Annotated[
        str, typer.Option(help="Ray cluster to run on: 'local' starts one here; 'auto' or ray://host:port joins one.")
    ] = "local",
    no_ray: Annotated[bool, typer.Option("--no-ray", help="Run in this process (small catalogs).")] = False,
    quantize: Annotated[
        bool, typer.Option("--quantize", help="int8 text encoder (kept only if cosine to fp32 >= 0.99).")
    ] = False,
) -> None:
    """Embed catalog items with pre-trained encoders (a Ray Data job) and fuse them into one vector per item."""
    from tlrec.services.jobs import embed_job

    if quantize:
        if text != "minilm":
            raise UsageError(f"--quantize: only the default text encoder 'minilm' has an int8 version, not {text!r}")
        text = "minilm-int8"
    names = {m: (None if v.lower() == "none" else v) for m, v in {"text": text, "image": image, "audio": audio}.items()}
    path = embed_job(catalog, out, ray_address=None if no_ray else ray_address, **names)
    typer.echo(str(path))


@app.command()
@friendly_errors
def train(
    catalog: Annotated[Path, typer.Option(help="Catalog file.")],
    interactions: Annotated[Path, typer.Option(help="Interactions file.")],
    out: Annotated[Path, typer.Option(help="Artifacts root; the new version becomes 'current'.")],
    vectors: Annotated[Path | None, typer.Option(help="Item vectors from `tlrec embed` (else embeds now).")] = None,
    model: Annotated[str, typer.Option(
        help="auto (compare ncf, ease, itemknn, lightfm, popularity and a blend on a validation split of the "
             "interactions; serve the best), or one of ncf, ease, itemknn, lightfm, popularity, content, blend, "
             "sasrec.")
    ] = "auto",
    strict: Annotated[bool, typer.Option(help="Interactions naming unknown items are an error, not dropped.")] = False,
    epochs: Annotated[int | None, typer.Option(help="Maximum epochs (NCF: early stopping picks the best).")] = None,
    seed: Annotated[int | None, typer.Option(help="Random seed.")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Model config KEY=VALUE (JSON values), repeatable; with "
                                                     "--model auto, MODEL.KEY=VALUE sets one candidate's.")
    ] = None,
    modalities: Annotated[str, typer.Option(
        help="Content modalities to use: all, a comma list (text,image,audio), or auto (drop those that "
             "transfer negatively on a time-based split)."
    )] = "all",
    finetune_layers: Annotated[int | None, typer.Option(
        help="NCF: also train the top N layers of the text encoder (after the latter layers; kept only if "
             "validation improves).", min=0)] = None,
    task: Annotated[str, typer.Option(
        help="recommend; next-item: predict each user's next event (validation holds out each user's last "
             "event; auto compares sasrec, ncf, ease and popularity); propensity: calibrated P(--positive | "
             "user, item), every interaction an example; return: calibrated P(a user has an event within "
             "--horizon after the as-of time).")] = "recommend",
    positive: Annotated[str | None, typer.Option(
        help="--task propensity: what counts as positive, an event name (purchase) or a value condition "
             "(rating>=4, value>0).")] = None,
    horizon: Annotated[str | None, typer.Option(
        help="--task return: the window after the as-of time, a number and a unit s, m, h, d or w (30d).")] = None,
    as_of: Annotated[str | None, typer.Option(
        help="--task return: learn from events up to this time (epoch seconds or ISO-8601; default the newest "
             "event); later events are ignored.")] = None,
    ray_address: Annotated[str | None, typer.Option(
        help="Tune --model auto's candidates (and --modalities auto's variants) as parallel Ray tasks on this "
             "cluster ('local' starts one here; 'auto' or ray://host:port joins one); the result is the "
             "in-process run's. Default: in this process.")] = None,
) -> None:
    """Fit a model and publish it as a new artifact version."""
    from tlrec.services.jobs import train_job

    config = _parse_settings(set_ or [])
    config.update({k: v for k, v in {"epochs": epochs, "seed": seed, "finetune_layers": finetune_layers}.items()
                   if v is not None})
    if (task == "propensity") != (positive is not None):
        raise UsageError("--positive SPEC goes with --task propensity (and --task propensity needs it)")
    if (task == "return") != (horizon is not None) or (as_of is not None and task != "return"):
        raise UsageError("--horizon (and --as-of) go with --task return (and --task return needs --horizon)")
    if task in ("propensity", "return") and (model != "auto" or modalities != "all" or finetune_layers
                                             or ray_address):
        raise UsageError(f"--task {task} trains its own model: drop --model, --modalities, --finetune-layers "
                         "and --ray-address")
    if task == "propensity":
        from tlrec.services.propensity_jobs import train_propensity_job

        typer.echo(str(train_propensity_job(catalog, interactions, out, positive, vectors_path=vectors,
                                            strict=strict, config=config)))
        return
    if task == "return":
        from tlrec.services.propensity_jobs import train_return_job
        from tlrec.training.data import parse_time
        from tlrec.training.return_model import parse_horizon

        try:
            seconds, cutoff = parse_horizon(horizon), (parse_time(as_of) if as_of is not None else None)
        except ValueError as exc:
            raise UsageError(f"--horizon/--as-of: {exc}") from None
        typer.echo(str(train_return_job(catalog, interactions, out, seconds, cutoff, vectors_path=vectors,
                                        strict=strict, config=config)))
        return
    version = train_job(catalog, interactions, out, vectors_path=vectors, model=model, strict=strict, config=config,
                        modalities=modalities, task=task, ray_address=ray_address)
    typer.echo(str(version))


@app.command()
@friendly_errors
def evaluate(
    interactions: Annotated[Path, typer.Option(
        help="Test interactions (not used in training); with --transfer-report, ALL interactions (it splits them).")],
    artifacts: Annotated[Path | None, typer.Option(help="Artifacts root or version directory.")] = None,
    k: Annotated[str, typer.Option(help="Cut-offs, comma-separated.")] = "10,20",
    report: Annotated[Path | None, typer.Option(
        help="Write the report into this directory: report.md, TASK.json (recommend.json, next_item.json, "
             "propensity.json, return.json) and a PNG (NDCG by user activity, or the reliability diagram).")] = None,
    transfer_report: Annotated[bool, typer.Option(
        "--transfer-report", help="Train NCF with and without pre-trained features, and per modality; report the "
                                  "gain for warm users, sparse users and cold items (needs --catalog, --vectors).")
    ] = False,
    catalog: Annotated[Path | None, typer.Option(help="Catalog file (--transfer-report).")] = None,
    vectors: Annotated[Path | None, typer.Option(help="Item vectors from `tlrec embed` (--transfer-report).")] = None,
    set_: Annotated[
        list[str] | None, typer.Option("--set", help="Model config KEY=VALUE for --transfer-report (NCF; SASRec "
                                                     "with --task next-item), repeatable.")
    ] = None,
    task: Annotated[str, typer.Option(
        help="recommend; next-item: HR@k, NDCG@k and MRR of each test user's earliest test event; propensity: "
             "ROC-AUC, PR-AUC, log loss, Brier and calibration error of every test interaction (--report adds a "
             "reliability diagram); return: the same for every known user, label = a test event within the "
             "horizon after the model's as-of time.")
    ] = "recommend",
    ray_address: Annotated[str | None, typer.Option(
        help="--transfer-report: fit the variants as parallel Ray tasks on this cluster ('local' starts one "
             "here); the report is the in-process run's. Default: in this process.")] = None,
) -> None:
    """Full-ranking evaluation (seen items excluded) on held-out interactions, overall and by user activity."""
    from rich.console import Console
    from rich.markdown import Markdown

    from tlrec.services.jobs import evaluate_job, metrics_table, probability_table, transfer_job

    if transfer_report:
        if catalog is None or vectors is None:
            raise UsageError("--transfer-report needs --catalog and --vectors (and all --interactions)")
        from tlrec.training.transfer import render_markdown

        result = transfer_job(catalog, interactions, vectors, report, config=_parse_settings(set_ or []), task=task,
                              ray_address=ray_address)
        Console().print(Markdown(render_markdown(result)))
        return
    if artifacts is None:
        raise UsageError("evaluate needs --artifacts (or --transfer-report with --catalog and --vectors)")
    if task == "propensity":
        from tlrec.services.propensity_jobs import evaluate_propensity_job

        Console().print(probability_table(evaluate_propensity_job(artifacts, interactions, report)))
        return
    if task == "return":
        from tlrec.services.propensity_jobs import evaluate_return_job

        Console().print(probability_table(evaluate_return_job(artifacts, interactions, report)))
        return
    ks = _parse_ks(k)
    results = evaluate_job(artifacts, interactions, ks, report=report, task=task)
    Console().print(metrics_table(results, ks))


@app.command()
@friendly_errors
def score(
    artifacts: Annotated[Path, typer.Option(help="Artifacts root or version directory.")],
    users: Annotated[Path, typer.Option(
        help="Users: one id a line, or a table (Parquet, CSV, JSON lines) with a user_id column.")],
    k: Annotated[int, typer.Option(help="Items per user.")],
    out: Annotated[Path, typer.Option(help="Output file: user_id, item_id, score, rank, model_version (Parquet; "
                                           "CSV when it ends in .csv).")],
    candidates: Annotated[Path | None, typer.Option(
        help="Rank only these items: one id a line, or a table with an item_id column.")] = None,
    exclude_seen: Annotated[bool, typer.Option("--exclude-seen", help="Drop items seen in training.")] = False,
    ray_address: Annotated[
        str, typer.Option(help="Ray cluster to run on: 'local' starts one here; 'auto' or ray://host:port joins one.")
    ] = "local",
    no_ray: Annotated[bool, typer.Option("--no-ray", help="Run in this process (small user sets).")] = False,
    partition_size: Annotated[int, typer.Option(help="Users per partition (one part file, one Ray task).")] = 5000,
    catalog: Annotated[Path | None, typer.Option(
        help="The catalog: adds each item's title (a column after item_id) so a person can read the lists.")] = None,
) -> None:
    """Batch scoring: top-k for every listed user (unknown users get popular items); resumable after a crash."""
    from tlrec.services.batch_scoring import ScoringJobError, score_job

    try:
        result = score_job(artifacts, users, k, out, candidates_path=candidates, exclude_seen=exclude_seen,
                           ray_address=None if no_ray else ray_address, partition_size=partition_size,
                           catalog_path=catalog)
    except ScoringJobError as exc:
        typer.echo(f"error: {_one_line(exc)}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{out} ({result.rows} rows)")


@app.command()
@friendly_errors
def predict(
    artifacts: Annotated[Path, typer.Option(help="Artifacts root or version directory of a --task propensity or "
                                                 "--task return model.")],
    out: Annotated[Path, typer.Option(
        help="Output Parquet: user_id, item_id, probability, known_user, known_item, model_version (--pairs); "
             "user_id, probability, known_user, horizon_days, as_of, model_version (--users).")],
    pairs: Annotated[Path | None, typer.Option(
        help="Propensity: file of user_id, item_id pairs (CSV, Parquet or JSONL).")] = None,
    users: Annotated[Path | None, typer.Option(
        help="Return: users, one id a line or a table with a user_id column.")] = None,
    ray_address: Annotated[str, typer.Option(
        help="Ray cluster to run on: 'local' starts one here (only for more than one partition); 'auto' or "
             "ray://host:port joins one.")] = "local",
    no_ray: Annotated[bool, typer.Option("--no-ray", help="Run in this process.")] = False,
    partition_size: Annotated[int, typer.Option(help="Rows per partition (one part file, one Ray task).")] = 100_000,
) -> None:
    """Calibrated probabilities: of pairs (propensity; unknown users and new items are answered from content)
    or of users coming back within the horizon (return); resumable after a crash."""
    from tlrec.services.batch_predict import predict_job
    from tlrec.services.partitions import ScoringJobError

    try:
        result = predict_job(artifacts, out, pairs_path=pairs, users_path=users,
                             ray_address=None if no_ray else ray_address, partition_size=partition_size)
    except ScoringJobError as exc:
        typer.echo(f"error: {_one_line(exc)}", err=True)
        raise typer.Exit(1) from None
    typer.echo(f"{out} ({result.rows} rows)")


@app.command()
@friendly_errors
def serve(
    artifacts: Annotated[
        Path | None, typer.Option(help="Artifacts root or version directory (else TLREC_ARTIFACTS).")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port.")] = 8000,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Serve without API keys (local experiments only).")
    ] = False,
    threads: Annotated[
        int | None, typer.Option(help="Model calls run at once, one thread each (default: the cores given but one).")
    ] = None,
    access_log: Annotated[bool, typer.Option(help="Log every request (uvicorn access log).")] = True,
    experiment: Annotated[
        list[Path] | None,
        typer.Option("--experiment", help="A/B experiment YAML file, repeatable (else TLREC_EXPERIMENTS): each "
                                          "user in one is answered by their variant's model; exposures logged."),
    ] = None,
    propensity: Annotated[Path | None, typer.Option(
        help="A --task propensity artifacts root: serves POST /v1/users/{id}/propensity (else "
             "TLREC_PROPENSITY_ARTIFACTS).")] = None,
    return_: Annotated[Path | None, typer.Option(
        "--return", help="A --task return artifacts root: serves GET /v1/users/{id}/return (else "
                         "TLREC_RETURN_ARTIFACTS).")] = None,
    catalog: Annotated[Path | None, typer.Option(
        help="Catalog for the web console and the answers' titles (else TLREC_CATALOG; default: the "
             "catalog the served version was trained on, if still there).")] = None,
) -> None:
    """Serve the recommendation API and the web console at / (FastAPI + uvicorn); settings from TLREC_*
    variables (see README)."""
    from tlrec.serving.settings import Settings

    overrides = {"artifacts": artifacts, "insecure": insecure or None, "threads": threads,
                 "experiments": experiment or None, "propensity_artifacts": propensity, "return_artifacts": return_,
                 "catalog": catalog}
    settings = _settings(Settings, {k: v for k, v in overrides.items() if v is not None})
    settings.check_secure()  # before any heavy import: refuse fast, and say why
    if settings.artifacts is None:
        raise UsageError("--artifacts: required (or set TLREC_ARTIFACTS)")
    # before numpy/torch/faiss load: their BLAS and OpenMP pools read these once, at load time
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(settings.intra_op_threads))

    import uvicorn

    from tlrec.serving.api.app import create_app
    from tlrec.serving.api.variants import load_model_set

    # the default model and every experiment variant's: fail fast, with a one-line error, before binding the port
    models = load_model_set(settings)
    from tlrec.serving.probability_models import ProbabilityModels

    probability = ProbabilityModels.load(settings)
    from tlrec.serving.api.middleware import uvicorn_http_options  # httptools + 431 past TLREC_MAX_HEADER_BYTES

    from tlrec.services.ab.live import analyze_live  # the console's experiments page: tlrec ab analyze, live

    uvicorn.run(create_app(settings, models, probability, analyze_live), host=host, port=port, log_level="info",
                access_log=access_log, timeout_graceful_shutdown=10,
                **uvicorn_http_options(settings.max_header_bytes))


if __name__ == "__main__":  # pragma: no cover
    app()
