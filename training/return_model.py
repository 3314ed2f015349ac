"""Return propensity: ``P(user has at least one event within H after the as-of time)``, calibrated (issue 15).

Examples come from the users' own past, at rolling as-of times ``t_k = as_of - k * H`` (``k = 1 ..
windows``, those with at least one horizon of data before them): at ``t_k`` every user with an
event by then is an example, described by what they did up to ``t_k`` (``EventTimeline.features``:
recency, frequency, tenure, recent activity, all in units of ``H``) and labelled by whether they
had an event in ``(t_k, t_k + H]``. No feature and no label reads past ``as_of``.

Model (``ReturnNet``): a small MLP over those features and the user's *taste*, the mean
pre-trained content vector of the items they interacted with (projected on the catalog's
``content_dim`` principal directions: the transferred part, optional). Fitting holds out the
newest window (``k = 1``): the net, trained on the older windows, early-stops on its log loss and
a ``Calibrator`` (temperature or isotonic) is fitted on it. That net is served: a refit on every
window would move its logits away from what the calibrator was fitted on (measured on CDNOW:
a 90-day model refitted on twice the windows lost its calibration, ECE 0.07).

Prediction is at ``as_of`` from each user's events up to it (plus events given later, e.g. the
API's fresh events, with the as-of moved to the newest of them). A user with no events is not
a customer yet: the answer is the held-out window's base rate, marked ``known_user = False``.
"""

from __future__ import annotations

import json
import logging
import math
import re
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

logger = logging.getLogger(__name__)

__all__ = ["RETURN_FEATURES", "EventTimeline", "ReturnConfig", "ReturnModel", "ReturnNet", "events_of", "parse_horizon"]

DAY = 86_400
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": DAY, "w": 7 * DAY}
#: What ``EventTimeline.features`` describes a user by at an as-of time ``t`` (log1p of each; times in horizons).
RETURN_FEATURES = ("events", "active_days", "recency", "tenure", "events_last_h", "events_last_4h",
                   "active_days_last_h", "days_per_h", "mean_gap")


def parse_horizon(text: str) -> int:
    """Seconds of a horizon written ``<number><unit>`` (unit s, m, h, d or w: ``30d``, ``12h``, ``2w``).
    ``ValueError`` (one line) otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*", str(text))
    if not match or float(match[1]) <= 0:
        raise ValueError(f"horizon {text!r}: expected a positive number and a unit s, m, h, d or w (e.g. 30d)")
    return int(round(float(match[1]) * _UNITS[match[2]]))


class ReturnConfig(ModelConfig):
    """Hyper-parameters (defaults meant to hold across datasets); ``horizon`` in seconds."""

    horizon: int = Field(30 * DAY, ge=1)
    #: Most rolling as-of times to learn from (fewer when the data spans fewer horizons).
    windows: int = Field(12, ge=2)
    content_dim: int = Field(16, ge=0)
    hidden: int = Field(32, ge=1)
    epochs: int = Field(200, ge=1)
    batch: int = Field(512, ge=1)
    lr: float = Field(3e-3, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    patience: int = Field(5, ge=1)
    seed: int = 0
    progress: bool = True


class EventTimeline:
    """Every known user's event times (int64 seconds) and items, sorted by user then time: the
    features of any user at any as-of time in a few vectorised searches."""

    def __init__(self, users: np.ndarray, timestamps: np.ndarray, items: np.ndarray, n_users: int) -> None:
        order = np.lexsort((timestamps, users))
        self.users, self.timestamps, self.items = (np.asarray(a, np.int64)[order] for a in (users, timestamps, items))
        self.n_users = n_users
        self.indptr = np.concatenate([[0], np.cumsum(np.bincount(self.users, minlength=n_users))]).astype(np.int64)
        day = self.timestamps // DAY
        new_day = np.ones(len(day), bool)
        new_day[1:] = (day[1:] != day[:-1]) | (self.users[1:] != self.users[:-1])
        self._days_before = np.concatenate([[0], np.cumsum(new_day)])  # active days among the first j events
        self._t0 = int(self.timestamps.min()) if len(day) else 0
        self._span = (int(self.timestamps.max()) - self._t0 + 2) if len(day) else 2
        self._keys = self.users * self._span + (self.timestamps - self._t0)

    def count_by(self, users: np.ndarray, t: np.ndarray | int) -> np.ndarray:
        """Events of each user at or before ``t`` (``[n]``), as positions: ``indptr[u] + count``."""
        offset = np.clip(np.asarray(t, np.int64) - self._t0, -1, self._span - 1)
        return np.searchsorted(self._keys, users * self._span + offset, side="right")

    def active(self, t: int) -> np.ndarray:
        """Users with at least one event at or before ``t`` (int64 ``[m]``)."""
        users = np.arange(self.n_users)
        return users[self.count_by(users, t) > self.indptr[:-1]]

    def features(self, users: np.ndarray, t: np.ndarray | int, horizon: int) -> np.ndarray:
        """float32 ``[n, len(RETURN_FEATURES)]`` of ``users`` (each with an event by ``t``) at ``t``."""
        start = self.indptr[users]
        end = self.count_by(users, t)
        n = end - start
        t = np.broadcast_to(np.asarray(t, np.int64), users.shape)
        first, last = self.timestamps[start], self.timestamps[np.maximum(end - 1, 0)]
        days = self._days_before[end] - self._days_before[start]
        before_1h, before_4h = self.count_by(users, t - horizon), self.count_by(users, t - 4 * horizon)
        tenure = (t - first) / horizon
        cols = [n, days, (t - last) / horizon, tenure, end - np.maximum(before_1h, start),
                end - np.maximum(before_4h, start),
                days - (self._days_before[np.maximum(before_1h, start)] - self._days_before[start]),
                days / np.maximum(tenure, 1.0), (last - first) / horizon / np.maximum(days - 1, 1)]
        return np.log1p(np.maximum(np.stack(cols, 1).astype(np.float64), 0.0)).astype(np.float32)

    def taste(self, users: np.ndarray, t: np.ndarray | int, item_content: np.ndarray) -> np.ndarray:
        """float32 ``[n, c]``: the mean of ``item_content`` rows over each user's items up to ``t``."""
        if item_content.shape[1] == 0:
            return np.zeros((len(users), 0), np.float32)
        start, end = self.indptr[users], self.count_by(users, t)
        lengths = end - start
        rows = np.repeat(np.arange(len(users)), lengths)
        pos = np.arange(int(lengths.sum())) - np.repeat(np.cumsum(lengths) - lengths, lengths) + np.repeat(start, lengths)
        out = np.zeros((len(users), item_content.shape[1]), np.float64)
        np.add.at(out, rows, item_content[self.items[pos]])
        return (out / np.maximum(lengths, 1)[:, None]).astype(np.float32)


class ReturnNet(nn.Module):
    """Logits ``[n]`` of (features ``[n, F]``, taste ``[n, c]``)."""

    def __init__(self, taste_dim: int, cfg: ReturnConfig) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(len(RETURN_FEATURES) + taste_dim, cfg.hidden), nn.GELU(),
                                 nn.Linear(cfg.hidden, cfg.hidden), nn.GELU(), nn.Linear(cfg.hidden, 1))

    def forward(self, features: torch.Tensor, taste: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([features, taste], 1))[:, 0]


class ReturnModel:
    """Calibrated ``P(>= 1 event in (as_of, as_of + horizon])`` for ``n_users`` known users."""

    def __init__(self, config: ReturnConfig | None = None) -> None:
        self.config = config or ReturnConfig()
        self.net: ReturnNet | None = None
        self.timeline: EventTimeline | None = None
        self.item_content = np.zeros((0, 0), np.float32)  # [n_items, content_dim] projected content
        self.calibrator: Calibrator | None = None
        self.as_of: int = 0
        self.prior: float = 0.0  # the held-out window's return rate: the answer for a user with no events
        self.epochs_: int | None = None
        self.windows_: int = 0
        self.validation_: dict[str, float] = {}

    # ------------------------------------------------------------------ fit
    def fit(self, users: np.ndarray, timestamps: np.ndarray, items: np.ndarray, n_users: int, n_items: int,
            content: np.ndarray | None = None, as_of: int | None = None) -> ReturnModel:
        """Fit on events (int64 ``users`` in ``[0, n_users)``, ``timestamps``, ``items`` in ``[0, n_items)``,
        ``[n]`` each) up to ``as_of`` (default: the newest); ``content`` float32 ``[n_items, c]``
        pre-trained item vectors (optional).

        ``DataError`` when the data spans too few horizons or one window has a single outcome.
        """
        cfg = self.config
        h = cfg.horizon
        timestamps = np.asarray(timestamps, np.int64)
        if len(timestamps) == 0:
            raise DataError("return: no events to learn from")
        self.as_of = int(timestamps.max()) if as_of is None else int(as_of)
        keep = timestamps <= self.as_of
        self.timeline = EventTimeline(np.asarray(users)[keep], timestamps[keep], np.asarray(items)[keep], n_users)
        self.item_content = _principal_directions(content, cfg.content_dim, n_items)
        first = int(timestamps[keep].min())
        # an as-of time needs events before it (a horizon of them) and its horizon inside the data
        times = [self.as_of - k * h for k in range(1, cfg.windows + 1) if self.as_of - k * h - h >= first]
        if len(times) < 2:
            days = (self.as_of - first) / DAY
            raise DataError(f"return: the events span {days:.0f} days up to the as-of time; learning a "
                            f"{h / DAY:g}-day horizon needs at least 3 horizons of history (shorten --horizon)")
        windows = [self._window(t) for t in times]
        for t, (_, _, y) in zip(times, windows):
            if len(y) == 0 or y.min() == y.max():
                raise DataError(f"return: at the as-of time {t} every user has the same outcome; "
                                "nothing to learn (shorten or lengthen --horizon)")
        held, train = windows[0], _concat(windows[1:])
        torch.manual_seed(cfg.seed)
        net, kept, val_logits = self._train(train, cfg.epochs, held)
        self.calibrator = Calibrator.choose(val_logits, held[2], seed=cfg.seed)
        self.validation_ = probability_metrics(held[2].astype(np.float64), self.calibrator(val_logits))
        self.prior = float(held[2].mean())
        logger.info("return: %d windows of %g days, kept epoch %d; validation %s", len(times), h / DAY, kept,
                    {k: round(v, 4) for k, v in self.validation_.items() if k != "n"})
        self.net = net  # the net the calibrator was fitted for: a refit on every window moves its logits
        self.epochs_, self.windows_ = kept, len(times)
        return self

    def _window(self, t: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(features, taste, labels) of every user active by ``t``; label = an event in ``(t, t + H]``."""
        assert self.timeline is not None
        tl, h = self.timeline, self.config.horizon
        users = tl.active(t)
        labels = (tl.count_by(users, t + h) > tl.count_by(users, t)).astype(np.float32)
        return tl.features(users, t, h), tl.taste(users, t, self.item_content), labels

    def _train(self, rows: tuple[np.ndarray, np.ndarray, np.ndarray], epochs: int,
               val: tuple[np.ndarray, np.ndarray, np.ndarray] | None) -> tuple[ReturnNet, int, np.ndarray]:
        """A fresh net trained on ``rows`` for up to ``epochs`` (early-stopped on ``val``'s log loss)."""
        cfg = self.config
        torch.manual_seed(cfg.seed)
        rng = np.random.default_rng(cfg.seed)
        net = ReturnNet(self.item_content.shape[1], cfg)
        x, c, y = (torch.from_numpy(a) for a in rows)
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        run = EarlyStopping(net, epochs, 1, cfg.patience, val is not None, "return", cfg.progress,
                            metric="-val_log_loss")
        for epoch in run:
            net.train()
            order = torch.from_numpy(rng.permutation(len(y)))
            for b in range(math.ceil(len(y) / cfg.batch)):
                pick = order[b * cfg.batch : (b + 1) * cfg.batch]
                loss = nn.functional.binary_cross_entropy_with_logits(net(x[pick], c[pick]), y[pick])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            if val is not None:
                p = 1.0 / (1.0 + np.exp(-_logits(net, val[0], val[1])))
                run.record(epoch, -probability_metrics(val[2].astype(np.float64), p)["log_loss"])
        kept = run.restore()
        return net.eval(), kept, (_logits(net, val[0], val[1]) if val is not None else np.zeros(0))

    # ------------------------------------------------------------------ predict
    def predict(self, users: np.ndarray, extra: list[tuple[np.ndarray, np.ndarray]] | None = None,
                at: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Calibrated probabilities float64 ``[n]`` of int64 ``users`` (outside ``[0, n_users)``: unknown),
        whether each is known (has events), and each answer's as-of time (int64 seconds).

        ``extra``: per user, (timestamps, items) of events after training (e.g. fresh ones): they join
        the user's history and the as-of moves to the newest of them. ``at``: int64 ``[n]``, each
        user's own as-of time instead of the model's (capped at it): only events at or before it count.
        """
        assert self.net is not None and self.timeline is not None and self.calibrator is not None, "not fitted"
        tl = self.timeline
        users = np.asarray(users, np.int64)
        known = (users >= 0) & (users < tl.n_users)
        as_of = np.full(len(users), self.as_of, np.int64)
        if at is not None:
            as_of = np.minimum(np.asarray(at, np.int64), self.as_of)
        elif extra is not None and any(len(ts) for ts, _ in extra):
            return self._predict_with(users, known, extra)
        idx = np.flatnonzero(known)
        idx = idx[tl.count_by(users[idx], as_of[idx]) > tl.indptr[users[idx]]]
        p = np.full(len(users), self.prior)
        if len(idx):
            u, t = users[idx], as_of[idx]
            p[idx] = self.calibrator(_logits(self.net, tl.features(u, t, self.config.horizon),
                                             tl.taste(u, t, self.item_content)))
        has = np.zeros(len(users), bool)
        has[idx] = True
        return p, has, as_of

    def _predict_with(self, users: np.ndarray, known: np.ndarray, extra: list[tuple[np.ndarray, np.ndarray]]
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``predict`` with each user's extra events appended: one small timeline per user."""
        assert self.timeline is not None and self.net is not None and self.calibrator is not None
        tl = self.timeline
        p, has, as_of = np.full(len(users), self.prior), np.zeros(len(users), bool), np.full(len(users), self.as_of)
        for r, (u, (ts, items)) in enumerate(zip(users, extra)):
            lo, hi = (tl.indptr[u], tl.indptr[u + 1]) if known[r] else (0, 0)
            all_ts = np.concatenate([tl.timestamps[lo:hi], np.asarray(ts, np.int64)])
            if len(all_ts) == 0:
                continue
            t = max(self.as_of, int(all_ts.max()))
            one = EventTimeline(np.zeros(len(all_ts), np.int64), all_ts,
                                np.concatenate([tl.items[lo:hi], np.asarray(items, np.int64)]), 1)
            zero = np.zeros(1, np.int64)
            z = _logits(self.net, one.features(zero, t, self.config.horizon), one.taste(zero, t, self.item_content))
            p[r], has[r], as_of[r] = float(self.calibrator(z)[0]), True, t
        return p, has, as_of

    # ------------------------------------------------------------------ files
    def save(self, directory: Path) -> None:
        """Write ``config.json`` and ``weights.safetensors`` (net, calibrator, projected item content and
        every user's events) into ``directory``."""
        assert self.net is not None and self.timeline is not None and self.calibrator is not None, "not fitted"
        directory.mkdir(parents=True, exist_ok=True)
        tl = self.timeline
        meta = {"model": "return", "n_users": tl.n_users, "n_items": len(self.item_content), "as_of": self.as_of,
                "prior": self.prior, "epochs": self.epochs_, "windows": self.windows_,
                "config": self.config.model_dump(mode="json"), "validation": self.validation_}
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2))
        state = {f"net.{k}": v.contiguous() for k, v in self.net.state_dict().items()}
        state |= {f"calibrator.{k}": torch.from_numpy(np.ascontiguousarray(v, np.float64))
                  for k, v in self.calibrator.state().items()}
        state |= {"events.users": torch.from_numpy(tl.users), "events.timestamps": torch.from_numpy(tl.timestamps),
                  "events.items": torch.from_numpy(tl.items),
                  "item_content": torch.from_numpy(np.ascontiguousarray(self.item_content, np.float32))}
        save_file(state, directory / WEIGHTS_FILE)

    @classmethod
    def load(cls, directory: Path, verified: VerifiedVersion | None = None) -> ReturnModel:
        """Inverse of ``save``, every tensor checked. ``ArtifactError``: one line naming the file."""
        config_path, weights_path = Path(directory) / CONFIG_FILE, Path(directory) / WEIGHTS_FILE
        if verified is not None:
            config_path, weights_path = verified.check(config_path), verified.check(weights_path)
        meta = read_json(config_path)
        if not isinstance(meta, dict) or meta.get("model") != "return":
            raise ArtifactError(f"{config_path}: not a return model config")
        try:
            model = cls(ReturnConfig.model_validate(meta.get("config")))
            n_users, n_items = int(meta["n_users"]), int(meta["n_items"])
            model.as_of, model.prior = int(meta["as_of"]), float(meta["prior"])
            if not 0.0 <= model.prior <= 1.0:
                raise ValueError(f"prior {model.prior} is not a probability")
        except (ValidationError, KeyError, TypeError, ValueError) as exc:
            raise ArtifactError(f"{config_path}: not a valid return model config ({str(exc).splitlines()[0]}); "
                                "retrain the model") from None
        state = load_tensors(weights_path)
        try:
            users = tensor_array(state, "events.users", "int64", (None,))
            timestamps = tensor_array(state, "events.timestamps", "int64", (len(users),))
            items = tensor_array(state, "events.items", "int64", (len(users),))
            content = tensor_array(state, "item_content", "float32", (n_items, None), finite=True)
            if content.shape[1] > model.config.content_dim:
                raise ValueError(f"item_content has {content.shape[1]} columns, content_dim is {model.config.content_dim}")
            if len(users) and not (0 <= users.min() and users.max() < n_users and 0 <= items.min()
                                   and items.max() < n_items):
                raise ValueError(f"events index users or items outside [0, {n_users}) x [0, {n_items})")
            model.calibrator = Calibrator.from_state(
                {k.removeprefix("calibrator."): tensor_array(state, k, "float64", finite=True).copy()
                 for k in state if k.startswith("calibrator.")})
            net_state = {k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")}
            for k in net_state:
                tensor_array(net_state, k, "float32", finite=True)
            net = ReturnNet(content.shape[1], model.config)
            net.load_state_dict(net_state)  # strict: a missing, extra or misshapen tensor is a RuntimeError
        except (ValueError, KeyError, RuntimeError) as exc:
            raise ArtifactError(f"{weights_path}: {str(exc).splitlines()[0]} (corrupt, or written by another "
                                "tlrec version? retrain the model)") from None
        model.net = net.eval()
        model.item_content = content.copy()
        model.timeline = EventTimeline(users.copy(), timestamps.copy(), items.copy(), n_users)
        model.epochs_, model.windows_ = meta.get("epochs"), int(meta.get("windows") or 0)
        model.validation_ = dict(meta.get("validation") or {})
        return model


def _principal_directions(content: np.ndarray | None, dim: int, n_items: int) -> np.ndarray:
    """float32 ``[n_items, min(dim, c)]``: centred ``content`` on its top principal directions, scaled
    to unit variance along the first (``[n_items, 0]`` without content or with ``dim = 0``)."""
    if content is None or dim == 0 or n_items < 2:
        return np.zeros((n_items, 0), np.float32)
    if len(content) != n_items:
        raise ValueError(f"content has {len(content)} rows for {n_items} items")
    x = np.asarray(content, np.float64)
    x = x - x.mean(0)
    values, vectors = np.linalg.eigh(x.T @ x / len(x))
    top = vectors[:, ::-1][:, :dim]
    out = x @ top
    return (out / max(float(np.sqrt(values[-1])), 1e-12)).astype(np.float32)


def _concat(parts: list[tuple[np.ndarray, ...]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    return tuple(np.concatenate([p[j] for p in parts]) for j in range(3))  # type: ignore[return-value]


def _logits(net: ReturnNet, features: np.ndarray, taste: np.ndarray, batch: int = 65_536) -> np.ndarray:
    """float64 ``[n]`` logits."""
    out = np.zeros(len(features))
    net.eval()
    with torch.inference_mode():
        for s in range(0, len(features), batch):
            out[s : s + batch] = net(torch.from_numpy(features[s : s + batch]),
                                     torch.from_numpy(taste[s : s + batch])).numpy()
    return out


def events_of(frame: pl.DataFrame) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user_idx, timestamp, item_idx) int64 arrays of an indexed interactions frame."""
    return tuple(frame[c].to_numpy().astype(np.int64)  # type: ignore[return-value]
                 for c in (Columns.USER_IDX, Columns.TIMESTAMP, Columns.ITEM_IDX))
