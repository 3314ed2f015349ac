"""External string ids <-> the contiguous internal ints models work on.

Models index users and items ``0..n-1``; an :class:`IdMap` holds the external ids in
internal order and translates both ways. Artifacts store it as a JSON list of strings.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from tlrec.files import write_json_atomic
from tlrec.errors import one_line
from tlrec.tables import DataError

__all__ = ["IdMap"]


class IdMap:
    """External string ids <-> contiguous internal ints ``0..n-1``.

    ``external[i]`` is the external id of internal id ``i``.
    """

    def __init__(self, external: Sequence[str] | pl.Series | np.ndarray) -> None:
        values = external.to_list() if isinstance(external, pl.Series) else list(external)
        index: dict[str, int] = {}
        for i, ext in enumerate(values):
            if not isinstance(ext, str):
                raise TypeError(f"IdMap ids must be str, got {type(ext).__name__} {ext!r} at {i}")
            if ext in index:
                raise ValueError(f"duplicate id {ext!r} at positions {index[ext]} and {i}")
            index[ext] = i
        arr = np.empty(len(values), dtype=object)
        arr[:] = [str(v) for v in values]
        arr.flags.writeable = False
        self.external: np.ndarray = arr
        self._index = index

    @classmethod
    def from_values(cls, values: Iterable[str] | pl.Series) -> IdMap:
        """Unique values in order of first appearance."""
        if isinstance(values, pl.Series):
            return cls(values.unique(maintain_order=True).to_list())
        return cls(list(dict.fromkeys(values)))

    def __len__(self) -> int:
        return len(self.external)

    def __contains__(self, ext: object) -> bool:
        return ext in self._index

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, IdMap):
            return NotImplemented
        return len(self) == len(other) and bool(np.array_equal(self.external, other.external))

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        head = ", ".join(repr(x) for x in self.external[:3])
        more = ", ..." if len(self) > 3 else ""
        return f"IdMap(n={len(self)}: [{head}{more}])"

    def to_internal(
        self,
        ids: Sequence[str] | pl.Series | np.ndarray,
        missing: Literal["raise", "ignore"] = "raise",
    ) -> np.ndarray:
        """External ids -> int64 array ``[len(ids)]``.

        ``missing="ignore"`` gives -1 for unknown ids; ``"raise"`` raises
        KeyError naming the first unknown id.
        """
        if missing not in ("raise", "ignore"):
            raise ValueError(f"missing must be 'raise' or 'ignore', got {missing!r}")
        values = ids.to_list() if isinstance(ids, pl.Series) else ids
        get = self._index.get
        out = np.fromiter((get(x, -1) for x in values), dtype=np.int64, count=len(values))
        if missing == "raise" and out.size and (out < 0).any():
            first = values[int(np.flatnonzero(out < 0)[0])]
            raise KeyError(f"unknown id {first!r}")
        return out

    def to_external(self, idx: np.ndarray | Sequence[int]) -> list[str]:
        """Internal ids ``[n]`` -> external ids; IndexError for anything outside ``0..n-1``."""
        arr = np.asarray(idx)
        if arr.size == 0:
            return []
        if not np.issubdtype(arr.dtype, np.integer):
            raise TypeError(f"internal ids must be integers, got dtype {arr.dtype}")
        bad = (arr < 0) | (arr >= len(self))
        if bad.any():
            raise IndexError(f"internal id {int(arr[bad][0])} out of range 0..{len(self) - 1}")
        return self.external[arr.ravel()].tolist()

    def save(self, path: Path) -> None:
        """Write the ids as a JSON list of strings (atomically)."""
        write_json_atomic(Path(path), self.external.tolist())

    @classmethod
    def load(cls, path: Path) -> IdMap:
        """Read a map written by :meth:`save`; DataError if the file is not a JSON list of strings."""
        path = Path(path)
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise DataError(f"{path.name}: file not found ({path})", file=path.name) from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DataError(
                f"{path.name}: not a valid id map ({one_line(exc, 200)})", file=path.name
            ) from None
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise DataError(f"{path.name}: not a valid id map (expected a JSON list of strings)",
                            file=path.name)
        try:
            return cls(values)
        except ValueError as exc:
            raise DataError(f"{path.name}: not a valid id map ({exc})", file=path.name) from None
