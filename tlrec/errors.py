"""The project's expected failures: one base class, each message one line naming what and where.

``TlrecError`` is raised for anything a user can cause and fix (bad input data, a
corrupt or incompatible artifact, a bad configuration). The ``tlrec`` command maps it
(and ``OSError``) to one stderr line and exit code 2; anything else is a bug and is
reported as one, with the traceback behind ``--verbose``.
"""

from __future__ import annotations

import re


def one_line(error: BaseException | str, limit: int | None = None) -> str:
    """A message on one line: whitespace collapsed, cut to ``limit`` characters (with "...").

    For an exception: its message (a ``KeyError``'s key without quotes; the type's name
    when the message is empty).
    """
    if isinstance(error, BaseException):
        text = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
        text = text or type(error).__name__
    else:
        text = str(error)
    flat = re.sub(r"\s+", " ", text).strip()
    return flat if limit is None or len(flat) <= limit else flat[: limit - 3] + "..."


class TlrecError(Exception):
    """An expected failure; ``str(exc)`` is one line naming the file, row, field or value at fault."""

    def __init__(self, message: object = "") -> None:
        super().__init__(one_line(str(message)))


# Every expected failure below is also a ``ValueError``, so callers (and tests) that caught
# the ``ValueError`` these used to be keep working; the ``tlrec`` command maps them by
# ``TlrecError`` only.


class UsageError(TlrecError, ValueError):
    """A bad command-line argument or option value (``--k 0``, ``--set foo``, a missing option)."""


class ConfigError(TlrecError, ValueError):
    """A bad configuration: an unknown model or encoder, a model config key or value, a server setting."""


class InputError(TlrecError, ValueError):
    """A bad input file or its content (a missing column, a duplicate id, a corrupt vectors file).

    ``tlrec.tables.DataError`` (which also names the file, row and column) is one, raised
    for the input tables; ``tlrec.embeddings`` raises this class directly.
    """
