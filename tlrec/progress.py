"""Progress bars for long work (tqdm), drawn only where someone watches them.

A bar redraws itself with carriage returns: on a terminal (or in a notebook) that is a live
line, in a log file it is soup. ``progress_bar`` draws on a terminal or in Jupyter and stays
silent otherwise (the jobs log their stages instead).
"""

from __future__ import annotations

import sys
from typing import Any

from tqdm.auto import tqdm

__all__ = ["progress_bar", "watched"]


def watched() -> bool:
    """True when stderr is a terminal, or in a Jupyter kernel (whose stderr says it is not a terminal)."""
    return sys.stderr.isatty() or "ipykernel" in sys.modules


def progress_bar(iterable: Any = None, *, show: bool = True, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on stderr, disabled unless ``show`` and ``watched()``."""
    return tqdm(iterable, disable=not (show and watched()), **kwargs)
