"""Calibration: turn a model's raw scores (logits) into probabilities that can be trusted as numbers.

Two maps are fitted on held-out examples (the validation split, never the training data) and
the one with the lower cross-validated log loss is kept (``Calibrator.choose``):

* ``temperature``: ``p = sigmoid(a * z + b)``, a scale and a shift of the logit (Platt
  scaling; the shift matters when the base rate moved between training and validation);
* ``isotonic``: a monotone step function of ``z`` (scikit-learn's pool-adjacent-violators),
  each step's rate shrunk by one pseudo-example toward the overall rate (a small all-0 block
  at the low end must not answer 0 for every lower logit), interpolated between its knots and
  kept within ``[ISOTONIC_FLOOR, 1 - ISOTONIC_FLOOR]``. It needs more examples; with few,
  cross-validation picks temperature.

A calibrator is a few numbers (``state``/``from_state``: float64 arrays, no pickle).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit

logger = logging.getLogger(__name__)

__all__ = ["Calibrator", "CalibrationKind"]

CalibrationKind = Literal["temperature", "isotonic"]
ISOTONIC_FLOOR = 1e-4
#: Folds of the cross-validation that chooses between the maps.
FOLDS = 5


def _log_loss(y: np.ndarray, p: np.ndarray) -> float:
    p = np.clip(p, 1e-7, 1 - 1e-7)
    return float(-(y * np.log(p) + (1 - y) * np.log1p(-p)).mean())


@dataclass
class Calibrator:
    """A fitted map from logits ``z`` (float ``[n]``) to probabilities ``[n]``."""

    kind: CalibrationKind = "temperature"
    scale: float = 1.0
    shift: float = 0.0
    knots_x: np.ndarray = field(default_factory=lambda: np.zeros(0))
    knots_y: np.ndarray = field(default_factory=lambda: np.zeros(0))
    #: cross-validated log loss of each map on the examples it was chosen on
    cv_log_loss: dict[str, float] = field(default_factory=dict)

    def __call__(self, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, np.float64)
        if self.kind == "temperature":
            return expit(self.scale * z + self.shift)
        p = np.interp(z, self.knots_x, self.knots_y)
        return np.clip(p, ISOTONIC_FLOOR, 1 - ISOTONIC_FLOOR)

    @classmethod
    def fit(cls, z: np.ndarray, y: np.ndarray, kind: CalibrationKind) -> Calibrator:
        """The ``kind`` map fitted by maximum likelihood on logits ``z`` and 0/1 outcomes ``y``."""
        z, y = np.asarray(z, np.float64), np.asarray(y, np.float64)
        if kind == "temperature":
            def loss(ab: np.ndarray) -> tuple[float, np.ndarray]:
                t = ab[0] * z + ab[1]
                value = -(y * log_expit(t) + (1 - y) * log_expit(-t)).mean()
                r = expit(t) - y  # d loss / d t
                return float(value), np.array([(r * z).mean(), r.mean()])

            res = minimize(loss, np.array([1.0, 0.0]), jac=True, method="L-BFGS-B")
            return cls("temperature", scale=float(res.x[0]), shift=float(res.x[1]))
        from sklearn.isotonic import IsotonicRegression  # imported on use: ~1 s, and serving never fits

        iso = IsotonicRegression(out_of_bounds="clip", y_min=0.0, y_max=1.0).fit(z, y)
        # each step is the outcome rate of a block of examples; a small block of all 0s (or 1s) at an end
        # would answer 0 (or 1) for every logit beyond it: shrink each block's rate toward the overall
        # rate by one pseudo-example (y = the overall rate), then keep the steps monotone
        steps, block = np.unique(iso.predict(z), return_inverse=True)
        sizes, positives = np.bincount(block), np.bincount(block, weights=y)
        smoothed = np.maximum.accumulate((positives + y.mean()) / (sizes + 1.0))
        knots_y = smoothed[np.searchsorted(steps, np.asarray(iso.y_thresholds_, np.float64))]
        return cls("isotonic", knots_x=np.asarray(iso.X_thresholds_, np.float64), knots_y=knots_y)

    @classmethod
    def choose(cls, z: np.ndarray, y: np.ndarray, seed: int = 0) -> Calibrator:
        """The map (temperature or isotonic) with the lower ``FOLDS``-fold log loss, refitted on all of ``z``."""
        z, y = np.asarray(z, np.float64), np.asarray(y, np.float64)
        if len(z) < 2 * FOLDS or not 0 < y.sum() < len(y):
            raise ValueError(f"calibration needs >= {2 * FOLDS} held-out examples of both classes, "
                             f"got {len(z)} ({int(y.sum())} positive)")
        fold = np.random.default_rng(seed).permutation(len(z)) % FOLDS
        scores: dict[str, float] = {}
        for kind in ("temperature", "isotonic"):
            p = np.zeros(len(z))
            for f in range(FOLDS):
                test = fold == f
                p[test] = cls.fit(z[~test], y[~test], kind)(z[test])  # type: ignore[arg-type]
            scores[kind] = _log_loss(y, p)
        best: CalibrationKind = min(scores, key=scores.__getitem__)  # type: ignore[assignment]
        out = cls.fit(z, y, best)
        out.cv_log_loss = scores
        logger.info("calibration: %s (cross-validated log loss %s)", best,
                    ", ".join(f"{k} {v:.4f}" for k, v in scores.items()))
        return out

    def state(self) -> dict[str, np.ndarray]:
        """The calibrator as float64 arrays (for a safetensors file)."""
        return {"kind": np.array([0.0 if self.kind == "temperature" else 1.0]),
                "scale_shift": np.array([self.scale, self.shift]), "knots_x": self.knots_x, "knots_y": self.knots_y}

    @classmethod
    def from_state(cls, state: dict[str, np.ndarray]) -> Calibrator:
        """Inverse of ``state``; ValueError when an array is missing or inconsistent."""
        try:
            kind = "temperature" if float(state["kind"][0]) == 0.0 else "isotonic"
            scale, shift = (float(v) for v in state["scale_shift"])
            kx, ky = np.asarray(state["knots_x"], np.float64), np.asarray(state["knots_y"], np.float64)
        except (KeyError, IndexError, ValueError, TypeError) as exc:
            raise ValueError(f"calibrator state is incomplete ({exc})") from None
        if kind == "isotonic" and (len(kx) == 0 or len(kx) != len(ky) or (np.diff(kx) < 0).any()):
            raise ValueError("calibrator state: isotonic knots are empty, unequal or not sorted")
        if not (np.isfinite([scale, shift]).all() and np.isfinite(kx).all() and np.isfinite(ky).all()):
            raise ValueError("calibrator state holds NaN or inf")
        return cls(kind, scale, shift, kx, ky)  # type: ignore[arg-type]
