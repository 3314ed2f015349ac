"""The items a softmax runs over: the whole catalog when small, else sampled with a logQ correction."""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["softmax_pool"]


def softmax_pool(targets: np.ndarray, trained_items: np.ndarray, log_pop: np.ndarray, full_softmax_items: int,
                 negatives: int, rng: np.random.Generator) -> tuple[np.ndarray, torch.Tensor | None]:
    """Items int64 ``[m]`` a batch's softmax runs over, and the logQ correction float32 ``[m]`` (or None).

    Up to ``full_softmax_items`` trained items, all of them (an exact softmax, no correction).
    Above, the batch's ``targets`` (in-batch negatives) plus ``negatives`` uniform draws from
    ``trained_items``; each pool item's logit is then reduced by the log of how likely it is
    to be in the pool (``log_pop``: log share of the training events, ``[n_items]``), so
    popular items are not under-scored for being drawn often (Yi et al., RecSys 2019).
    """
    n_trained = len(trained_items)
    if n_trained <= full_softmax_items:
        return trained_items, None
    sampled = trained_items[rng.integers(0, n_trained, size=negatives)]
    pool = np.unique(np.concatenate([targets, sampled]))
    p_draw = 1.0 - np.exp(-len(targets) * np.exp(log_pop[pool])) + negatives / n_trained
    return pool, torch.from_numpy(np.log(np.minimum(p_draw, 1.0)).astype(np.float32))
