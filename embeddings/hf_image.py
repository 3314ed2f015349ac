"""Image encoders from any transformers vision model (``hf:<id-or-dir>``).

Pooling per family: see the table in ``tlrec.embeddings.hf``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tlrec.embeddings.base import ModelCard, encode_in_batches
from tlrec.embeddings.hf import (
    CLS_TYPES,
    DUAL_TYPES,
    POOLER_HIDDEN_SIZE_TYPES,
    POOLER_HIDDEN_SIZES_TYPES,
    accepts,
    count_params,
    files_summary,
    fingerprint,
    fmt_floats,
    fmt_size,
    load_config,
    load_error,
    load_model,
    locate,
    size_numbers,
    weight_keys,
)

logger = logging.getLogger(__name__)


class HFImageEncoder:
    """Image embeddings from a transformers vision model (``AutoModel`` + ``AutoImageProcessor``).

    ``encode(images)`` -> float32 ``[n, card.dim]``, rows L2-normalised;
    pooling per family as in the module docstring. Inputs: paths, bytes, PIL
    images or uint8 ``HxW[x3|x4]`` arrays; an unreadable image gives a NaN row
    and a WARNING naming it.

    Args:
        ref: local directory or hub id.
        name: registry name for the card (default ``"hf:<ref>"``).
        num_workers: threads that decode and preprocess images.
    """

    def __init__(self, ref: str | Path, name: str | None = None, num_workers: int | None = None) -> None:
        import torch
        from transformers import AutoImageProcessor, AutoModel

        self._torch = torch
        self.loc = locate(str(ref))
        loc = self.loc
        config = load_config(loc)
        self.model_type = str(getattr(config, "model_type", "") or "")
        try:
            self.processor = AutoImageProcessor.from_pretrained(loc.ref)
        except Exception as exc:  # noqa: BLE001
            raise load_error(loc.ref, "the image processor (preprocessor_config.json)", exc) from None

        mt = self.model_type
        modules: list[Any]
        if mt in DUAL_TYPES:
            self.model = load_model(AutoModel, loc)
            if not hasattr(self.model, "get_image_features"):
                raise OSError(f"model {loc.ref!r} ({mt}) has no get_image_features; use a vision model")
            self.pooling = "image_features"
            modules = [getattr(self.model, "vision_model", None) or self.model,
                       getattr(self.model, "visual_projection", None)]
        elif mt == "clip_vision_model" and self._has_visual_projection(config):
            from transformers import CLIPVisionModelWithProjection

            self.model = load_model(CLIPVisionModelWithProjection, loc)
            self.pooling = "projected"
            modules = [self.model]
        else:
            kwargs: dict[str, Any] = {}
            if mt in CLS_TYPES and accepts(config, "add_pooling_layer") and not any(
                    ".pooler." in f".{key}" for key in weight_keys(loc.directory)):
                kwargs["add_pooling_layer"] = False  # the pooler is unused and not in the checkpoint
            self.model = load_model(AutoModel, loc, **kwargs)
            self.pooling = "cls" if mt in CLS_TYPES else "pooler"  # "pooler" falls back to mean if absent
            modules = [self.model]
        self.num_workers = max(1, num_workers if num_workers is not None else min(4, os.cpu_count() or 1))
        sizes = {**size_numbers(getattr(self.processor, "size", None)),
                 **size_numbers(getattr(self.processor, "crop_size", None))}
        self.draft_size = max(sizes.values()) if sizes else None

        dim = self._config_dim(config)
        if dim is None:  # unfamiliar family: measure on a grey image (also settles pooler vs mean)
            from PIL import Image

            probe = self._forward([self._preprocess(Image.new("RGB", (64, 64), (128, 128, 128)))])
            dim = int(probe.shape[1])
        self.dim = int(dim)
        n_params = count_params(modules)
        if self.pooling == "cls":  # a pooler head loaded from the checkpoint is not used
            n_params -= count_params([getattr(self.model, "pooler", None)])
        size_mb, file_format = files_summary(loc)
        card_name = name or f"hf:{ref}"
        spec = self._input_spec()
        self.card = ModelCard(
            name=card_name,
            modality="image",
            dim=self.dim,
            params=n_params,
            size_mb=size_mb,
            framework="pytorch",
            file_format=file_format,
            input_spec=spec,
            source=loc.source,
            version=f"{card_name}@{fingerprint(loc)};{mt};pool={self.pooling};l2",
        )
        logger.info("loaded image encoder %s (%s, %d-d, %.1fM params, %s pooling)", card_name, mt, self.dim,
                    n_params / 1e6, self.pooling)

    def _has_visual_projection(self, config: Any) -> bool:
        archs = getattr(config, "architectures", None) or []
        return any("WithProjection" in a for a in archs) or "visual_projection.weight" in weight_keys(
            self.loc.directory)

    def _config_dim(self, config: Any) -> int | None:
        """Output dimension read from the config (``None`` if this family is not known)."""
        mt = self.model_type
        vision = getattr(config, "vision_config", None)
        if self.pooling == "projected" or mt in {"clip", "metaclip_2", "chinese_clip", "altclip"}:
            value = getattr(config, "projection_dim", None)
        elif mt in {"siglip", "siglip2"}:
            value = getattr(vision, "hidden_size", None)
        elif mt in CLS_TYPES or mt in POOLER_HIDDEN_SIZE_TYPES:
            value = getattr(config, "hidden_size", None)
        elif mt in POOLER_HIDDEN_SIZES_TYPES:
            sizes = getattr(config, "hidden_sizes", None)
            value = sizes[-1] if sizes else None
        else:
            value = None
        return int(value) if isinstance(value, int) and value > 0 else None

    def _input_spec(self) -> str:
        p = self.processor
        parts = ["RGB (EXIF-upright, alpha on white)"]
        if getattr(p, "do_resize", True):
            size = size_numbers(getattr(p, "size", None))
            crop_pct = getattr(p, "crop_pct", None)
            parts.append(f"resize {fmt_size(size)}" + (f" (crop_pct {crop_pct:g})" if crop_pct else ""))
        if getattr(p, "do_center_crop", False):
            parts.append(f"centre crop {fmt_size(size_numbers(getattr(p, 'crop_size', None)))}")
        if getattr(p, "do_normalize", True):
            parts.append(f"mean={fmt_floats(getattr(p, 'image_mean', None))} "
                         f"std={fmt_floats(getattr(p, 'image_std', None))}")
        parts.append(f"processor {type(p).__name__}")
        return ", ".join(parts)

    def _preprocess(self, img: Any) -> dict[str, Any]:
        """RGB ``PIL.Image`` -> processor tensors, each with batch dim 1 (e.g. pixel_values ``[1, 3, H, W]``)."""
        batch = self.processor(images=img, return_tensors="pt")
        return {k: v for k, v in batch.items() if isinstance(v, self._torch.Tensor)}

    def _load(self, item: Any) -> dict[str, Any] | BaseException:
        from tlrec.embeddings.image import load_image

        try:
            return self._preprocess(load_image(item, draft_size=self.draft_size))
        except Exception as exc:  # noqa: BLE001 - any decode failure becomes a NaN row
            return exc

    def _forward(self, batch: list[dict[str, Any]]) -> np.ndarray:
        """Preprocessed images (same shapes) -> float32 ``[b, dim]`` L2-normalised embeddings."""
        torch = self._torch
        inputs = {k: torch.cat([b[k] for b in batch], dim=0) for k in batch[0]}
        with torch.inference_mode():
            if self.pooling == "image_features":
                out = self.model.get_image_features(**inputs)
                feats = out if isinstance(out, torch.Tensor) else (
                    getattr(out, "pooler_output", None) if getattr(out, "pooler_output", None) is not None
                    else out.image_embeds)
            elif self.pooling == "projected":
                feats = self.model(**inputs).image_embeds
            else:
                out = self.model(**inputs)
                hidden = out.last_hidden_state
                pooled = getattr(out, "pooler_output", None)
                if self.pooling == "cls":
                    feats = hidden[:, 0]
                elif pooled is not None:
                    feats = pooled
                else:
                    if self.pooling == "pooler":
                        self.pooling = "mean"
                    feats = hidden.mean(dim=1) if hidden.dim() == 3 else hidden.flatten(2).mean(dim=2)
            feats = feats.reshape(feats.shape[0], -1).float()
            feats = torch.nn.functional.normalize(feats, p=2, dim=1)
        return feats.cpu().numpy().astype(np.float32, copy=False)

    def encode(self, inputs: Sequence[Any], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Encode images into float32 ``[n, card.dim]``, rows L2-normalised (NaN rows for unreadable inputs)."""

        def embed(loaded: list[dict[str, Any]]) -> np.ndarray:
            rows = np.empty((len(loaded), self.dim), dtype=np.float32)
            groups: dict[tuple, list[int]] = {}  # processors normally give one shape; group in case one does not
            for i, res in enumerate(loaded):
                groups.setdefault(tuple((k, tuple(v.shape)) for k, v in sorted(res.items())), []).append(i)
            for idx in groups.values():
                emb = self._forward([loaded[i] for i in idx])
                if emb.shape[1] != self.dim:
                    raise RuntimeError(f"{self.card.name}: model gave {emb.shape[1]}-d vectors, config says {self.dim}")
                rows[idx] = emb
            return rows

        return encode_in_batches(inputs, dim=self.dim, batch_size=batch_size, load=self._load, embed=embed,
                                 label=f"image:{self.card.name}", num_workers=self.num_workers,
                                 progress=progress)
