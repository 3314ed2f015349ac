"""Users' time-ordered events as ragged arrays: what a sequence model reads.

``Sequences`` holds ``n`` sequences in csr layout (``indptr`` int64 ``[n + 1]``), oldest first:
the item index of each event, its event-type code and its timestamp. Codes come from an
``EventVocabulary`` (0 = unknown event type); timestamps may be missing (``TIME_UNKNOWN``),
as they are for histories sent without them.

``Sequences.of(data, vocab)`` builds one sequence per user of an ``InteractionData`` (ties in
time keep the input order); ``Sequences.from_lists`` builds ad-hoc ones (serving).
``windows`` cuts the newest ``length`` events of each into left-padded arrays.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import polars as pl
import scipy.sparse as sp

from tlrec.tables import DEFAULT_EVENT, Columns
from tlrec.training.interaction_data import InteractionData

__all__ = ["GAP_BUCKETS", "PAD", "TIME_UNKNOWN", "EventVocabulary", "Sequences", "gap_buckets"]

#: Item index of padding in ``Sequences.windows``.
PAD = -1
#: Timestamp of an event whose time is not known.
TIME_UNKNOWN = np.iinfo(np.int64).min
#: Time gaps to the previous event fall in ``GAP_BUCKETS`` log2-spaced buckets (1..GAP_BUCKETS;
#: 0 = unknown: the first event, or a missing timestamp). Bucket ``b`` holds gaps of about
#: ``2 ** (b - 2)`` seconds: 1 s to ~68 years.
GAP_BUCKETS = 32


@dataclass(frozen=True)
class EventVocabulary:
    """Event-type names -> codes ``1..len(names)``; 0 is an unknown (or absent) event type."""

    names: tuple[str, ...]

    @classmethod
    def of(cls, data: InteractionData) -> EventVocabulary:
        """The event types of ``data``, most frequent first (none when every event is the default one)."""
        if Columns.EVENT not in data.interactions.columns:
            return cls(())
        counts = data.interactions[Columns.EVENT].fill_null(DEFAULT_EVENT).value_counts(sort=True)
        names = tuple(str(n) for n in counts[Columns.EVENT].to_list())
        return cls(() if names == (DEFAULT_EVENT,) else names)

    def codes(self, events: Sequence[str | None] | pl.Series) -> np.ndarray:
        """int64 codes of ``events`` (unknown names and None -> 0)."""
        lookup = {n: i + 1 for i, n in enumerate(self.names)}
        return np.fromiter((lookup.get(e, 0) for e in events), dtype=np.int64, count=len(events))  # type: ignore[arg-type]


@dataclass
class Sequences:
    """``n`` event sequences, oldest first: ``items``, ``events`` (codes) and ``timestamps``, each ``[nnz]``."""

    indptr: np.ndarray  # int64 [n + 1]
    items: np.ndarray  # int64 [nnz], item indices
    events: np.ndarray  # int64 [nnz], EventVocabulary codes (0 = unknown)
    timestamps: np.ndarray  # int64 [nnz], seconds (TIME_UNKNOWN = not known)

    @classmethod
    def of(cls, data: InteractionData, vocab: EventVocabulary) -> Sequences:
        """One sequence per user of ``data`` (``data.n_users`` of them, empty for users without events)."""
        df = data.interactions.with_row_index("_row").sort(Columns.USER_IDX, Columns.TIMESTAMP, "_row")
        users = df[Columns.USER_IDX].to_numpy().astype(np.int64)
        indptr = np.zeros(data.n_users + 1, np.int64)
        np.add.at(indptr, users + 1, 1)
        np.cumsum(indptr, out=indptr)
        events = (vocab.codes(df[Columns.EVENT].fill_null(DEFAULT_EVENT)) if Columns.EVENT in df.columns
                  else np.zeros(df.height, np.int64))
        return cls(indptr, df[Columns.ITEM_IDX].to_numpy().astype(np.int64), events,
                   df[Columns.TIMESTAMP].cast(pl.Int64).to_numpy().astype(np.int64))

    @classmethod
    def from_lists(cls, items: Sequence[np.ndarray], events: Sequence[np.ndarray | None] | None = None,
                   timestamps: Sequence[np.ndarray | None] | None = None) -> Sequences:
        """Ad-hoc sequences from per-sequence arrays (item indices int64; events and timestamps optional)."""
        lengths = np.array([len(s) for s in items], np.int64)
        indptr = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

        def column(parts: Sequence[np.ndarray | None] | None, fill: int) -> np.ndarray:
            out = [np.full(n, fill, np.int64) if parts is None or parts[i] is None
                   else np.asarray(parts[i], np.int64) for i, n in enumerate(lengths.tolist())]
            for i, (part, n) in enumerate(zip(out, lengths.tolist())):
                if len(part) != n:
                    raise ValueError(f"sequence {i}: {n} items but {len(part)} events or timestamps")
            return np.concatenate(out) if out else np.zeros(0, np.int64)

        flat = np.concatenate([np.asarray(s, np.int64) for s in items]) if len(items) else np.zeros(0, np.int64)
        return cls(indptr, flat, column(events, 0), column(timestamps, TIME_UNKNOWN))

    def __len__(self) -> int:
        return len(self.indptr) - 1

    @property
    def lengths(self) -> np.ndarray:
        """int64 ``[n]``."""
        return np.diff(self.indptr)

    def row(self, i: int) -> np.ndarray:
        """Item indices of sequence ``i``, oldest first."""
        return self.items[self.indptr[i] : self.indptr[i + 1]]

    def take(self, rows: np.ndarray) -> Sequences:
        """The sequences ``rows`` (int ``[m]``), in that order."""
        parts = [np.arange(self.indptr[r], self.indptr[r + 1]) for r in np.asarray(rows, np.int64)]
        pick = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        lengths = np.array([len(p) for p in parts], np.int64)
        return Sequences(np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
                         self.items[pick], self.events[pick], self.timestamps[pick])

    def matrix(self, n_items: int) -> sp.csr_matrix:
        """Binary csr ``[n, n_items]``: which items each sequence holds (skips negative indices)."""
        rows = np.repeat(np.arange(len(self)), self.lengths)
        ok = self.items >= 0
        m = sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (rows[ok], self.items[ok])),
                          shape=(len(self), n_items))
        m.sum_duplicates()
        m.data[:] = 1.0
        return m

    def windows(self, length: int, ends: np.ndarray | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The newest ``length`` events of each sequence, left-padded: items (``PAD`` = none), event
        codes and gap buckets (``gap_buckets``), each int64 ``[n, length]``.

        ``ends`` (int ``[n]``) cuts sequence ``i`` at ``ends[i]`` events first (default: its length).
        """
        n = len(self)
        ends = self.lengths if ends is None else np.asarray(ends, np.int64)
        gaps = gap_buckets(self.timestamps, self.indptr)
        items = np.full((n, length), PAD, np.int64)
        events = np.zeros((n, length), np.int64)
        buckets = np.zeros((n, length), np.int64)
        take = np.minimum(ends, length)
        stop = self.indptr[:-1] + ends
        rows = np.repeat(np.arange(n), take)
        offsets = np.arange(int(take.sum())) - np.repeat(np.cumsum(take) - take, take)  # 0..take-1 per row
        src = np.repeat(stop - take, take) + offsets
        cols = np.repeat(length - take, take) + offsets
        items[rows, cols] = self.items[src]
        events[rows, cols] = self.events[src]
        buckets[rows, cols] = gaps[src]
        return items, events, buckets


def gap_buckets(timestamps: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """int64 ``[nnz]``: each event's log2 bucket of the time since the previous event of its sequence.

    0 for a sequence's first event and where either timestamp is unknown; else
    ``1 + min(floor(log2(gap + 1)), GAP_BUCKETS - 1)``, ``gap`` in seconds (negative gaps count as 0).
    """
    out = np.zeros(len(timestamps), np.int64)
    if len(timestamps) < 2:
        return out
    prev = np.concatenate([[TIME_UNKNOWN], timestamps[:-1]])
    first = np.zeros(len(timestamps), bool)
    starts = indptr[:-1][np.diff(indptr) > 0]
    first[starts] = True
    known = ~first & (timestamps != TIME_UNKNOWN) & (prev != TIME_UNKNOWN)
    gap = np.maximum(timestamps[known] - prev[known], 0).astype(np.float64)
    out[known] = 1 + np.minimum(np.floor(np.log2(gap + 1.0)), GAP_BUCKETS - 1).astype(np.int64)
    return out
