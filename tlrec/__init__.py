"""tlrec: recommendation and behaviour prediction built on transfer learning.

Layers (each imports only from those before it): ``tlrec`` base modules (errors,
files, tables) -> ``tlrec.embeddings`` -> ``tlrec.training`` -> ``tlrec.serving`` ->
``tlrec.services``. See ``docs/architecture.md``.
"""

from __future__ import annotations

from tlrec.errors import TlrecError

__all__ = ["TlrecError"]
__version__ = "0.1.0"
