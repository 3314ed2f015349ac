"""Any transformers model as an encoder: ``hf:<model-id-or-local-dir>``.

``load_hf_encoder(ref)`` reads the model's config (and whether it ships an
image processor or feature extractor) to pick the modality, then builds:

* text  -> ``embeddings.text.TextEncoder`` (masked mean pooling, or CLS if the
  sentence-transformers pooling config says so);
* image -> ``hf_image.HFImageEncoder``: ``AutoModel`` + ``AutoImageProcessor``;
* audio -> ``hf_audio.HFAudioEncoder``: ``AutoModel`` + ``AutoFeatureExtractor``.

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
import os
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from typing import Any, Sequence


from tlrec.embeddings.base import Encoder, Modality
from tlrec.errors import ConfigError
from tlrec.errors import one_line
from tlrec.files import sha256_file

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
POOLER_HIDDEN_SIZE_TYPES = frozenset({"dinov2", "dinov2_with_registers", "beit", "data2vec-vision", "swin", "swinv2",
                                 "clip_vision_model", "siglip_vision_model"})
POOLER_HIDDEN_SIZES_TYPES = frozenset({"convnext", "convnextv2", "resnet", "regnet", "bit"})
#: audio model types mean-pooled over valid frames (dim = hidden_size)
FRAME_MEAN_TYPES = frozenset({"wav2vec2", "wav2vec2-conformer", "hubert", "wavlm", "data2vec-audio", "unispeech",
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


def load_error(ref: str, what: str, exc: BaseException) -> OSError:
    return OSError(
        f"cannot load {what} of Hugging Face model {ref!r}: {type(exc).__name__}: {one_line(exc, 300)} "
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
        raise load_error(loc.ref, "the config", exc) from None


def preprocessor_config(loc: HFLocation) -> dict[str, Any]:
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
    return modality_from_config(str(getattr(config, "model_type", "") or ""), preprocessor_config(loc))


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


def weight_keys(directory: Path | None) -> set[str]:
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
            digest.update(sha256_file(path).encode())
    return digest.hexdigest()[:12]


def files_summary(loc: HFLocation) -> tuple[float, str]:
    """``(size_mb, file_format)`` of the weight files on disk (``(0.0, "unknown")`` if none)."""
    files = weight_files(loc.directory) if loc.directory is not None else []
    if not files:
        return 0.0, "unknown"
    size_mb = sum(p.stat().st_size for p in files) / 1e6
    fmt = ".safetensors" if any(p.suffix == ".safetensors" for p in files) else files[0].suffix
    return round(size_mb, 2), fmt


def count_params(modules: Sequence[Any]) -> int:
    return int(sum(p.numel() for m in modules if m is not None for p in m.parameters()))


def size_numbers(size: Any) -> dict[str, int]:
    """Non-empty integer fields of a processor ``size`` / ``crop_size`` (dict or SizeDict)."""
    if size is None:
        return {}
    if isinstance(size, (int, float)):
        return {"shortest_edge": int(size)}
    fields = ("height", "width", "shortest_edge", "longest_edge")
    getter = size.get if isinstance(size, dict) else (lambda k: getattr(size, k, None))
    return {k: int(v) for k in fields if isinstance(v := getter(k), (int, float)) and v}


def fmt_size(numbers: dict[str, int]) -> str:
    if "height" in numbers and "width" in numbers:
        return f"{numbers['height']}x{numbers['width']}"
    return ",".join(f"{k}={v}" for k, v in numbers.items()) or "native"


def fmt_floats(values: Any) -> str:
    if values is None:
        return "none"
    if isinstance(values, (int, float)):
        return f"{values:.4g}"
    return "[" + ",".join(f"{float(v):.4g}" for v in values) + "]"


def load_model(cls: Any, loc: HFLocation, **kwargs: Any) -> Any:
    """``cls.from_pretrained`` in float32 on CPU, eval mode; loading errors -> one-line OSError."""
    import torch

    try:
        model = cls.from_pretrained(loc.ref, dtype=torch.float32, **kwargs)
    except TypeError:  # older transformers: ``torch_dtype``
        try:
            model = cls.from_pretrained(loc.ref, torch_dtype=torch.float32, **kwargs)
        except Exception as exc:  # noqa: BLE001
            raise load_error(loc.ref, "the weights", exc) from None
    except Exception as exc:  # noqa: BLE001
        raise load_error(loc.ref, "the weights", exc) from None
    return model.eval()


def accepts(config: Any, kwarg: str) -> bool:
    """Whether the ``AutoModel`` class for ``config`` takes ``kwarg`` in its constructor."""
    try:
        from transformers.models.auto.modeling_auto import MODEL_MAPPING

        cls = MODEL_MAPPING[type(config)]
        return kwarg in inspect.signature(cls.__init__).parameters
    except Exception:  # noqa: BLE001 - unknown to the mapping: do not pass it
        return False


# ----------------------------------------------------------------------------- entry point


def _text_encoder(ref: str, name: str) -> Encoder:
    """``TextEncoder`` for ``ref`` with the card's size / format / source filled from the files on disk."""
    from tlrec.embeddings.text import TextEncoder

    loc = locate(ref)
    load_config(loc)  # clear one-line error naming the model if it is not there
    encoder = TextEncoder(model_dir=loc.ref, name=name)
    size_mb, file_format = files_summary(loc)
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
        from tlrec.embeddings.hf_image import HFImageEncoder

        return HFImageEncoder(ref, name=card_name)
    if modality == "audio":
        from tlrec.embeddings.hf_audio import HFAudioEncoder

        return HFAudioEncoder(ref, name=card_name)
    raise ConfigError(f"unknown modality {modality!r}; allowed: text, image, audio")
