"""Why NCF scored an item so: its score split over the history items, and into pre-trained content vs learned id.

The score of item ``i`` for a history (``ncf.NCFModel``) is

    s = <p, q_i> + head(t * q_i[:-1]),    p = [t, 1],  t = tanh(h + b),  h = sum_j w_j v_j

with ``w`` the history's L2-normalised weights, ``v_j`` the input vector of history item ``j``
and ``q_i`` the item's output vector. Both item vectors are sums of a learned id part and a
part computed from the frozen pre-trained content vector (``NCFNet.items``):
``v_j = f_j + g_j`` and ``q_i = e_i + c_i`` (a new item has no id: all of its vector comes from
its content, through the new-item tower and its content neighbours).

What is exact and what is an attribution:

* ``baseline = <[tanh(b), 1], q_i>``: the item's score for an empty history (exact).
* ``head``: the ranking head's term, non-linear in ``t * q_i``; reported whole, not split
  (exact value; 0 when validation switched the head off).
* The history's share ``<t - tanh(b), q_i[:-1]>`` is split among the history items through
  ``tanh`` by DeepLIFT's rescale rule against the empty history: in each dimension ``k``
  item ``j`` gets ``m_k w_j v_jk`` with ``m_k = (t_k - tanh(b_k)) / h_k`` (the derivative
  ``1 - tanh(b_k)^2`` where ``h_k = 0``). The rule is an attribution (tanh has no exact
  per-input split), but complete: the contributions sum exactly to that share, so

      score = baseline + sum_j contribution_j + head.

* Content vs learned id: the item side splits exactly (``q_i = e_i + c_i``), the history side
  by the same rescale rule (``v_j = f_j + g_j``); each bilinear term ``<a, q>`` goes to
  content when both sides are content, to the id when both are ids, and half to each when
  they are mixed (the Shapley value of the two sources on a product). The baseline goes to the
  source of the item-side part it multiplies. Exactly:

      score = content + learned_id + head.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from tlrec.training.models.ncf_net import NCFNet

#: What an explanation's figures are, in one line (the API returns it with the figures).
METHOD = ("ncf two-tower: score = baseline (empty history) + history contributions + ranking head; "
          "history split through tanh by DeepLIFT's rescale rule (sums exactly); content vs learned id "
          "exact on the item side, shared half-half on mixed terms; score = content + learned_id + head")
#: ``h_k`` closer to 0 than this uses the derivative of tanh instead of the secant.
_FLAT = 1e-7


@dataclass
class ScoreExplanation:
    """The split of ``m`` items' scores for one history of ``n`` distinct items (internal ids).

    float64 arrays; for every item ``r``:
    ``score[r] = baseline[r] + contributions[r].sum() + head[r] = content[r] + learned_id[r] + head[r]``,
    and ``contribution_content[r, j]`` is the content part of ``contributions[r, j]`` (the rest is id).
    """

    items: np.ndarray  # int64 [m]
    history: np.ndarray  # int64 [n]
    score: np.ndarray  # [m]
    baseline: np.ndarray  # [m]
    contributions: np.ndarray  # [m, n]
    contribution_content: np.ndarray  # [m, n]
    head: np.ndarray  # [m]
    content: np.ndarray  # [m]
    learned_id: np.ndarray  # [m]


def _learned_parts(net: NCFNet, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The learned-id parts float64 ``([m, d + 1], [m, d])`` of the output and input vectors of ``idx``.

    An item's id counts only where the net uses it (``seen_mask``: items seen in training);
    what the served vector holds beyond it comes from the content.
    """
    index = torch.from_numpy(np.asarray(idx, np.int64))
    keep = net.seen_mask[index][:, None]
    with torch.inference_mode():
        return (net.item_emb(index) * keep).double().numpy(), (net.hist_emb(index) * keep).double().numpy()


def explain_scores(net: NCFNet, item_vecs: np.ndarray, input_vecs: torch.Tensor, history_items: np.ndarray,
                   history_weights: np.ndarray, items: np.ndarray) -> ScoreExplanation:
    """Split the scores of ``items`` (int64 ``[m]``) for one weighted history (see the module doc).

    ``item_vecs`` float32 ``[n_items, d + 1]`` and ``input_vecs`` ``[n_items, d]`` are the vectors
    the model serves (``NCFModel._item_vecs`` and ``_input_vecs``); ``history_items`` int64 ``[n]``
    (distinct) with their weights ``[n]`` before normalisation, as the model's history row holds them.
    """
    d = net.dim
    items = np.asarray(items, np.int64)
    hist = np.asarray(history_items, np.int64)
    w = np.asarray(history_weights, np.float64)
    w = w / max(float(np.sqrt((w * w).sum())), 1e-12)  # the L2-normalised row ``row_normalised`` builds

    q = item_vecs[items].astype(np.float64)  # [m, d + 1]
    v = input_vecs[torch.from_numpy(hist)].double().numpy() if len(hist) else np.zeros((0, d))
    if net.content_hidden is None:  # no content: every vector is learned
        q_content, v_content = np.zeros_like(q), np.zeros_like(v)
    else:
        q_content = q - _learned_parts(net, items)[0]
        v_content = v - _learned_parts(net, hist)[1]
    q_id = q - q_content

    b = net.hist_bias.detach().double().numpy()
    h = w @ v  # [d]
    t0, t = np.tanh(b), np.tanh(h + b)
    flat = np.abs(h) < _FLAT
    slope = np.where(flat, 1.0 - t0 * t0, (t - t0) / np.where(flat, 1.0, h))  # rescale multiplier per dimension
    a = slope * (w[:, None] * v)  # [n, d]: each history item's share of t - t0
    a_content = slope * (w[:, None] * v_content)
    a_id = a - a_content

    baseline = q[:, :d] @ t0 + q[:, d]
    baseline_content = q_content[:, :d] @ t0 + q_content[:, d]
    contributions = q[:, :d] @ a.T  # [m, n]
    mixed = q_content[:, :d] @ a_id.T + q_id[:, :d] @ a_content.T
    contribution_content = q_content[:, :d] @ a_content.T + 0.5 * mixed

    head = np.zeros(len(items))
    if float(net.head_on):
        p = torch.from_numpy(np.append(t, 1.0).astype(np.float32))[None, :]
        with torch.inference_mode():
            head = net.head_score(p, torch.from_numpy(item_vecs[items])).double().numpy()
    content = baseline_content + contribution_content.sum(axis=1)
    learned_id = (baseline - baseline_content) + (contributions - contribution_content).sum(axis=1)
    return ScoreExplanation(items=items, history=hist, score=baseline + contributions.sum(axis=1) + head,
                            baseline=baseline, contributions=contributions,
                            contribution_content=contribution_content, head=head, content=content,
                            learned_id=learned_id)
