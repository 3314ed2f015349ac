"""The next-item network (``SASRecNet``): causal self-attention over a user's events, hybrid item vectors.

* **item vectors** ``e_i = id_i + mlp(c_i)`` (``[d + 1]``, the last unit a bias), tied between
  the input and the output side. ``c_i`` is the item's frozen pre-trained content vector; an
  item never seen in training (or whose id is dropped while training, ``item_id_dropout``)
  has no id part, so content alone places it. Without content, ``e_i = id_i``.
* **inputs** ``x_t = e_{i_t}[:d] + pos_t + event_t + gap_t``: the item, its position counted
  from the newest event of the window, its event type and the log2 bucket of the time since
  the previous event (0 = unknown, ``training.sequences``).
* **encoder**  ``blocks`` pre-norm transformer layers with a causal mask (position ``t`` sees
  ``<= t``), then a layer norm: ``h_t [d]`` summarises the events up to ``t``.
* **score** of item ``i`` next after ``t``: ``<[h_t, 1], e_i>``, an inner product, so FAISS
  retrieves over ``e``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import nn

from tlrec.training.sequences import GAP_BUCKETS

if TYPE_CHECKING:
    from tlrec.training.models.sasrec import SASRecConfig

__all__ = ["SASRecNet"]


class SASRecNet(nn.Module):
    """Over ``n_items`` items (content ``[n_items, c]`` or None) and ``n_events`` event types."""

    def __init__(self, n_items: int, content: torch.Tensor | None, n_events: int, cfg: SASRecConfig) -> None:
        super().__init__()
        d = cfg.dim
        self.dim, self.max_len = d, cfg.max_len
        self.item_id = nn.Embedding(n_items, d + 1)
        nn.init.normal_(self.item_id.weight, std=0.05)
        self.register_buffer("content", content if content is not None else torch.zeros(n_items, 0))
        self.register_buffer("seen_mask", torch.ones(n_items))  # 0 = no id (never seen in training)
        c = self.content.shape[1]
        self.content_mlp = (
            nn.Sequential(nn.Linear(c, cfg.content_hidden), nn.GELU(), nn.Linear(cfg.content_hidden, d + 1))
            if c > 0 else None
        )
        self.position = nn.Embedding(cfg.max_len, d)
        self.event = nn.Embedding(n_events + 1, d)
        self.gap = nn.Embedding(GAP_BUCKETS + 1, d)
        for table in (self.position, self.event, self.gap):
            nn.init.normal_(table.weight, std=0.02)
        self.dropout = nn.Dropout(cfg.dropout)
        layer = nn.TransformerEncoderLayer(d, cfg.heads, dim_feedforward=2 * d, dropout=cfg.dropout,
                                           activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.blocks, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d)

    def item_table(self, id_keep: torch.Tensor | None = None) -> torch.Tensor:
        """Every item's vector ``[n_items, d + 1]``; ``id_keep`` (``[n_items]`` 0/1) overrides the seen mask."""
        keep = self.seen_mask if id_keep is None else id_keep
        table = self.item_id.weight * keep[:, None]
        if self.content_mlp is not None:
            table = table + self.content_mlp(self.content)
        return table

    def encode(self, items: torch.Tensor, events: torch.Tensor, gaps: torch.Tensor,
               table: torch.Tensor) -> torch.Tensor:
        """Hidden states ``[b, L, d]`` of left-padded windows (int64 ``[b, L]``, item ``-1`` = padding)."""
        b, length = items.shape
        pad = items < 0
        x = table[items.clamp(min=0), : self.dim] * (~pad)[..., None]
        positions = torch.arange(self.max_len - length, self.max_len)
        x = x + self.position(positions)[None] + self.event(events) + self.gap(gaps)
        x = self.dropout(x)
        causal = torch.ones(length, length, dtype=torch.bool).triu(1)  # True = may not attend
        blocked = causal[None] | pad[:, None, :]  # [b, L, L]
        blocked = blocked & ~torch.eye(length, dtype=torch.bool)[None]  # a padded row attends to itself
        mask = blocked.repeat_interleave(self.encoder.layers[0].self_attn.num_heads, dim=0)
        return self.norm(self.encoder(x, mask=mask))

    def queries(self, h: torch.Tensor) -> torch.Tensor:
        """``[..., d + 1]`` query vectors of hidden states ``[..., d]`` (the last unit meets the item bias)."""
        return torch.cat([h, torch.ones_like(h[..., :1])], dim=-1)
