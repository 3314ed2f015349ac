"""A propensity model version on disk (``--task propensity``): fit, write, read back, predict by id.

The layout inside a version directory (published, listed and checksummed by
``training.artifacts``, like a recommender's ``training.model_artifact``)::

    propensity/config.json, propensity/weights.safetensors   the calibrated model (``PropensityModel``)
    items.json, users.json                                    id maps (external ids, index = internal id)
    training.json                                             what was fitted: task, positive SPEC, validation

The manifest says ``task: propensity`` and the SPEC; ``tlrec predict`` reads it, ``tlrec score``
and ``tlrec serve`` refuse it with a line that says so.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
from pydantic import ValidationError

from tlrec.errors import ConfigError
from tlrec.files import json_bytes
from tlrec.tables import Columns, DataError
from tlrec.training.artifacts import ArtifactError, VerifiedVersion, open_task_version, read_json
from tlrec.training.id_map import IdMap
from tlrec.training.interaction_data import InteractionData
from tlrec.training.model_artifact import ITEMS_FILE, TRAINING_FILE, USERS_FILE, read_id_map
from tlrec.training.positive_spec import PositiveSpec
from tlrec.training.propensity import PropensityConfig, PropensityModel

logger = logging.getLogger(__name__)

__all__ = ["PROPENSITY_DIR", "PropensityArtifact", "labelled_pairs", "propensity_config"]

PROPENSITY_DIR = "propensity"


def labelled_pairs(interactions: pl.DataFrame, positive: PositiveSpec, where: str = "interactions",
                   keys: tuple[str, str] = (Columns.USER_IDX, Columns.ITEM_IDX)) -> pl.DataFrame:
    """One example per (user, item) pair of ``interactions``: ``label`` true when any of the pair's
    interactions satisfies ``positive`` (a view then a purchase is one positive pair), ``timestamp``
    the pair's first interaction. Columns ``keys + (timestamp, label)``, sorted by the keys."""
    return (interactions.with_columns(positive.labels(interactions, where))
            .group_by(*keys).agg(pl.col(Columns.TIMESTAMP).min(), pl.col("label").max()).sort(*keys))


def propensity_config(config: dict[str, Any] | None) -> PropensityConfig:
    """``--set`` settings as a ``PropensityConfig``; ``ConfigError`` naming the first bad one."""
    try:
        return PropensityConfig(**(config or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"propensity setting {'.'.join(map(str, first['loc'])) or '?'}: {first['msg']}") from None


@dataclass
class PropensityArtifact:
    """A fitted ``PropensityModel`` with its id maps and the SPEC its labels came from."""

    model: PropensityModel
    positive: PositiveSpec
    items: IdMap
    users: IdMap
    training: dict[str, Any] = field(default_factory=dict)  # what ``training.json`` holds

    @classmethod
    def fit(cls, interactions: pl.DataFrame, items: IdMap, positive: PositiveSpec,
            content: np.ndarray | None = None, config: dict[str, Any] | None = None,
            where: str = "interactions") -> PropensityArtifact:
        """Label every interaction (validated frame, items = the catalog) by ``positive`` and fit.

        ``content``: float32 ``[len(items), c]`` pre-trained vectors in catalog order (optional).
        ``DataError`` (one line) when the SPEC cannot label the data or leaves one class.
        """
        cfg = propensity_config(config)
        start = time.perf_counter()
        data = InteractionData.build(interactions, items)
        pairs = labelled_pairs(data.interactions, positive, where)
        labels = pairs["label"].to_numpy().astype(np.float32)
        model = PropensityModel(cfg).fit(pairs, labels, data.n_users, data.n_items, content)
        training = {"task": "propensity", "positive": positive.text, "model": "propensity",
                    "config": cfg.model_dump(mode="json"), "n_users": data.n_users, "n_items": data.n_items,
                    "n_interactions": data.interactions.height, "n_pairs": pairs.height, "base_rate": round(float(labels.mean()), 5),
                    "epochs": model.epochs_, "user_shrink": model.user_shrink_, "validation": {k: round(v, 5) for k, v in model.validation_.items()},
                    "calibration": model.calibrator.kind if model.calibrator else None,
                    "content": content is not None, "fit_seconds": round(time.perf_counter() - start, 3)}
        return cls(model, positive, data.items, data.users, training)

    # ------------------------------------------------------------------ files
    def write(self, directory: Path) -> dict[str, Any]:
        """Write every file of the layout into ``directory`` (a staging dir); returns the manifest fields."""
        directory = Path(directory)
        self.model.save(directory / PROPENSITY_DIR)
        self.items.save(directory / ITEMS_FILE)
        self.users.save(directory / USERS_FILE)
        (directory / TRAINING_FILE).write_bytes(json_bytes(self.training))
        return dict(self.training)

    @classmethod
    def read(cls, version: VerifiedVersion) -> PropensityArtifact:
        """Read a verified version (``training.artifacts.open_version``); every part checked, the parts
        checked against each other. ``ArtifactError``: one line ``<file>: <what is wrong>``."""
        training = read_json(version.file(TRAINING_FILE))
        if not isinstance(training, dict) or training.get("task") != "propensity":
            raise ArtifactError(f"{version.path / TRAINING_FILE}: not a propensity model (task "
                                f"{training.get('task') if isinstance(training, dict) else None!r})")
        try:
            positive = PositiveSpec.parse(str(training.get("positive")))
        except ValueError as exc:
            raise ArtifactError(f"{version.path / TRAINING_FILE}: positive: {exc}") from None
        model = PropensityModel.load(version.path / PROPENSITY_DIR, version)
        items, users = read_id_map(version.file(ITEMS_FILE)), read_id_map(version.file(USERS_FILE))
        assert model.history is not None
        if (model.history.n_users, model.history.n_items) != (len(users), len(items)):
            raise ArtifactError(f"{version.path / PROPENSITY_DIR}: fitted on {model.history.n_users} users x "
                                f"{model.history.n_items} items, but the id maps hold {len(users)} x {len(items)}")
        return cls(model, positive, items, users, training)

    @classmethod
    def load(cls, artifacts: Path) -> tuple[PropensityArtifact, str]:
        """The verified propensity version ``artifacts`` names (a root's ``current`` or a version dir)
        and its version name; ``ArtifactError`` (one line) when it holds another task's model."""
        version = open_task_version(Path(artifacts), "propensity", "`tlrec train --task propensity --positive SPEC`")
        return cls.read(version), version.name

    # ------------------------------------------------------------------ predict
    def item_indices(self, item_ids: list[str] | pl.Series, where: str = "pairs") -> np.ndarray:
        """Internal indices int64 ``[n]`` of catalog item ids; ``DataError`` naming ``where`` and the first
        ids outside the catalog (there is nothing to place them by)."""
        items = pl.Series(Columns.ITEM, item_ids, dtype=pl.String)
        i = self.items.to_internal(items, missing="ignore")
        if (i < 0).any():
            bad = items.filter(pl.Series(i < 0)).unique(maintain_order=True)
            raise DataError.at(where, f"{len(bad)} item id(s) not in the model's catalog, e.g. "
                                      f"{', '.join(map(repr, bad.head(3).to_list()))}", column=Columns.ITEM)
        return i

    def predict(self, user_ids: list[str] | pl.Series, item_ids: list[str] | pl.Series,
                where: str = "pairs") -> pl.DataFrame:
        """Calibrated probabilities of pairs ``(user_ids[r], item_ids[r])``.

        Returns ``user_id, item_id, probability, known_user, known_item`` in input order: an
        unknown user is answered from the item alone, an item without training examples (a
        new item) from its content. An item id outside the catalog is a ``DataError`` naming
        ``where`` (there is nothing to place it by).
        """
        users = pl.Series(Columns.USER, user_ids, dtype=pl.String)
        items = pl.Series(Columns.ITEM, item_ids, dtype=pl.String)
        if users.null_count() or items.null_count():
            raise DataError.at(where, "user_id and item_id must not be empty")
        u = self.users.to_internal(users, missing="ignore")
        i = self.item_indices(items, where)
        assert self.model.history is not None
        p = self.model.predict(u, i) if len(u) else np.zeros(0)
        return pl.DataFrame([users, items, pl.Series("probability", p, dtype=pl.Float64),
                             pl.Series("known_user", u >= 0), pl.Series("known_item", self.model.history.item_n[i] > 0)])

    def predict_user(self, user_id: str, item_ids: list[str], fresh: list[tuple[str, str | None, float | None]]
                     ) -> pl.DataFrame:
        """``predict`` of one user's pairs with their fresh events (``(item_id, event, value)``, oldest
        first, labelled by the model's SPEC) counted after their history; fresh events on items outside
        the catalog, or without an event type, are skipped."""
        items = pl.Series(Columns.ITEM, item_ids, dtype=pl.String)
        i = self.item_indices(items, "item_ids")
        u = int(self.users.to_internal([user_id], missing="ignore")[0])
        events = pl.DataFrame({Columns.ITEM: [e[0] for e in fresh], Columns.EVENT: [e[1] for e in fresh],
                               Columns.VALUE: [e[2] for e in fresh]},
                              schema={Columns.ITEM: pl.String, Columns.EVENT: pl.String, Columns.VALUE: pl.Float64})
        fresh_items = self.items.to_internal(events[Columns.ITEM], missing="ignore")
        use = (fresh_items >= 0) & events[Columns.EVENT].is_not_null().to_numpy()
        labels = self.positive.mark(events, "fresh events").to_numpy()[use]
        assert self.model.history is not None
        p = self.model.predict_user(u, i, fresh_items[use], labels.astype(np.float64))
        return pl.DataFrame([items, pl.Series("probability", p, dtype=pl.Float64),
                             pl.Series("known_item", self.model.history.item_n[i] > 0)])
