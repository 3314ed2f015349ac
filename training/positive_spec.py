"""What counts as a positive example for the propensity task (``tlrec train --positive SPEC``).

A SPEC is an event name (``purchase``: the interaction's ``event`` equals it) or a condition on
a numeric column (``rating>=4``, ``value>0``). A condition on ``rating`` reads the ``value``
column of ``rating`` events (how ratings arrive in the interactions contract); a condition on
``value`` reads every row's ``value``. Every interaction is an example; it is positive when the
SPEC holds, negative otherwise (a missing value is negative).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import polars as pl

from tlrec.errors import UsageError
from tlrec.tables import Columns, DataError

__all__ = ["PositiveSpec"]

_OPS = {">=": "ge", "<=": "le", "==": "eq", "!=": "ne", ">": "gt", "<": "lt", "=": "eq"}
_CONDITION = re.compile(r"^\s*([A-Za-z_][\w.-]*)\s*(>=|<=|==|!=|>|<|=)\s*(-?[0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*$")
_EVENT = re.compile(r"^\s*([A-Za-z_][\w.:-]*)\s*$")


@dataclass(frozen=True)
class PositiveSpec:
    """A parsed SPEC: ``event`` alone (an event name), or ``field op threshold`` (a value condition)."""

    text: str
    event: str | None = None
    field: str | None = None
    op: str | None = None
    threshold: float | None = None

    @classmethod
    def parse(cls, text: str) -> PositiveSpec:
        """``purchase`` / ``rating>=4`` / ``value>0``; ``UsageError`` (one line) for anything else."""
        if m := _CONDITION.match(text or ""):
            return cls(text.strip(), field=m.group(1), op=_OPS[m.group(2)], threshold=float(m.group(3)))
        if m := _EVENT.match(text or ""):
            return cls(text.strip(), event=m.group(1))
        raise UsageError(f"--positive {text!r}: expected an event name (purchase) or a condition on a value "
                         f"(rating>=4, value>0)")

    def labels(self, interactions: pl.DataFrame, where: str = "interactions") -> pl.Series:
        """Boolean label per row of ``interactions`` (``[n]``, named ``label``).

        ``DataError`` naming ``where`` when the column the SPEC needs is missing, or when no row
        (or every row) is positive: a task with one class cannot be learned.
        """
        if self.event is None and self.field != Columns.VALUE:  # `rating>=4`: value of the `rating` events
            self._need(interactions, Columns.EVENT, where)
            if not (interactions[Columns.EVENT] == self.field).any():
                raise DataError.at(where, f"--positive {self.text}: no {self.field!r} events", column=Columns.EVENT)
        label = self.mark(interactions, where)
        positives = int(label.sum())
        if positives in (0, len(label)):
            kind = "no" if positives == 0 else "every"
            raise DataError.at(where, f"--positive {self.text}: {kind} interaction is positive, so there is "
                                      f"nothing to learn ({len(label)} rows)")
        return label

    def mark(self, interactions: pl.DataFrame, where: str = "interactions") -> pl.Series:
        """``labels`` without the one-class check (a few fresh events may all be negative)."""
        if self.event is not None:
            self._need(interactions, Columns.EVENT, where)
            label = interactions[Columns.EVENT] == self.event
        else:
            self._need(interactions, Columns.VALUE, where)
            value = interactions[Columns.VALUE].cast(pl.Float64, strict=False)
            label = getattr(value, self.op or "eq")(self.threshold).fill_null(False)
            if self.field != Columns.VALUE:
                self._need(interactions, Columns.EVENT, where)
                label = label & (interactions[Columns.EVENT] == self.field)
        return label.fill_null(False).alias("label")

    def _need(self, interactions: pl.DataFrame, column: str, where: str) -> None:
        if column not in interactions.columns:
            raise DataError.at(where, f"--positive {self.text} needs this column", column=column)
