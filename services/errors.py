"""How every `tlrec` command reports a failure: one stderr line.

* Expected failures, the ones a user can cause and fix (bad input data, a corrupt
  artifact, a bad option or configuration), raise a ``tlrec.errors.TlrecError``
  subclass (``DataError``, ``ArtifactError``, ``UsageError``, ``ConfigError`` ...);
  with an ``OSError`` (a missing file, a full disk, no permission) they become
  ``error: <one line>`` and exit code 2.
* Anything else is a bug: ``error: internal error: <type>: <message> (rerun with
  --verbose for the traceback)`` and exit code 1. A ``ValueError`` or ``KeyError`` is
  not assumed to be the user's fault any more.

``tlrec --verbose ...`` prints the traceback above the line in both cases.
"""

from __future__ import annotations

import functools
import traceback
from collections.abc import Callable
from typing import Any, TypeVar

import typer

from tlrec.errors import TlrecError, one_line

F = TypeVar("F", bound=Callable[..., Any])

EXIT_BAD_INPUT = 2
EXIT_BUG = 1
#: Exceptions reported as the user's to fix (exit 2); everything else is a bug (exit 1).
EXPECTED: tuple[type[BaseException], ...] = (TlrecError, OSError)
#: Set by the ``tlrec`` callback for each command line (``--verbose``).
_VERBOSE = False


def set_verbose(verbose: bool) -> None:
    """Record the command line's ``--verbose`` (called by the ``tlrec`` callback before every command)."""
    global _VERBOSE
    _VERBOSE = bool(verbose)


def verbose_requested() -> bool:
    """True when the running command line asked for ``--verbose`` (the root ``tlrec`` option)."""
    return _VERBOSE


def report(exc: BaseException, verbose: bool = False) -> int:
    """Print ``exc`` as the one ``error:`` line on stderr (the traceback first if ``verbose``); the exit code."""
    if verbose:
        typer.echo("".join(traceback.format_exception(exc)).rstrip(), err=True)
    if isinstance(exc, EXPECTED):
        typer.echo(f"error: {one_line(exc)}", err=True)
        return EXIT_BAD_INPUT
    hint = "" if verbose else " (rerun with --verbose for the traceback)"
    typer.echo(f"error: internal error: {type(exc).__name__}: {one_line(exc)[:500]}{hint}", err=True)
    return EXIT_BUG


def friendly_errors(func: F) -> F:
    """Decorator for typer commands: any failure -> one stderr line; exit 2 if expected, 1 if a bug."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # an exit code chosen on purpose, or a usage error: typer reports it
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line
            raise typer.Exit(report(exc, verbose_requested())) from None

    return wrapper  # type: ignore[return-value]
