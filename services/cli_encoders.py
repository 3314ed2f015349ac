"""``tlrec encoders ...``: choose, compare and run pre-trained encoders.

A typer sub-app; ``services/cli.py`` mounts it with
``app.add_typer(encoders_app, name="encoders")``. Like every tlrec command, bad
input becomes one line on stderr and exit code 2.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

encoders_app = typer.Typer(
    name="encoders",
    help="Choose, compare and run pre-trained encoders.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

from tlrec.errors import UsageError  # noqa: E402
from tlrec.services.errors import friendly_errors  # noqa: E402


def _console() -> Any:
    """A rich console; wide when stdout is not a terminal, so tables are not cut in logs and tests."""
    from rich.console import Console

    return Console() if sys.stdout.isatty() else Console(width=200, soft_wrap=False)


@encoders_app.callback()
def _main() -> None:
    """Pre-trained encoders: what they are (list) and how they do on your data (compare)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@encoders_app.command("list")
@friendly_errors
def list_encoders() -> None:
    """Model cards of the built-in encoders: name, modality, dim, params, size, format, input, source."""
    from tlrec.services.encoders import cards_table, list_cards

    _console().print(cards_table(list_cards()))


@encoders_app.command("compare")
@friendly_errors
def compare(
    catalog: Annotated[Path, typer.Option(help="Catalog file (Parquet, CSV or JSONL).")],
    interactions: Annotated[Path, typer.Option(help="Interactions file (Parquet, CSV or JSONL).")],
    encoders: Annotated[
        str | None,
        typer.Option(help="Comma-separated encoder names (e.g. minilm,crepe-full,hf:/models/bert); default: the "
                          "registry default of each modality the catalog has."),
    ] = None,
    vectors: Annotated[Path | None, typer.Option(
        help="Item vectors from `tlrec embed`: their vectors are reused where the encoder version and the "
             "item's input match (speed is then timed on a sample).")] = None,
    out: Annotated[Path, typer.Option(help="Folder for encoders_compare.md, .json and .png.")] = Path("."),
    k: Annotated[int, typer.Option(help="Cut-off of the cold-item recall@k and ndcg@k.")] = 20,
    cold_fraction: Annotated[float, typer.Option(help="Share of items held out cold.")] = 0.2,
    seed: Annotated[int, typer.Option(help="Seed of the cold-item split.")] = 0,
    batch_size: Annotated[int, typer.Option(help="Encoder batch size.")] = 32,
) -> None:
    """Speed, size and cold-item accuracy of candidate encoders on your own catalog and interactions."""
    from tlrec.services.encoders import compare_encoders, compare_table, write_report

    names = [n.strip() for n in encoders.split(",") if n.strip()] if encoders else None
    if encoders is not None and not names:
        raise UsageError("--encoders: give at least one encoder name, e.g. --encoders minilm")
    if batch_size < 1:
        raise UsageError(f"--batch-size must be >= 1, got {batch_size}")
    report = compare_encoders(catalog, interactions, names, k=k, cold_fraction=cold_fraction, seed=seed,
                              batch_size=batch_size, progress=True, vectors_path=vectors,
                              on_result=lambda so_far: write_report(so_far, out))  # kept if stopped later
    _console().print(compare_table(report))
    paths = write_report(report, out)
    typer.echo("\n".join(str(p) for p in paths.values()))
