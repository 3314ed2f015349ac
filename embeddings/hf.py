"""Any transformers model as an encoder: ``hf:<model-id-or-local-dir>``.

``load_hf_encoder(ref)`` reads the model's config (and whether it ships an
image processor or feature extractor) to pick the modality, then builds:

* text  -> ``embeddings.text.TextEncoder`` (masked mean pooling, or CLS if the
  sentence-transformers pooling config says so);
* image -> ``HFImageEncoder``: ``AutoModel`` + ``AutoImageProcessor``;
* audio -> ``HFAudioEncoder``: ``AutoModel`` + ``AutoFeatureExtractor``.

Pooling per family (image):

    ViT, DeiT, ViT-MSN               CLS token of last_hidden_state
    DINOv2 (+registers), BEiT        pooler_output (DINOv2: layer-normed CLS)
    CLIP-style dual encoders         get_image_features (vision pooled output
                                     through visual_projection)
    CLIPVisionModel(WithProjection)  image_embeds if the checkpoint has
                                     visual_projection weights, else pooler_output
    ConvNeXt, ResNet, Swin, ... CNNs pooler_output (global average pool)
    anything else                    pooler_output if the model has one, else
                                     the mean of last_hidden_state

Pooling (audio): wav2vec2 / HuBERT / WavLM / Whisper encoder -> mean of
last_hidden_state over valid (non-padding) frames; AST -> pooler_output (mean
of its CLS and distillation tokens). Audio is read with
``embeddings.audio.load_audio`` (any sample rate, channels mixed down,
resampled to the extractor's ``sampling_rate``, long files as evenly spaced
segments), cut into windows the model accepts, and the window results pooled
(frame-weighted mean) into one vector per item.

Images are read with ``embeddings.image.load_image`` (EXIF orientation,
grayscale / palette / CMYK / RGBA -> RGB). An item that cannot be read, or
audio that is silent, gives an all-NaN row and a WARNING naming it.

Nothing here is imported by the registry until an ``hf:`` name is used;
torch and transformers are imported lazily.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from tlrec.embeddings.base import Encoder, ModelCard, Modality, describe_input, file_sha256

logger = logging.getLogger(__name__)

VISION_TYPES: frozenset[str] = frozenset({
    "vit", "deit", "vit_msn", "vit_mae", "ijepa", "dinov2", "dinov2_with_registers", "dinov3_vit",
    "dinov3_convnext", "beit", "data2vec-vision", "clip", "clip_vision_model", "metaclip_2", "siglip",
    "siglip2", "siglip_vision_model", "siglip2_vision_model", "chinese_clip", "chinese_clip_vision_model",
    "altclip", "align", "convnext", "convnextv2", "resnet", "regnet", "bit", "swin", "swinv2", "efficientnet",
    "mobilenet_v1", "mobilenet_v2", "mobilevit", "mobilevitv2", "levit", "poolformer", "focalnet", "cvt",
    "pvt", "pvt_v2", "dinat", "hiera", "swiftformer", "timm_wrapper", "aimv2_vision_model",
})
AUDIO_TYPES: frozenset[str] = frozenset({
    "wav2vec2", "wav2vec2-conformer", "wav2vec2-bert", "hubert", "wavlm", "data2vec-audio", "unispeech",
    "unispeech-sat", "sew", "sew-d", "audio-spectrogram-transformer", "whisper", "clap_audio_model",
})
#: model types whose ``get_image_features`` gives the (projected) image embedding
DUAL_TYPES: frozenset[str] = frozenset({"clip", "metaclip_2", "chinese_clip", "altclip", "siglip", "siglip2",
                                        "align"})
#: image model types pooled with the CLS token of last_hidden_state
CLS_TYPES: frozenset[str] = frozenset({"vit", "deit", "vit_msn"})
#: image model types whose pooler_output is the right embedding (dim from the config)
_POOLER_HIDDEN_SIZE = frozenset({"dinov2", "dinov2_with_registers", "beit", "data2vec-vision", "swin", "swinv2",
                                 "clip_vision_model", "siglip_vision_model"})
_POOLER_HIDDEN_SIZES = frozenset({"convnext", "convnextv2", "resnet", "regnet", "bit"})
#: audio model types mean-pooled over valid frames (dim = hidden_size)
_FRAME_MEAN_TYPES = frozenset({"wav2vec2", "wav2vec2-conformer", "hubert", "wavlm", "data2vec-audio", "unispeech",
                               "unispeech-sat", "sew", "sew-d"})
AST_TYPE = "audio-spectrogram-transformer"

_NON_WEIGHT_BINS = frozenset({"training_args.bin", "optimizer.bin", "scheduler.bin", "rng_state.bin"})
_CONFIG_FILES = ("config.json", "preprocessor_config.json", "processor_config.json")
SILENCE_STD = 1e-4  # about -80 dBFS, as in embeddings.audio


@dataclass(frozen=True)
class HFLocation:
    """Where a model lives.

    Attributes:
        ref: what is handed to ``from_pretrained`` (resolved local dir or hub id).
        directory: the local directory, or the cached hub snapshot (``None`` if
            nothing of it is cached).
        is_local: ``True`` for a local directory.
    """

    ref: str
    directory: Path | None
    is_local: bool

    @property
    def source(self) -> str:
        """Human-readable origin for the model card."""
        if self.is_local:
            return f"local dir {self.directory}"
        if self.directory is not None and weight_files(self.directory):
            return f"Hugging Face hub: {self.ref} (cached snapshot {self.directory})"
        return f"Hugging Face hub: {self.ref} (weights not in the local cache; size unknown)"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return text if len(text) <= 300 else text[:297] + "..."


def _load_error(ref: str, what: str, exc: BaseException) -> OSError:
    return OSError(
        f"cannot load {what} of Hugging Face model {ref!r}: {type(exc).__name__}: {_one_line(exc)} "
        "(give a local directory saved with save_pretrained, or a hub id that is in the local "
        "Hugging Face cache when offline)")


def locate(ref: str) -> HFLocation:
    """Resolve ``ref`` (local directory or hub id) without loading anything big."""
    ref = ref.strip()
    candidate = Path(ref).expanduser()
    if candidate.is_dir():
        resolved = candidate.resolve()
        return HFLocation(str(resolved), resolved, True)
    directory = None
    try:
        from transformers.utils import cached_file

        config_path = cached_file(ref, "config.json", _raise_exceptions_for_missing_entries=False,
                                  _raise_exceptions_for_connection_errors=False)
        if config_path:
            directory = Path(config_path).parent
    except Exception:  # noqa: BLE001 - an invalid id is reported when the config is loaded
        directory = None
    return HFLocation(ref, directory, False)


def load_config(loc: HFLocation) -> Any:
    """``AutoConfig`` of the model; ``OSError`` (one line, naming the model) if it cannot be read."""
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(loc.ref)
    except Exception as exc:  # noqa: BLE001 - OSError, ValueError, HFValidationError, KeyError (unknown type)
        raise _load_error(loc.ref, "the config", exc) from None


def _preprocessor_config(loc: HFLocation) -> dict[str, Any]:
    """Contents of preprocessor_config.json (or processor_config.json), ``{}`` if absent."""
    paths: list[Path] = []
    if loc.directory is not None:
        paths = [loc.directory / name for name in _CONFIG_FILES[1:]]
    if not loc.is_local:
        try:
            from transformers.utils import cached_file

            for name in _CONFIG_FILES[1:]:
                found = cached_file(loc.ref, name, _raise_exceptions_for_missing_entries=False,
                                    _raise_exceptions_for_connection_errors=False)
                if found:
                    paths.append(Path(found))
        except Exception:  # noqa: BLE001 - absence is an answer too
            pass
    for path in paths:
        if path.is_file():
            try:
                data = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if isinstance(data, dict):
                nested = data.get("image_processor") or data.get("feature_extractor")
                return nested if isinstance(nested, dict) else data
    return {}


def modality_from_config(model_type: str, preprocessor: dict[str, Any]) -> Modality:
    """Modality of a model given its ``model_type`` and preprocessor config contents."""
    if model_type in VISION_TYPES:
        return "image"
    if model_type in AUDIO_TYPES:
        return "audio"
    try:
        from transformers.models.auto import modeling_auto as ma

        image_types = set(ma.MODEL_FOR_IMAGE_CLASSIFICATION_MAPPING_NAMES) | set(ma.MODEL_FOR_IMAGE_MAPPING_NAMES)
        audio_types = set(ma.MODEL_FOR_AUDIO_CLASSIFICATION_MAPPING_NAMES) | set(ma.MODEL_FOR_CTC_MAPPING_NAMES)
    except (ImportError, AttributeError):  # pragma: no cover - older/newer transformers layouts
        image_types, audio_types = set(), set()
    if model_type in image_types:
        return "image"
    if model_type in audio_types:
        return "audio"
    if "image_processor_type" in preprocessor or "image_mean" in preprocessor:
        return "image"
    if "feature_extractor_type" in preprocessor and "sampling_rate" in preprocessor:
        return "audio"
    return "text"


@lru_cache(maxsize=256)
def detect_modality(ref: str) -> Modality:
    """Modality of the transformers model ``ref`` (local dir or hub id), from its config.

    Vision model types (ViT, CLIP, DINOv2, ConvNeXt, Swin, SigLIP ...) -> image;
    audio types (wav2vec2, HuBERT, WavLM, AST, Whisper ...) -> audio; otherwise
    the preprocessor config decides (image processor -> image, feature
    extractor with a sampling rate -> audio), else text. Cached per ``ref``.
    Raises ``OSError`` naming ``ref`` if its config cannot be read.
    """
    loc = locate(ref)
    config = load_config(loc)
    return modality_from_config(str(getattr(config, "model_type", "") or ""), _preprocessor_config(loc))


def weight_files(directory: Path) -> list[Path]:
    """The weight files transformers would load from ``directory``: safetensors, else .bin."""
    try:
        files = sorted(p for p in directory.iterdir() if p.is_file())
    except OSError:
        return []
    safetensors = [p for p in files if p.suffix == ".safetensors"]
    if safetensors:
        return safetensors
    return [p for p in files if p.suffix == ".bin" and p.name not in _NON_WEIGHT_BINS]


def _weight_keys(directory: Path | None) -> set[str]:
    """Tensor names stored in the directory's safetensors files (headers only), or from the index."""
    if directory is None:
        return set()
    keys: set[str] = set()
    for index in directory.glob("*.index.json"):
        try:
            keys |= set(json.loads(index.read_text()).get("weight_map", {}))
        except (OSError, ValueError, AttributeError):
            continue
    if keys:
        return keys
    try:
        from safetensors import safe_open
    except ImportError:  # pragma: no cover - safetensors comes with transformers
        return keys
    for path in weight_files(directory):
        if path.suffix == ".safetensors":
            try:
                with safe_open(str(path), framework="pt") as fh:
                    keys |= set(fh.keys())
            except Exception:  # noqa: BLE001 - unreadable header: transformers will say so on load
                continue
    return keys


def fingerprint(loc: HFLocation) -> str:
    """Short (12 hex) hash of the config / preprocessor files and the weight files.

    Weight files contribute name, size and content: a hub snapshot's file is a
    symlink named after its content hash (free); a local file is hashed.
    Changes whenever the weights or preprocessing change.
    """
    digest = hashlib.sha256()
    if loc.directory is None:
        digest.update(loc.ref.encode())
        return "nocache-" + digest.hexdigest()[:12]
    for name in _CONFIG_FILES:
        path = loc.directory / name
        if path.is_file():
            digest.update(name.encode())
            digest.update(path.read_bytes())
    for path in weight_files(loc.directory):
        digest.update(f"{path.name}:{path.stat().st_size}:".encode())
        if path.is_symlink():
            digest.update(Path(os.readlink(path)).name.encode())
        else:
            digest.update(file_sha256(path).encode())
    return digest.hexdigest()[:12]


def _files_summary(loc: HFLocation) -> tuple[float, str]:
    """``(size_mb, file_format)`` of the weight files on disk (``(0.0, "unknown")`` if none)."""
    files = weight_files(loc.directory) if loc.directory is not None else []
    if not files:
        return 0.0, "unknown"
    size_mb = sum(p.stat().st_size for p in files) / 1e6
    fmt = ".safetensors" if any(p.suffix == ".safetensors" for p in files) else files[0].suffix
    return round(size_mb, 2), fmt


def _count_params(modules: Sequence[Any]) -> int:
    return int(sum(p.numel() for m in modules if m is not None for p in m.parameters()))


def _size_numbers(size: Any) -> dict[str, int]:
    """Non-empty integer fields of a processor ``size`` / ``crop_size`` (dict or SizeDict)."""
    if size is None:
        return {}
    if isinstance(size, (int, float)):
        return {"shortest_edge": int(size)}
    fields = ("height", "width", "shortest_edge", "longest_edge")
    getter = size.get if isinstance(size, dict) else (lambda k: getattr(size, k, None))
    return {k: int(v) for k in fields if isinstance(v := getter(k), (int, float)) and v}


def _fmt_size(numbers: dict[str, int]) -> str:
    if "height" in numbers and "width" in numbers:
        return f"{numbers['height']}x{numbers['width']}"
    return ",".join(f"{k}={v}" for k, v in numbers.items()) or "native"


def _fmt_floats(values: Any) -> str:
    if values is None:
        return "none"
    if isinstance(values, (int, float)):
        return f"{values:.4g}"
    return "[" + ",".join(f"{float(v):.4g}" for v in values) + "]"


def _load_model(cls: Any, loc: HFLocation, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` in float32 on CPU, eval mode; loading errors -> one-line OSError."""
    import torch

    try:
        model = cls.from_pretrained(loc.ref, dtype=torch.float32, **kwargs)
    except TypeError:  # older transformers: ``torch_dtype``
        try:
            model = cls.from_pretrained(loc.ref, torch_dtype=torch.float32, **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise _load_error(loc.ref, "the weights", exc) from None
    except Exception as exc:  # noqa: BLE001
        raise _load_error(loc.ref, "the weights", exc) from None
    return model.eval()


def _accepts(config: Any, kwarg: str) -> bool:
    """Whether the ``AutoModel`` class for ``config`` takes ``kwarg`` in its constructor."""
    try:
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        cls = MODEL_MAPPING[type(config)]
        return kwarg in inspect.signature(cls.__init__).parameters
    except Exception:  # noqa: BLE001 - unknown to the mapping: do not pass it
        return False


# ----------------------------------------------------------------------------- image


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
            raise _load_error(loc.ref, "the image processor (preprocessor_config.json)", exc) from None

        mt = self.model_type
        modules: list[Any]
        if mt in DUAL_TYPES:
            self.model = _load_model(AutoModel, loc)
            if not hasattr(self.model, "get_image_features"):
                raise OSError(f"model {loc.ref!r} ({mt}) has no get_image_features; use a vision model")
            self.pooling = "image_features"
            modules = [getattr(self.model, "vision_model", None) or self.model,
                       getattr(self.model, "visual_projection", None)]
        elif mt == "clip_vision_model" and self._has_visual_projection(config):
            from transformers import CLIPVisionModelWithProjection

            self.model = _load_model(CLIPVisionModelWithProjection, loc)
            self.pooling = "projected"
            modules = [self.model]
        else:
            kwargs: dict[str, Any] = {}
            if mt in CLS_TYPES and _accepts(config, "add_pooling_layer") and not any(
                    ".pooler." in f".{key}" for key in _weight_keys(loc.directory)):
                kwargs["add_pooling_layer"] = False  # the pooler is unused and not in the checkpoint
            self.model = _load_model(AutoModel, loc, **kwargs)
            self.pooling = "cls" if mt in CLS_TYPES else "pooler"  # "pooler" falls back to mean if absent
            modules = [self.model]
        self.num_workers = max(1, num_workers if num_workers is not None else min(4, os.cpu_count() or 1))
        sizes = {**_size_numbers(getattr(self.processor, "size", None)),
                 **_size_numbers(getattr(self.processor, "crop_size", None))}
        self.draft_size = max(sizes.values()) if sizes else None

        dim = self._config_dim(config)
        if dim is None:  # unfamiliar family: measure on a grey image (also settles pooler vs mean)
            from PIL import Image

            probe = self._forward([self._preprocess(Image.new("RGB", (64, 64), (128, 128, 128)))])
            dim = int(probe.shape[1])
        self.dim = int(dim)
        n_params = _count_params(modules)
        if self.pooling == "cls":  # a pooler head loaded from the checkpoint is not used
            n_params -= _count_params([getattr(self.model, "pooler", None)])
        size_mb, file_format = _files_summary(loc)
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
        return any("WithProjection" in a for a in archs) or "visual_projection.weight" in _weight_keys(
            self.loc.directory)

    def _config_dim(self, config: Any) -> int | None:
        """Output dimension read from the config (``None`` if this family is not known)."""
        mt = self.model_type
        vision = getattr(config, "vision_config", None)
        if self.pooling == "projected" or mt in {"clip", "metaclip_2", "chinese_clip", "altclip"}:
            value = getattr(config, "projection_dim", None)
        elif mt in {"siglip", "siglip2"}:
            value = getattr(vision, "hidden_size", None)
        elif mt in CLS_TYPES or mt in _POOLER_HIDDEN_SIZE:
            value = getattr(config, "hidden_size", None)
        elif mt in _POOLER_HIDDEN_SIZES:
            sizes = getattr(config, "hidden_sizes", None)
            value = sizes[-1] if sizes else None
        else:
            value = None
        return int(value) if isinstance(value, int) and value > 0 else None

    def _input_spec(self) -> str:
        p = self.processor
        parts = ["RGB (EXIF-upright, alpha on white)"]
        if getattr(p, "do_resize", True):
            size = _size_numbers(getattr(p, "size", None))
            crop_pct = getattr(p, "crop_pct", None)
            parts.append(f"resize {_fmt_size(size)}" + (f" (crop_pct {crop_pct:g})" if crop_pct else ""))
        if getattr(p, "do_center_crop", False):
            parts.append(f"centre crop {_fmt_size(_size_numbers(getattr(p, 'crop_size', None)))}")
        if getattr(p, "do_normalize", True):
            parts.append(f"mean={_fmt_floats(getattr(p, 'image_mean', None))} "
                         f"std={_fmt_floats(getattr(p, 'image_std', None))}")
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
        from tqdm.auto import tqdm

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        items = list(inputs)
        out = np.full((len(items), self.dim), np.nan, dtype=np.float32)
        if not items:
            return out
        starts = range(0, len(items), batch_size)
        with ThreadPoolExecutor(max_workers=self.num_workers) as pool:
            for start in tqdm(starts, desc=f"image:{self.card.name}", unit="batch", disable=not progress):
                chunk = items[start:start + batch_size]
                loaded = list(pool.map(self._load, chunk))
                groups: dict[tuple, list[int]] = {}
                for offset, (item, res) in enumerate(zip(chunk, loaded)):
                    if isinstance(res, BaseException):
                        logger.warning("image %s could not be read: %s: %s", describe_input(item),
                                       type(res).__name__, res)
                    else:  # processors normally give one shape; group in case one does not
                        key = tuple((k, tuple(v.shape)) for k, v in sorted(res.items()))
                        groups.setdefault(key, []).append(offset)
                for offsets in groups.values():
                    emb = self._forward([loaded[i] for i in offsets])  # type: ignore[misc]
                    if emb.shape[1] != self.dim:
                        raise RuntimeError(f"{self.card.name}: model gave {emb.shape[1]}-d vectors, "
                                           f"config says {self.dim}")
                    out[[start + i for i in offsets]] = emb
        return out


# ----------------------------------------------------------------------------- audio


class HFAudioEncoder:
    """Audio embeddings from a transformers speech/audio model (``AutoModel`` + ``AutoFeatureExtractor``).

    Each item is read with ``embeddings.audio.load_audio`` (mono, resampled to
    the extractor's ``sampling_rate``; at most ``max_seconds`` read, as evenly
    spaced segments for longer files), cut into near-equal windows of at most
    ``window_seconds`` (AST: its ``max_length`` frames; Whisper: 30 s), silent
    windows dropped, and each window run through the model. wav2vec2-style
    models are mean-pooled over valid frames, AST uses ``pooler_output``; the
    per-window results are averaged (weighted by frames / samples) and
    L2-normalised.

    ``encode(items)`` -> float32 ``[n, card.dim]``. Inputs: paths or
    ``(array, sample_rate)`` tuples. Unreadable or silent items -> NaN rows.

    Args:
        ref: local directory or hub id.
        name: registry name for the card (default ``"hf:<ref>"``).
        max_seconds: at most this much audio is read per item.
        window_seconds: longest window given to the model at once (default 10 s;
            fixed by the extractor for AST / Whisper).
        num_workers: threads that read and featurise audio.
    """

    def __init__(self, ref: str | Path, name: str | None = None, max_seconds: float = 30.0,
                 window_seconds: float | None = None, num_workers: int | None = None) -> None:
        import torch
        from transformers import AutoFeatureExtractor, AutoModel

        if max_seconds <= 0 or (window_seconds is not None and window_seconds <= 0):
            raise ValueError("max_seconds and window_seconds must be positive")
        self._torch = torch
        self.loc = locate(str(ref))
        loc = self.loc
        config = load_config(loc)
        mt = self.model_type = str(getattr(config, "model_type", "") or "")
        try:
            self.extractor = AutoFeatureExtractor.from_pretrained(loc.ref)
        except Exception as exc:  # noqa: BLE001
            raise _load_error(loc.ref, "the feature extractor (preprocessor_config.json)", exc) from None
        sr = getattr(self.extractor, "sampling_rate", None)
        if not isinstance(sr, int) or sr <= 0:
            raise OSError(f"feature extractor of {loc.ref!r} has no sampling_rate; is it an audio model?")
        self.sample_rate = sr
        model = _load_model(AutoModel, loc)
        if getattr(config, "is_encoder_decoder", False) and hasattr(model, "get_encoder"):
            model = model.get_encoder()  # e.g. Whisper: only the audio encoder is used
        self.model = model.eval()
        self.input_name = (getattr(self.extractor, "model_input_names", None) or ["input_values"])[0]
        self.pooling = "pooler" if mt == AST_TYPE else "frame-mean"
        self.max_seconds = float(max_seconds)
        self.n_segments = 10
        self.num_workers = max(1, num_workers if num_workers is not None else min(4, os.cpu_count() or 1))

        # fixed-size inputs: windows must fit the extractor's frame budget
        n_samples = getattr(self.extractor, "n_samples", None)  # Whisper: 30 s
        max_length = getattr(self.extractor, "max_length", None)  # AST: frames of 10 ms
        if isinstance(n_samples, int) and n_samples > 0:
            self.window = n_samples
            self.fixed_length = True
        elif mt == AST_TYPE and isinstance(max_length, int) and max_length > 0:
            self.window = int(max_length * sr // 100)
            self.fixed_length = True
        else:
            self.window = int(round((window_seconds or 10.0) * sr))
            self.fixed_length = False
        if window_seconds is not None:
            self.window = min(self.window, int(round(window_seconds * sr)))
        self.window = max(self.window, 1)
        self.min_samples = self._receptive_field(config)
        # raw-waveform models whose extractor asks for an attention mask can be padded in a batch
        self.can_pad = bool(getattr(self.extractor, "return_attention_mask", False)) and not self.fixed_length

        dim = getattr(config, "hidden_size", None) if mt in _FRAME_MEAN_TYPES or mt == AST_TYPE else None
        if mt == "whisper":
            dim = getattr(config, "d_model", None)
        if not isinstance(dim, int):  # unfamiliar family: measure on 1 s of quiet noise
            probe = (np.random.default_rng(0).standard_normal(sr) * 0.01).astype(np.float32)
            sums, _ = self._forward([self._featurise(probe)])
            dim = int(sums.shape[1])
        self.dim = int(dim)
        n_params = _count_params([self.model])
        size_mb, file_format = _files_summary(loc)
        card_name = name or f"hf:{ref}"
        spec = (f"{sr} Hz mono (resampled, channels mixed), windows <= {self.window / sr:g} s, "
                f"<= {self.max_seconds:g} s per item (evenly spaced segments for longer audio), "
                f"extractor {type(self.extractor).__name__}")
        mel = getattr(self.extractor, "num_mel_bins", None) or (
            getattr(self.extractor, "feature_size", None) if self.input_name == "input_features" else None)
        if mel:
            spec += f", {mel} mel bins"
        self.card = ModelCard(
            name=card_name,
            modality="audio",
            dim=self.dim,
            params=n_params,
            size_mb=size_mb,
            framework="pytorch",
            file_format=file_format,
            input_spec=spec,
            source=loc.source,
            version=(f"{card_name}@{fingerprint(loc)};{mt};sr={sr};win={self.window};"
                     f"max_seconds={self.max_seconds:g};pool={self.pooling};l2"),
        )
        logger.info("loaded audio encoder %s (%s, %d-d, %.1fM params, %s pooling)", card_name, mt, self.dim,
                    n_params / 1e6, self.pooling)

    @staticmethod
    def _receptive_field(config: Any) -> int:
        """Fewest samples that give one output frame of a conv feature encoder (1 if none)."""
        kernels, strides = getattr(config, "conv_kernel", None), getattr(config, "conv_stride", None)
        if not kernels or not strides:
            return 1
        n = 1
        for k, s in reversed(list(zip(kernels, strides))):
            n = (n - 1) * int(s) + int(k)
        return n

    def _featurise(self, window: np.ndarray) -> tuple[dict[str, np.ndarray], int]:
        """One mono window -> (extractor outputs with batch dim 1, number of real samples)."""
        n = int(window.size)
        if n < self.min_samples:
            window = np.pad(window, (0, self.min_samples - n))
        feats = self.extractor(window, sampling_rate=self.sample_rate, return_tensors="np")
        arrays = {k: np.asarray(v) for k, v in feats.items() if k != "attention_mask"}
        return arrays, n

    def _prepare(self, item: Any) -> list[tuple[dict[str, np.ndarray], int]] | BaseException:
        """Read, window and featurise one item; any failure (or silence) is returned, not raised."""
        from tlrec.embeddings.audio import load_audio

        try:
            segments = load_audio(item, self.max_seconds, self.n_segments, sample_rate=self.sample_rate)
            windows = []
            for seg in segments:
                pieces = np.array_split(seg, max(1, math.ceil(seg.size / self.window)))
                windows.extend(p for p in pieces if p.size and float(p.std()) >= SILENCE_STD)
            if not windows:
                raise ValueError("audio is silent (below -80 dBFS)")
            return [self._featurise(np.ascontiguousarray(w, dtype=np.float32)) for w in windows]
        except Exception as exc:  # noqa: BLE001 - any read failure becomes a NaN row
            return exc

    def _valid_frames(self, lengths: list[int], n_frames: int, padded_to: int | None) -> Any:
        """Number of real output frames per window, long tensor ``[b]``."""
        torch = self._torch
        lens = torch.tensor(lengths, dtype=torch.long)
        if self.fixed_length:  # input padded to a fixed duration: real share of the frames
            return torch.clamp(torch.ceil(lens.double() * n_frames / self.window).long(), 1, n_frames)
        if padded_to is None:
            return torch.full((len(lengths),), n_frames, dtype=torch.long)
        if hasattr(self.model, "_get_feat_extract_output_lengths"):
            lens = torch.clamp(lens, min=self.min_samples)
            return torch.clamp(self.model._get_feat_extract_output_lengths(lens).long(), 1, n_frames)
        return torch.clamp(torch.ceil(lens.double() * n_frames / padded_to).long(), 1, n_frames)

    def _forward(self, batch: list[tuple[dict[str, np.ndarray], int]]) -> tuple[np.ndarray, np.ndarray]:
        """Featurised windows -> (weighted sums ``[b, dim]``, weights ``[b]``) for item-level pooling.

        Windows must share feature shapes unless ``can_pad`` (raw waveforms of
        different lengths, zero-padded with an attention mask).
        """
        torch = self._torch
        lengths = [n for _, n in batch]
        inputs: dict[str, Any] = {}
        padded_to = None
        first = batch[0][0]
        if any(f[k].shape != first[k].shape for f, _ in batch for k in first):
            padded_to = max(f[self.input_name].shape[-1] for f, _ in batch)
            values = np.zeros((len(batch), padded_to), dtype=np.float32)
            mask = np.zeros((len(batch), padded_to), dtype=np.int64)
            for i, (f, _) in enumerate(batch):
                x = f[self.input_name][0]
                values[i, :x.size], mask[i, :x.size] = x, 1
            inputs = {self.input_name: torch.from_numpy(values), "attention_mask": torch.from_numpy(mask)}
        else:
            inputs = {k: torch.from_numpy(np.concatenate([f[k] for f, _ in batch], axis=0)) for k in first}
            if self.can_pad:
                inputs["attention_mask"] = torch.ones(inputs[self.input_name].shape[:2], dtype=torch.long)
        for k, v in inputs.items():
            if v.is_floating_point():
                inputs[k] = v.float()
        with torch.inference_mode():
            out = self.model(**inputs)
            pooled = getattr(out, "pooler_output", None)
            if self.pooling == "pooler" and pooled is not None:
                weights = torch.tensor(lengths, dtype=torch.float32)
                sums = pooled.reshape(pooled.shape[0], -1).float() * weights[:, None]
            else:
                hidden = out.last_hidden_state.float()  # [b, t, d]
                valid = self._valid_frames(lengths, hidden.shape[1], padded_to)
                frame_mask = (torch.arange(hidden.shape[1])[None, :] < valid[:, None]).to(hidden.dtype)
                sums = (hidden * frame_mask[:, :, None]).sum(dim=1)
                weights = valid.float()
        return sums.cpu().numpy().astype(np.float32), weights.cpu().numpy().astype(np.float32)

    def _batches(self, windows: list[tuple[int, tuple[dict[str, np.ndarray], int]]],
                 batch_size: int) -> list[list[int]]:
        """Indices into ``windows`` grouped into forward batches (same shapes, or paddable)."""
        def key(i: int) -> tuple:
            feats = windows[i][1][0]
            if self.can_pad:
                return ()
            return tuple((k, v.shape) for k, v in sorted(feats.items()))

        order = sorted(range(len(windows)), key=lambda i: (key(i), -windows[i][1][1]))
        batches: list[list[int]] = []
        for i in order:
            if batches and len(batches[-1]) < batch_size and key(batches[-1][0]) == key(i):
                batches[-1].append(i)
            else:
                batches.append([i])
        return batches

    def encode(self, inputs: Sequence[Any], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Encode audio into float32 ``[n, card.dim]``, rows L2-normalised.

        Inputs: file paths or ``(array, sample_rate)`` tuples (any rate, mono
        or multi-channel). Unreadable, empty or silent items give all-NaN rows
        and a WARNING naming them.
        """
        from tqdm.auto import tqdm

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        items = list(inputs)
        out = np.full((len(items), self.dim), np.nan, dtype=np.float32)
        if not items:
            return out
        starts = range(0, len(items), batch_size)
        with ThreadPoolExecutor(max_workers=self.num_workers) as pool:
            for start in tqdm(starts, desc=f"audio:{self.card.name}", unit="batch", disable=not progress):
                chunk = items[start:start + batch_size]
                loaded = list(pool.map(self._prepare, chunk))
                windows: list[tuple[int, tuple[dict[str, np.ndarray], int]]] = []
                for offset, (item, res) in enumerate(zip(chunk, loaded)):
                    if isinstance(res, BaseException):
                        logger.warning("audio %s could not be encoded: %s: %s", describe_input(item),
                                       type(res).__name__, res)
                    else:
                        windows.extend((offset, w) for w in res)
                if not windows:
                    continue
                sums = np.zeros((len(chunk), self.dim), dtype=np.float64)
                weights = np.zeros(len(chunk), dtype=np.float64)
                for idx in self._batches(windows, batch_size):
                    s, w = self._forward([windows[i][1] for i in idx])
                    if s.shape[1] != self.dim:
                        raise RuntimeError(f"{self.card.name}: model gave {s.shape[1]}-d vectors, "
                                           f"config says {self.dim}")
                    for j, i in enumerate(idx):
                        sums[windows[i][0]] += s[j]
                        weights[windows[i][0]] += w[j]
                done = weights > 0
                vecs = sums[done] / weights[done][:, None]
                norms = np.linalg.norm(vecs, axis=1, keepdims=True)
                vecs = vecs / np.where(norms > 0, norms, 1.0)
                out[start + np.flatnonzero(done)] = vecs.astype(np.float32)
        return out


# ----------------------------------------------------------------------------- entry point


def _text_encoder(ref: str, name: str) -> Encoder:
    """``TextEncoder`` for ``ref`` with the card's size / format / source filled from the files on disk."""
    from tlrec.embeddings.text import TextEncoder

    loc = locate(ref)
    load_config(loc)  # clear one-line error naming the model if it is not there
    encoder = TextEncoder(model_dir=loc.ref, name=name)
    size_mb, file_format = _files_summary(loc)
    updates: dict[str, Any] = {"source": loc.source}
    if not loc.is_local:  # TextEncoder only knows the files of local directories
        updates.update(size_mb=size_mb, file_format=file_format if size_mb else encoder.card.file_format)
    encoder.card = replace(encoder.card, **updates)
    return encoder


def load_hf_encoder(ref: str, modality: Modality | None = None, name: str | None = None) -> Encoder:
    """Encoder for the transformers model ``ref`` (local dir or hub id).

    ``modality`` forces text / image / audio; ``None`` detects it from the
    config (``detect_modality``). Raises ``OSError`` (one line, naming ``ref``)
    if the model, its config or its processor cannot be loaded, ``ValueError``
    for an unknown modality.
    """
    ref = ref.strip()
    if modality is None:
        modality = detect_modality(ref)
    card_name = name or f"hf:{ref}"
    if modality == "text":
        return _text_encoder(ref, card_name)
    if modality == "image":
        return HFImageEncoder(ref, name=card_name)
    if modality == "audio":
        return HFAudioEncoder(ref, name=card_name)
    raise ValueError(f"unknown modality {modality!r}; allowed: text, image, audio")
