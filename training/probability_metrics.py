"""Metrics of predicted probabilities against 0/1 outcomes (propensity and return tasks).

``probability_metrics`` gives ROC-AUC, PR-AUC (average precision), log loss, Brier score and
the expected calibration error; ``reliability`` gives the bins a reliability diagram plots.
Ranking quality comes from scikit-learn; calibration is binned here (equal-width bins over
[0, 1], as the reliability diagram shows them).
"""

from __future__ import annotations

import numpy as np

__all__ = ["ECE_BINS", "expected_calibration_error", "probability_metrics", "reliability"]

#: Equal-width bins of the expected calibration error and the reliability diagram.
ECE_BINS = 15
_EPS = 1e-7


def _check(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    y, p = np.asarray(y, np.float64).ravel(), np.asarray(p, np.float64).ravel()
    if len(y) != len(p) or len(y) == 0:
        raise ValueError(f"need as many outcomes as probabilities (> 0), got {len(y)} and {len(p)}")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("outcomes must be 0 or 1")
    if not (np.isfinite(p).all() and (p >= 0).all() and (p <= 1).all()):
        raise ValueError("probabilities must be finite and within [0, 1]")
    return y, p


def reliability(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> dict[str, np.ndarray]:
    """Per equal-width bin of ``p``: ``count`` (int64 ``[bins]``), mean predicted ``confidence`` and
    observed ``frequency`` (float64 ``[bins]``, NaN for an empty bin), and the bin ``edges`` ``[bins + 1]``."""
    y, p = _check(y, p)
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1], right=True), 0, bins - 1)
    count = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(idx, weights=p, minlength=bins) / count
        frequency = np.bincount(idx, weights=y, minlength=bins) / count
    return {"count": count, "confidence": confidence, "frequency": frequency, "edges": edges}


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = ECE_BINS) -> float:
    """Sum over bins of (share of examples) x |observed frequency - mean predicted probability|."""
    r = reliability(y, p, bins)
    full = r["count"] > 0
    weights = r["count"][full] / r["count"].sum()
    return float((weights * np.abs(r["frequency"][full] - r["confidence"][full])).sum())


def probability_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """``roc_auc``, ``pr_auc``, ``log_loss``, ``brier``, ``ece`` (15 bins), ``base_rate`` and ``n``.

    The AUCs are NaN when only one class occurs in ``y``.
    """
    from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score  # ~1 s: on use
    y, p = _check(y, p)
    both = 0 < y.sum() < len(y)
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "log_loss": float(log_loss(y, np.clip(p, _EPS, 1 - _EPS), labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "base_rate": float(y.mean()),
        "n": float(len(y)),
    }
