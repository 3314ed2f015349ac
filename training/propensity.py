"""Event propensity: ``P(user u does the positive event on item i)``, calibrated (issue 15).

Every interaction of a user with an item is an example, labelled by a ``PositiveSpec``. The
model (``PropensityNet``) is a logistic model over three parts, summed into one logit:

* **factors**: ``(<p_u, q_i> + b_u) * n_u / (n_u + user_shrink) + b_i``; ``q_i``/``b_i`` are the
  hybrid item vector (a learned id part plus an MLP over the frozen pre-trained content vector,
  ids dropped at random while training so content alone places a new item). The user's
  personal part counts by their ``n_u`` examples (shrinkage, as the rates below): a short
  history leans on the item and the features; an unknown user has ``p_u = 0, b_u = 0``, and a
  share of training examples (``user_dropout``) is read as from an unknown user, so the model
  learns that case too;
* **features** (``propensity_features``): smoothed user/item rates, counts and label
  collaborative filtering over co-occurrence and content neighbours, through a small MLP.

Fitting (``PropensityModel.fit``): a time-based split holds out each user's newest
``validation_fraction`` of examples; the net trains on the rest with log loss (L2 on the
factors) and stops early on the held-out log loss; a ``Calibrator`` (temperature or isotonic,
by cross-validated log loss) is fitted on the held-out logits, and another on the same examples
asked as by a stranger (the unknown users' answers); then the net is trained again
on every example for the epochs kept, with the calibration kept, and serves features from
all the examples.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import numpy as np
import polars as pl
import torch
from pydantic import Field, ValidationError
from safetensors.torch import save_file
from torch import nn

from tlrec.tables import Columns, DataError
from tlrec.training.artifacts import ArtifactError, VerifiedVersion, load_tensors, read_json, tensor_array
from tlrec.training.calibration import Calibrator
from tlrec.training.models.base import CONFIG_FILE, WEIGHTS_FILE, ModelConfig
from tlrec.training.models.early_stopping import EarlyStopping
from tlrec.training.probability_metrics import probability_metrics
from tlrec.training.propensity_features import FEATURES, LabelledHistory
from tlrec.training.splits import temporal_split

logger = logging.getLogger(__name__)

__all__ = ["PropensityConfig", "PropensityModel", "PropensityNet"]


class PropensityConfig(ModelConfig):
    """Hyper-parameters (defaults meant to hold across datasets)."""

    dim: int = Field(32, ge=1)
    content_hidden: int = Field(128, ge=1)
    feature_hidden: int = Field(32, ge=1)
    epochs: int = Field(50, ge=1)
    batch: int = Field(2048, ge=1)
    lr: float = Field(3e-3, gt=0)
    l2: float = Field(1e-2, ge=0)
    item_id_dropout: float = Field(0.1, ge=0.0, lt=1.0)
    #: Share of training examples read as from an unknown user (no id, no history), so the model
    #: learns what it can say about a user it has never seen.
    user_dropout: float = Field(0.15, ge=0.0, lt=1.0)
    patience: int = Field(3, ge=1)
    validation_fraction: float = Field(0.1, gt=0.0, lt=1.0)
    seed: int = 0
    progress: bool = True
    #: Pseudo-examples the user's personal part (factors and bias) is shrunk with: it counts
    #: ``n / (n + shrink)`` for a user with ``n`` examples, so a short history leans on the
    #: item and the features. None: the median examples per user of the data it is fitted on
    #: (a median user counts half), a scale that travels across datasets.
    user_shrink: float | None = Field(None, ge=0)


class PropensityNet(nn.Module):
    """Logits of (user, item, features) triples; user index ``n_users`` is the unknown user."""

    def __init__(self, n_users: int, n_items: int, content: torch.Tensor | None, cfg: PropensityConfig,
                 user_shrink: float = 0.0) -> None:
        super().__init__()
        d = cfg.dim
        self.user = nn.Embedding(n_users + 1, d + 1)  # last unit: the user's bias
        self.item = nn.Embedding(n_items, d + 1)
        for table in (self.user, self.item):
            nn.init.normal_(table.weight, std=0.01)
        with torch.no_grad():
            self.user.weight[-1] = 0.0  # the unknown user: no factors, no bias
        self.register_buffer("content", content if content is not None else torch.zeros(n_items, 0))
        c = self.content.shape[1]
        self.content_mlp = (nn.Sequential(nn.Linear(c, cfg.content_hidden), nn.GELU(),
                                          nn.Linear(cfg.content_hidden, d + 1)) if c > 0 else None)
        self.register_buffer("user_shrink", torch.tensor(float(user_shrink)))
        self.features = nn.Sequential(nn.Linear(len(FEATURES), cfg.feature_hidden), nn.GELU(),
                                      nn.Linear(cfg.feature_hidden, 1))

    def item_vectors(self, items: torch.Tensor, id_keep: torch.Tensor | None = None) -> torch.Tensor:
        """``[n, d + 1]`` hybrid vectors of ``items``; ``id_keep`` (``[n]`` 0/1) drops id parts."""
        q = self.item(items) if id_keep is None else self.item(items) * id_keep[:, None]
        return q if self.content_mlp is None else q + self.content_mlp(self.content[items])

    def forward(self, users: torch.Tensor, items: torch.Tensor, features: torch.Tensor,
                id_keep: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[n]`` of int64 ``users``/``items`` ``[n]`` and float32 ``features`` ``[n, F]``."""
        p, q = self.user(users), self.item_vectors(items, id_keep)
        n = torch.expm1(features[:, FEATURES.index("user_count")])  # the user's examples
        personal = ((p[:, :-1] * q[:, :-1]).sum(1) + p[:, -1]) * n / (n + self.user_shrink).clamp_min(1e-6)
        return personal + q[:, -1] + self.features(features)[:, 0]


class PropensityModel:
    """Calibrated ``P(positive | user, item)`` over ``n_users`` known users and ``n_items`` items."""

    def __init__(self, config: PropensityConfig | None = None) -> None:
        self.config = config or PropensityConfig()
        self.net: PropensityNet | None = None
        self.history: LabelledHistory | None = None
        self.calibrator: Calibrator | None = None  # for known users
        self.stranger_calibrator: Calibrator | None = None  # for users the model has never seen
        self.epochs_: int | None = None
        self.user_shrink_: float = 0.0
        self.validation_: dict[str, float] = {}

    # ------------------------------------------------------------------ fit
    def fit(self, examples: pl.DataFrame, labels: np.ndarray, n_users: int, n_items: int,
            content: np.ndarray | None = None) -> PropensityModel:
        """Fit on ``examples`` (``user_idx``, ``item_idx``, ``timestamp`` columns; one row per example) and
        0/1 ``labels`` ``[n]``; ``content`` float32 ``[n_items, c]`` pre-trained vectors (optional).

        ``DataError`` when no user has examples to hold out or the held-out part has one class.
        """
        cfg = self.config
        y = np.asarray(labels, np.float32)
        frame = examples.select(pl.col(Columns.USER_IDX).alias(Columns.USER), Columns.ITEM_IDX, Columns.TIMESTAMP,
                                pl.Series("label", y), pl.int_range(pl.len()).alias("_row"))
        fit_part, held = temporal_split(frame, cfg.validation_fraction)
        if held.height == 0 or held["label"].n_unique() < 2:
            raise DataError("propensity: the time-based validation split has no held-out examples of both classes "
                            "(each user needs 2+ examples, and both outcomes must occur)")
        content_t = torch.from_numpy(np.ascontiguousarray(content, np.float32)) if content is not None else None
        fu, fi, fy = _arrays(fit_part)
        vu, vi, vy = _arrays(held)
        hist = LabelledHistory(fu, fi, fy, n_users, n_items, content, fit_part[Columns.TIMESTAMP].to_numpy())
        val = (vu, vi, hist.features(vu, vi), vy)
        per_user = np.bincount(fu, minlength=n_users)
        self.user_shrink_ = cfg.user_shrink if cfg.user_shrink is not None else float(np.median(per_user[per_user > 0]))
        net, kept, val_logits = self._train(hist, content_t, cfg.epochs, val)
        self.calibrator = Calibrator.choose(val_logits, vy, seed=cfg.seed)
        # an unknown user's logits live in another range: their own map, fitted on the held-out
        # examples as a stranger would ask them
        stranger = np.full(len(vu), n_users)
        self.stranger_calibrator = Calibrator.choose(_logits(net, (stranger, vi, hist.features(stranger, vi))), vy,
                                                     seed=cfg.seed)
        self.validation_ = probability_metrics(vy, self.calibrator(val_logits))
        logger.info("propensity: kept epoch %d (user shrink %.0f examples); validation %s", kept, self.user_shrink_,
                    {k: round(v, 4) for k, v in self.validation_.items() if k != "n"})
        u, i = frame[Columns.USER].to_numpy(), frame[Columns.ITEM_IDX].to_numpy()
        self.history = LabelledHistory(u, i, y, n_users, n_items, content, frame[Columns.TIMESTAMP].to_numpy())
        self.net, _, _ = self._train(self.history, content_t, kept, None)
        self.epochs_ = kept
        return self

    def _train(self, hist: LabelledHistory, content: torch.Tensor | None, epochs: int,
               val: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None
               ) -> tuple[PropensityNet, int, np.ndarray]:
        """A fresh net trained on ``hist``'s examples for up to ``epochs`` (early-stopped on ``val``'s log loss)."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        n_users = hist.n_users
        net = PropensityNet(n_users, hist.n_items, content, cfg, self.user_shrink_)
        u, i, y = (torch.from_numpy(np.array(a)) for a in (hist.users, hist.items, hist.labels))
        x, x_unknown = torch.from_numpy(hist.own_features()), torch.from_numpy(hist.own_features(unknown_users=True))
        unknown = torch.full_like(u, n_users)
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr)
        run = EarlyStopping(net, epochs, 1, cfg.patience, val is not None, "propensity", cfg.progress,
                            metric="-val_log_loss")
        for epoch in run:
            net.train()
            order = torch.from_numpy(rng.permutation(len(y)))
            total = 0.0
            n_batches = math.ceil(len(y) / cfg.batch)
            for b in range(n_batches):
                pick = order[b * cfg.batch : (b + 1) * cfg.batch]
                keep = (torch.rand(len(pick)) >= cfg.item_id_dropout).float()
                anon = (torch.rand(len(pick)) < cfg.user_dropout)[:, None]
                logits = net(torch.where(anon[:, 0], unknown[pick], u[pick]), i[pick],
                             torch.where(anon, x_unknown[pick], x[pick]), keep)
                loss = nn.functional.binary_cross_entropy_with_logits(logits, y[pick])
                factors = net.user(u[pick]).pow(2).sum(1).mean() + net.item(i[pick]).pow(2).sum(1).mean()
                opt.zero_grad(set_to_none=True)
                (loss + cfg.l2 * factors).backward()
                opt.step()
                total += float(loss.detach())
            run.postfix["loss"] = f"{total / n_batches:.4f}"
            if val is not None:
                run.record(epoch, -probability_metrics(val[3], _probabilities(net, val))["log_loss"])
        kept = run.restore()
        logits = _logits(net, val) if val is not None else np.zeros(0)
        return net.eval(), kept, logits

    # ------------------------------------------------------------------ predict
    def predict(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """Calibrated probabilities float64 ``[n]`` of pairs of int64 indices ``[n]``. A user index outside
        ``[0, n_users)`` is an unknown user; an item without examples is placed by its content."""
        assert self.net is not None and self.history is not None and self.calibrator is not None, "not fitted"
        users, items = np.asarray(users, np.int64), np.asarray(items, np.int64)
        n_users = self.history.n_users
        users = np.where((users >= 0) & (users < n_users), users, n_users)
        logits = _logits(self.net, (users, items, self.history.features(users, items)))
        assert self.stranger_calibrator is not None
        return np.where(users < n_users, self.calibrator(logits), self.stranger_calibrator(logits))

    def predict_user(self, user: int, items: np.ndarray, extra_items: np.ndarray, extra_labels: np.ndarray
                     ) -> np.ndarray:
        """``predict`` for one user (index; outside ``[0, n_users)``: unknown) and ``items`` ``[n]``, with
        ``extra`` labelled examples (items, 0/1 labels ``[m]``: fresh events) after their history."""
        assert self.net is not None and self.history is not None and self.calibrator is not None, "not fitted"
        assert self.stranger_calibrator is not None
        n_users = self.history.n_users
        known = 0 <= user < n_users
        items = np.asarray(items, np.int64)
        users = np.full(len(items), user if known else n_users)
        logits = _logits(self.net, (users, items, self.history.user_features(user, items, extra_items, extra_labels)))
        return (self.calibrator if known else self.stranger_calibrator)(logits)

    # ------------------------------------------------------------------ files
    def save(self, directory: Path) -> None:
        """Write ``config.json`` and ``weights.safetensors`` (the net, the calibrator, the labelled
        examples its features are read from) into ``directory``."""
        assert self.net is not None and self.history is not None and self.calibrator is not None, "not fitted"
        directory.mkdir(parents=True, exist_ok=True)
        h = self.history
        meta = {"model": "propensity", "n_users": h.n_users, "n_items": h.n_items, "epochs": self.epochs_,
                "config": self.config.model_dump(mode="json"), "validation": self.validation_}
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        state = {f"net.{k}": v.contiguous() for k, v in self.net.state_dict().items()}
        assert self.stranger_calibrator is not None
        for name, calibrator in (("calibrator", self.calibrator), ("stranger_calibrator", self.stranger_calibrator)):
            state |= {f"{name}.{k}": torch.from_numpy(np.ascontiguousarray(v, np.float64))
                      for k, v in calibrator.state().items()}
        state |= {"examples.users": torch.from_numpy(h.users.astype(np.int64)),
                  "examples.items": torch.from_numpy(h.items.astype(np.int64)),
                  "examples.labels": torch.from_numpy(h.labels.astype(np.float32)),
                  "examples.timestamps": torch.from_numpy(np.array(h.timestamps, np.int64))}
        save_file(state, directory / WEIGHTS_FILE)

    @classmethod
    def load(cls, directory: Path, verified: VerifiedVersion | None = None) -> PropensityModel:
        """Inverse of ``save``, every tensor checked (dtype, shape, finite, indices in range); the
        features' statistics are rebuilt from the stored examples. ``ArtifactError``: one line
        naming the file and what is wrong."""
        config_path, weights_path = Path(directory) / CONFIG_FILE, Path(directory) / WEIGHTS_FILE
        if verified is not None:
            config_path, weights_path = verified.check(config_path), verified.check(weights_path)
        meta = read_json(config_path)
        if not isinstance(meta, dict) or meta.get("model") != "propensity":
            raise ArtifactError(f"{config_path}: not a propensity model config")
        try:
            model = cls(PropensityConfig.model_validate(meta.get("config")))
            n_users, n_items = int(meta["n_users"]), int(meta["n_items"])
        except (ValidationError, KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{config_path}: not a valid propensity config ({str(exc).splitlines()[0]}); "
                                "retrain the model") from None
        state = load_tensors(weights_path)
        try:
            users = tensor_array(state, "examples.users", "int64", (None,))
            items = tensor_array(state, "examples.items", "int64", (len(users),))
            labels = tensor_array(state, "examples.labels", "float32", (len(users),), finite=True)
            timestamps = tensor_array(state, "examples.timestamps", "int64", (len(users),))
            if len(users) and not (0 <= users.min() and users.max() < n_users and 0 <= items.min()
                                   and items.max() < n_items):
                raise ValueError(f"examples index users or items outside [0, {n_users}) x [0, {n_items})")
            model.calibrator, model.stranger_calibrator = (
                Calibrator.from_state({k.removeprefix(f"{name}."): tensor_array(state, k, "float64", finite=True).copy()
                                       for k in state if k.startswith(f"{name}.")})
                for name in ("calibrator", "stranger_calibrator"))
            net_state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
            for k in net_state:
                tensor_array(net_state, k, "float32", finite=True)
            content = net_state["content"]
            net = PropensityNet(n_users, n_items, content if content.shape[1] else None, model.config)
            net.load_state_dict(net_state)  # strict: a missing, extra or misshapen tensor is a RuntimeError
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ArtifactError(f"{weights_path}: {str(exc).splitlines()[0]} (corrupt, or written by another "
                                "tlrec version? retrain the model)") from None
        model.net = net.eval()
        model.user_shrink_ = float(net.user_shrink)
        vectors = content.numpy() if content.shape[1] else None
        model.history = LabelledHistory(users.copy(), items.copy(), labels.copy(), n_users, n_items, vectors,
                                        timestamps.copy())
        model.epochs_ = meta.get("epochs")
        model.validation_ = dict(meta.get("validation") or {})
        return model


def _arrays(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(users, items, labels) of an example frame."""
    return (frame[Columns.USER].to_numpy(), frame[Columns.ITEM_IDX].to_numpy(),
            frame["label"].to_numpy().astype(np.float32))


def _logits(net: PropensityNet, rows: tuple[np.ndarray, ...], batch: int = 65_536) -> np.ndarray:
    """float64 ``[n]`` logits of ``rows`` = (users, items, features[, labels])."""
    u, i, x = (np.ascontiguousarray(a) for a in rows[:3])
    out = np.zeros(len(u))
    net.eval()
    with torch.inference_mode():
        for s in range(0, len(u), batch):
            sl = slice(s, s + batch)
            out[sl] = net(*(torch.from_numpy(np.array(a[sl])) for a in (u, i, x))).numpy()
    return out


def _probabilities(net: PropensityNet, rows: tuple[np.ndarray, ...]) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-_logits(net, rows)))
