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

An input named on the command line that does not exist is refused before the command
imports its modules (torch, transformers, ray take seconds), so a typo answers at once.
"""

from __future__ import annotations

import functools
import traceback
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import typer
from typer.models import ArgumentInfo, ParameterInfo

from tlrec.errors import TlrecError, one_line

F = TypeVar("F", bound=Callable[..., Any])

EXIT_BAD_INPUT = 2
EXIT_BUG = 1
#: Exceptions reported as the user's to fix (exit 2); everything else is a bug (exit 1).
EXPECTED: tuple[type[BaseException], ...] = (TlrecError, OSError)
#: Command parameters that name an existing input (file or folder) in every command that has them.
INPUTS = frozenset({"path", "catalog", "interactions", "vectors", "artifacts", "users", "candidates", "pairs",
                    "experiment", "exposures", "outcomes", "pre_period", "covariate_from", "propensity", "return_"})
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
            _check_inputs_exist(func, kwargs)
            return func(*args, **kwargs)
        except (typer.Exit, typer.Abort, typer.TyperException):
            raise  # an exit code chosen on purpose, or a usage error: typer reports it
        except Exception as exc:  # noqa: BLE001 - every failure becomes one line
            raise typer.Exit(report(exc, verbose_requested())) from None

    return wrapper  # type: ignore[return-value]


def _check_inputs_exist(func: Callable[..., Any], kwargs: dict[str, Any]) -> None:
    """``FileNotFoundError`` (one line, naming the option) for the first input path in ``kwargs`` that is missing."""
    for name, value in kwargs.items():
        if name not in INPUTS:
            continue
        for path in value if isinstance(value, list) else [value]:
            if isinstance(path, Path) and not path.exists():
                raise FileNotFoundError(f"{path}: no such file or folder ({_spelled(func, name)})")


def _spelled(func: Callable[..., Any], name: str) -> str:
    """How the command line spells ``func``'s parameter ``name``: ``--return`` for an option, ``EXPERIMENT``
    for an argument (from its ``Annotated`` typer metadata)."""
    hint = typing.get_type_hints(func, include_extras=True).get(name)
    info = next((m for m in getattr(hint, "__metadata__", ()) if isinstance(m, ParameterInfo)), None)
    if isinstance(info, ArgumentInfo):
        return name.upper()
    # in ``Annotated`` form, typer keeps an option's first declaration (``typer.Option("--return")``) as its default
    given = [getattr(info, "default", None), *(getattr(info, "param_decls", None) or ())]
    decls = [d for d in given if isinstance(d, str) and d.startswith("--")]
    return decls[0] if decls else "--" + name.replace("_", "-")
