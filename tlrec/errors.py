"""The project's expected failures: one base class, each message one line naming what and where.

``TlrecError`` is raised for anything a user can cause and fix (bad input data, a
corrupt or incompatible artifact, a bad configuration). The ``tlrec`` command maps it
(and ``OSError``) to one stderr line and exit code 2; anything else is a bug and is
reported as one, with the traceback behind ``--verbose``.
"""

from __future__ import annotations


class TlrecError(Exception):
    """An expected failure; ``str(exc)`` is one line naming the file, row, field or value at fault."""

    def __init__(self, message: object = "") -> None:
        super().__init__(" ".join(str(message).split()))
