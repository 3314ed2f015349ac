"""Fine-tune the top layers of a text encoder on the recommender's objective.

``--finetune-layers N`` unfreezes the top ``N`` transformer layers of the text
encoder. The lower layers stay frozen, so they run once: :class:`TextTopLayers`
caches, per item, the hidden states that enter layer ``L - N`` and afterwards
only the top ``N`` layers (trainable copies) and the pooling run, on the items a
training step needs. That is what makes fine-tuning affordable on a CPU.

Supported encoders: BERT-style models whose layers are ``model.encoder.layer``
(BERT, MiniLM, RoBERTa, XLM-R, ELECTRA, ...), which covers the default MiniLM.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn
from tlrec.progress import progress_bar

from tlrec.embeddings.text import TextEncoder
from tlrec.errors import ConfigError

logger = logging.getLogger(__name__)

#: Item texts are truncated to this many tokens for fine-tuning (titles and short
#: descriptions fit; the cache holds ``n_items x tokens x hidden`` floats).
FINETUNE_MAX_TOKENS = 64


def encoder_layers(model: nn.Module) -> nn.ModuleList:
    """The transformer layers of a BERT-style model (``model.encoder.layer``); ValueError otherwise."""
    layers = getattr(getattr(model, "encoder", None), "layer", None)
    if not isinstance(layers, nn.ModuleList) or len(layers) == 0:
        raise ConfigError(f"--finetune-layers supports BERT-style text encoders (model.encoder.layer); "
                         f"{type(model).__name__} has no such layers")
    return layers


class TextTopLayers(nn.Module):
    """Trainable top ``n_layers`` of ``encoder`` over cached lower-layer states of ``texts``.

    Args:
        encoder: a loaded fp32 :class:`TextEncoder` (its model is not modified).
        texts: one text per item (``None`` or ``""``: the empty text).
        n_layers: how many of the top layers to train, ``1 .. number of layers``.
        max_tokens: texts are truncated to this many tokens.

    ``forward(items)`` (int64 ``[m]``) returns float32 ``[m, hidden]``, rows
    L2-normalised, pooled like the encoder (mean or CLS). With the copied layers
    unchanged it reproduces ``encoder.encode`` on the same (truncated) texts.
    The cache is float32 ``[n_items, longest text in tokens, hidden]``.
    """

    def __init__(self, encoder: TextEncoder, texts: Sequence[str | None], n_layers: int,
                 max_tokens: int = FINETUNE_MAX_TOKENS, batch_size: int = 64, progress: bool = False) -> None:
        super().__init__()
        layers = encoder_layers(encoder.model)
        if isinstance(n_layers, bool) or not 1 <= int(n_layers) <= len(layers):
            raise ConfigError(f"--finetune-layers must be between 1 and {len(layers)} (the encoder's layers), "
                             f"got {n_layers}")
        if encoder.precision != "fp32":
            raise ConfigError("--finetune-layers needs the fp32 text encoder, not a quantized one")
        self.n_layers = int(n_layers)
        self.top = nn.ModuleList(copy.deepcopy(layers[-self.n_layers:]))
        self.pooling = encoder.pooling
        tokens = encoder.tokenizer([t or "" for t in texts], truncation=True, max_length=max_tokens,
                                   padding=False, return_attention_mask=False,
                                   return_token_type_ids=False)["input_ids"]
        lengths = np.array([len(t) for t in tokens], dtype=np.int64)
        width = int(lengths.max()) if len(lengths) else 1
        self.register_buffer("lengths", torch.from_numpy(lengths), persistent=False)
        self.register_buffer("cache", torch.zeros(len(tokens), width, encoder.dim), persistent=False)
        order = np.argsort(-lengths, kind="stable")
        depth = len(layers) - self.n_layers  # hidden_states[depth] enters the first trainable layer
        with torch.inference_mode(), progress_bar(total=len(tokens), show=progress,
                                                  desc="finetune cache", unit="text") as bar:
            for start in range(0, len(order), batch_size):
                idx = order[start:start + batch_size]
                w = int(lengths[idx].max())
                ids = torch.full((len(idx), w), encoder._pad_id, dtype=torch.long)
                mask = torch.zeros((len(idx), w), dtype=torch.long)
                for row, i in enumerate(idx):
                    ids[row, : lengths[i]] = torch.tensor(tokens[i])
                    mask[row, : lengths[i]] = 1
                out = encoder.model(input_ids=ids, attention_mask=mask, output_hidden_states=True)
                self.cache[torch.from_numpy(idx), :w] = out.hidden_states[depth].float()
                bar.update(len(idx))
        logger.info("fine-tuning the top %d of %d text encoder layers over %d cached items (%.0f MB)",
                    self.n_layers, len(layers), len(tokens), self.cache.numel() * 4 / 1e6)

    def forward(self, items: torch.Tensor) -> torch.Tensor:
        """L2-normalised text vectors float32 ``[m, hidden]`` of ``items`` (int64 ``[m]``)."""
        lengths = self.lengths[items]
        width = max(1, int(lengths.max())) if len(items) else 1
        h = self.cache[items, :width]
        mask = torch.arange(width)[None, :] < lengths[:, None]  # [m, t]
        additive = (~mask)[:, None, None, :].to(h.dtype) * torch.finfo(h.dtype).min  # [m, 1, 1, t]
        for layer in self.top:
            out = layer(h, attention_mask=additive)
            h = out[0] if isinstance(out, tuple) else out
        if self.pooling == "cls":
            pooled = h[:, 0]
        else:
            weights = mask.to(h.dtype)
            pooled = (weights[:, :, None] * h).sum(1) / weights.sum(1, keepdim=True).clamp(min=1e-9)
        return nn.functional.normalize(pooled, p=2, dim=1)

    def encode_all(self, batch_size: int = 256) -> torch.Tensor:
        """Every item's current text vector, float32 ``[n_items, hidden]`` (no gradients)."""
        out = torch.empty(self.cache.shape[0], self.cache.shape[2])
        with torch.no_grad():
            for start in range(0, len(out), batch_size):
                idx = torch.arange(start, min(start + batch_size, len(out)))
                out[idx] = self(idx)
        return out
