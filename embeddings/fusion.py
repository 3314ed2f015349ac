"""Fuse per-modality item vectors into one item vector.

For item ``i`` with present modalities ``P_i`` (rows that are finite and
non-zero) and weights ``w_m``::

    fused_i = concat_m( present ? sqrt(w_m / sum_{p in P_i} w_p) * b_m[i] / |b_m[i]| : 0 )

then L2-normalised. So every row is unit length, each present block carries a
share ``w_m / sum w_p`` of the squared norm (equal shares with default
weights), and a missing block is zeros. The dot product of two fused rows is
therefore a weighted average of per-modality cosines over the blocks both
items have. An item with no modality at all gets a zero row.

Pure numpy (no torch).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np


def fused_dim(dims: Mapping[str, int] | Iterable[int]) -> int:
    """Width of the fused vector: the sum of the block widths."""
    values = dims.values() if isinstance(dims, Mapping) else dims
    return int(sum(int(d) for d in values))


def fuse(blocks: dict[str, np.ndarray], weights: dict[str, float] | None = None) -> np.ndarray:
    """Concatenate per-modality blocks into fused item vectors.

    Args:
        blocks: modality -> float array ``[n, d_m]`` (same ``n`` for all); a row
            with any NaN (missing modality or failed item) or all zeros counts
            as missing. Blocks are concatenated in the dict's order.
        weights: modality -> non-negative weight (default 1.0 each).

    Returns:
        float32 ``[n, sum_m d_m]``, rows L2-normalised; all-zero rows for
        items with no present modality.
    """
    if not blocks:
        raise ValueError("fuse needs at least one block")
    weights = dict(weights or {})
    unknown = sorted(set(weights) - set(blocks))
    if unknown:
        raise ValueError(f"weights for unknown blocks {unknown}; blocks are {list(blocks)}")
    n: int | None = None
    arrays: list[np.ndarray] = []
    w = []
    for name, block in blocks.items():
        arr = np.asarray(block, dtype=np.float32)
        if arr.ndim != 2:
            raise ValueError(f"block {name!r} must be 2-D [n, d], got shape {arr.shape}")
        if n is None:
            n = arr.shape[0]
        elif arr.shape[0] != n:
            raise ValueError(f"block {name!r} has {arr.shape[0]} rows, expected {n}")
        weight = float(weights.get(name, 1.0))
        if not np.isfinite(weight) or weight < 0:
            raise ValueError(f"weight for {name!r} must be a finite number >= 0, got {weight}")
        arrays.append(arr)
        w.append(weight)

    normed, present = [], []
    for arr in arrays:
        finite = np.isfinite(arr).all(axis=1)
        safe = np.where(finite[:, None], arr, 0.0)
        norms = np.linalg.norm(safe, axis=1)
        ok = finite & (norms > 1e-12)
        normed.append(np.where(ok[:, None], safe / np.where(ok, norms, 1.0)[:, None], 0.0))
        present.append(ok)
    present_m = np.stack(present, axis=1)  # [n, M]
    w_arr = np.asarray(w, dtype=np.float64)  # [M]
    total = (present_m * w_arr).sum(axis=1)  # [n]
    share = np.where(present_m & (total[:, None] > 0),
                     w_arr[None, :] / np.where(total > 0, total, 1.0)[:, None], 0.0)  # [n, M]
    scaled = [b * np.sqrt(share[:, j])[:, None] for j, b in enumerate(normed)]
    fused = np.concatenate(scaled, axis=1)
    norms = np.linalg.norm(fused, axis=1, keepdims=True)
    fused = np.where(norms > 1e-12, fused / np.where(norms > 1e-12, norms, 1.0), 0.0)
    return fused.astype(np.float32)
