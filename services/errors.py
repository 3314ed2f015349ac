"""How every `tlrec` command reports an expected failure: one stderr line, exit code 2.

Bad input (a missing column, an unknown id, a corrupt file ...) raises ``DataError``,
``ArtifactError``, ``ValueError``, ``KeyError`` or an ``OSError``; ``friendly_errors``
turns it into ``error: <one line>`` without a traceback. Anything else is a bug and
keeps its traceback.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import typer

F = TypeVar("F", bound=Callable[..., Any])

EXIT_BAD_INPUT = 2


def one_line(exc: BaseException) -> str:
    """The exception's message on one line (a KeyError's key without quotes)."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, KeyError) and exc.args:
        text = str(exc.args[0])
    return " ".join(text.split())


def friendly_errors(func: F) -> F:
    """Decorator for typer commands: expected failures -> one stderr line and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        from tlrec.training.artifacts import ArtifactError
        from tlrec.training.data import DataError

        try:
            return func(*args, **kwargs)
        except (DataError, ArtifactError, ValueError, KeyError, OSError) as exc:
            typer.echo(f"error: {one_line(exc)}", err=True)
            raise typer.Exit(EXIT_BAD_INPUT) from None

    return wrapper  # type: ignore[return-value]
