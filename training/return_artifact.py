"""A return model version on disk (``--task return``): fit, write, read back, predict by user id.

The layout inside a version directory (published, listed and checksummed by ``training.artifacts``)::

    return/config.json, return/weights.safetensors   the calibrated model (``ReturnModel``)
    items.json, users.json                            id maps (external ids, index = internal id)
    training.json                                     what was fitted: task, horizon, as-of, validation

The manifest says ``task: return``; ``tlrec predict --users`` reads it, the other tasks' loaders
refuse it with a line that says so.
"""

from __future__ import annotations

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
from tlrec.training.return_model import DAY, ReturnConfig, ReturnModel, events_of

__all__ = ["RETURN_DIR", "ReturnArtifact", "return_config"]

RETURN_DIR = "return"


def return_config(config: dict[str, Any] | None) -> ReturnConfig:
    """``--set`` settings (and ``horizon`` in seconds) as a ``ReturnConfig``; ``ConfigError`` naming the first bad one."""
    try:
        return ReturnConfig(**(config or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        raise ConfigError(f"return setting {'.'.join(map(str, first['loc'])) or '?'}: {first['msg']}") from None


@dataclass
class ReturnArtifact:
    """A fitted ``ReturnModel`` with its id maps."""

    model: ReturnModel
    items: IdMap
    users: IdMap
    training: dict[str, Any] = field(default_factory=dict)  # what ``training.json`` holds

    @classmethod
    def fit(cls, interactions: pl.DataFrame, items: IdMap, content: np.ndarray | None = None,
            config: dict[str, Any] | None = None, as_of: int | None = None) -> ReturnArtifact:
        """Fit on validated interactions (items = the catalog) up to ``as_of`` (epoch seconds; default the
        newest event); ``content`` float32 ``[len(items), c]`` in catalog order (optional)."""
        cfg = return_config(config)
        start = time.perf_counter()
        if as_of is not None:
            interactions = interactions.filter(pl.col(Columns.TIMESTAMP) <= as_of)
            if interactions.is_empty():
                raise DataError(f"return: no interactions at or before the as-of time {as_of}")
        data = InteractionData.build(interactions, items)
        users, timestamps, item_idx = events_of(data.interactions)
        model = ReturnModel(cfg).fit(users, timestamps, item_idx, data.n_users, data.n_items, content, as_of)
        training = {"task": "return", "horizon": cfg.horizon, "horizon_days": round(cfg.horizon / DAY, 4),
                    "as_of": model.as_of, "model": "return", "config": cfg.model_dump(mode="json"),
                    "n_users": data.n_users, "n_items": data.n_items, "n_interactions": data.interactions.height,
                    "windows": model.windows_, "epochs": model.epochs_, "prior": round(model.prior, 5),
                    "validation": {k: round(v, 5) for k, v in model.validation_.items()},
                    "calibration": model.calibrator.kind if model.calibrator else None,
                    "content": content is not None and cfg.content_dim > 0,
                    "fit_seconds": round(time.perf_counter() - start, 3)}
        return cls(model, data.items, data.users, training)

    def write(self, directory: Path) -> dict[str, Any]:
        """Write every file of the layout into ``directory`` (a staging dir); returns the manifest fields."""
        directory = Path(directory)
        self.model.save(directory / RETURN_DIR)
        self.items.save(directory / ITEMS_FILE)
        self.users.save(directory / USERS_FILE)
        (directory / TRAINING_FILE).write_bytes(json_bytes(self.training))
        return dict(self.training)

    @classmethod
    def read(cls, version: VerifiedVersion) -> ReturnArtifact:
        """Read a verified version; every part checked against the others. ``ArtifactError``: one line."""
        training = read_json(version.file(TRAINING_FILE))
        if not isinstance(training, dict) or training.get("task") != "return":
            raise ArtifactError(f"{version.path / TRAINING_FILE}: not a return model (task "
                                f"{training.get('task') if isinstance(training, dict) else None!r})")
        model = ReturnModel.load(version.path / RETURN_DIR, version)
        items, users = read_id_map(version.file(ITEMS_FILE)), read_id_map(version.file(USERS_FILE))
        assert model.timeline is not None
        if (model.timeline.n_users, len(model.item_content)) != (len(users), len(items)):
            raise ArtifactError(f"{version.path / RETURN_DIR}: fitted on {model.timeline.n_users} users x "
                                f"{len(model.item_content)} items, but the id maps hold {len(users)} x {len(items)}")
        return cls(model, items, users, training)

    @classmethod
    def load(cls, artifacts: Path) -> tuple[ReturnArtifact, str]:
        """The verified return version ``artifacts`` names (a root's ``current`` or a version dir) and
        its version name; ``ArtifactError`` (one line) when it holds another task's model."""
        version = open_task_version(Path(artifacts), "return", "`tlrec train --task return --horizon 30d`")
        return cls.read(version), version.name

    @property
    def horizon_days(self) -> float:
        return self.model.config.horizon / DAY

    def predict(self, user_ids: list[str] | pl.Series, fresh: list[tuple[list[int], list[str]]] | None = None,
                at: np.ndarray | None = None) -> pl.DataFrame:
        """``user_id, probability, known_user, horizon_days, as_of`` (epoch seconds) for each id, in order.

        ``fresh``: per user, (timestamps, item ids) of events after training; they count (the
        as-of moves to the newest). Item ids outside the catalog are skipped (they carry no content).
        ``at``: int64 ``[n]``, each user's own as-of time (capped at the model's; not with ``fresh``).
        """
        if fresh is not None and at is not None:
            raise ValueError("predict: fresh events and per-user as-of times do not combine")
        ids = pl.Series(Columns.USER, user_ids, dtype=pl.String)
        if ids.null_count():
            raise DataError("user_id must not be empty")
        u = self.users.to_internal(ids, missing="ignore")
        extra = None
        if fresh is not None:
            extra = []
            for ts, item_ids in fresh:
                idx = self.items.to_internal(pl.Series(item_ids, dtype=pl.String), missing="ignore")
                ok = idx >= 0
                extra.append((np.asarray(ts, np.int64)[ok], idx[ok]))
        p, known, as_of = self.model.predict(u, extra, at)
        return pl.DataFrame([ids, pl.Series("probability", p, dtype=pl.Float64), pl.Series("known_user", known),
                             pl.Series("horizon_days", np.full(len(ids), self.horizon_days)),
                             pl.Series("as_of", as_of, dtype=pl.Int64)])
