"""A user's events as the console lists them: training interactions, then the fresh events posted to the API.

The training events (with their times and event types) come from the interactions file the
served version was trained on (its manifest's ``inputs.interactions.path``), read once on
first use and kept sorted by user and time. When that file is gone or unreadable, the
model's own record of the user's items stands in (no times or event types).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import polars as pl

from tlrec.errors import one_line
from tlrec.serving.event_snapshot import FreshEvents
from tlrec.serving.served_model import ServedModel
from tlrec.tables import Columns
from tlrec.training.data import load_interactions

logger = logging.getLogger(__name__)

Origin = Literal["training", "fresh"]


@dataclass(frozen=True)
class HistoryEvent:
    """One event of a user's history; ``timestamp`` and ``event`` are None when not recorded."""

    item_id: str
    timestamp: int | None
    event: str | None
    origin: Origin


class TrainingEvents:
    """The interactions of one file, indexed by user (loaded on first use; thread-safe)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._frame: pl.DataFrame | None = None
        self._spans: dict[str, tuple[int, int]] = {}
        self.error: str | None = None

    def _load(self) -> None:
        try:
            frame = load_interactions(self.path).select(Columns.USER, Columns.ITEM, Columns.TIMESTAMP, Columns.EVENT)
        except Exception as exc:  # noqa: BLE001 - the console falls back to the model's record
            self.error = one_line(exc, 300)
            logger.warning("console: training events not available (%s)", self.error)
            frame = pl.DataFrame(schema={Columns.USER: pl.String, Columns.ITEM: pl.String,
                                         Columns.TIMESTAMP: pl.Int64, Columns.EVENT: pl.String})
        users = frame[Columns.USER].to_numpy()
        starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.zeros(0, np.int64)
        ends = np.r_[starts[1:], len(users)]
        self._spans = {str(users[s]): (int(s), int(e)) for s, e in zip(starts, ends)}
        self._frame = frame

    def events(self, user_id: str) -> list[HistoryEvent] | None:
        """The user's events oldest first (``load_interactions`` sorts by user, then time); None when the
        file could not be read."""
        with self._lock:
            if self._frame is None:
                self._load()
        if self.error is not None:
            return None
        assert self._frame is not None
        span = self._spans.get(user_id)
        if span is None:
            return []
        rows = self._frame.slice(span[0], span[1] - span[0])
        return [HistoryEvent(item, int(ts), event, "training")
                for item, ts, event in rows.select(Columns.ITEM, Columns.TIMESTAMP, Columns.EVENT).iter_rows()]


class Histories:
    """Training events per served version's interactions file (one reader per file), plus fresh events."""

    def __init__(self, fresh: FreshEvents) -> None:
        self.fresh = fresh
        self._files: dict[Path, TrainingEvents] = {}
        self._lock = threading.Lock()

    def _training(self, model: ServedModel) -> TrainingEvents | None:
        path = ((model.manifest.get("inputs") or {}).get("interactions") or {}).get("path")
        if not path:
            return None
        with self._lock:
            reader = self._files.get(Path(path))
            if reader is None:
                reader = self._files[Path(path)] = TrainingEvents(Path(path))
            return reader

    def of(self, model: ServedModel, user_id: str) -> tuple[list[HistoryEvent], str]:
        """The user's events oldest first (training, then fresh) and where the training part came from."""
        reader = self._training(model)
        training = reader.events(user_id) if reader is not None else None
        if training is not None:
            source = f"training interactions ({reader.path.name})" if reader is not None else ""
        else:
            training = [HistoryEvent(item, None, None, "training") for item in model.seen_items(user_id)]
            source = "the model's record of the user's items (no times or event types: the training " \
                     "interactions file is not available)"
        fresh = [HistoryEvent(item, ts if isinstance(ts, int) else None, event, "fresh")
                 for item, ts, event, _ in self.fresh.events(user_id)]
        return training + fresh, source
