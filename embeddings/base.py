"""Shared vocabulary of the embeddings layer: the ``Encoder`` protocol and ``ModelCard``.

Every encoder turns a sequence of inputs of one modality into a float32 matrix
``[n, card.dim]`` whose rows are L2-normalised. An input that cannot be read or
decoded yields an all-NaN row and a WARNING naming the input and the reason; a
batch job never stops for one bad item.

Nothing here imports torch, so cards and fusion can be used without it.
"""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Literal, Protocol, TypeVar, runtime_checkable

import numpy as np

from tlrec.files import sha256_file

logger = logging.getLogger(__name__)

Modality = Literal["text", "image", "audio"]
MODALITIES: tuple[Modality, ...] = ("text", "image", "audio")


@dataclass(frozen=True)
class ModelCard:
    """What a practitioner weighs when choosing a pre-trained model.

    Attributes:
        name: registry name of the encoder (e.g. ``"minilm"``).
        modality: ``"text"``, ``"image"`` or ``"audio"``.
        dim: length of each output vector.
        params: number of parameters of the network used for encoding.
        size_mb: size of the weight file(s) on disk, in MB (10**6 bytes).
        framework: deep-learning framework (``"pytorch"``).
        file_format: weight file format (``".safetensors"``, ``".pth"`` ...).
        input_spec: what the model sees, e.g. ``"max 256 tokens"``.
        source: where the weights come from (package and upstream model).
        version: changes whenever weights or preprocessing change; recorded in
            manifests so stale vectors can be detected.
    """

    name: str
    modality: Modality
    dim: int
    params: int
    size_mb: float
    framework: str
    file_format: str
    input_spec: str
    source: str
    version: str

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict of all fields."""
        return asdict(self)


@runtime_checkable
class Encoder(Protocol):
    """A pre-trained model that maps inputs of one modality to vectors."""

    card: ModelCard

    def encode(self, inputs: Sequence, batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Encode ``inputs`` (length n) into float32 ``[n, card.dim]``.

        Rows are L2-normalised; a row whose input cannot be read/decoded is
        all-NaN and a WARNING names the input and the reason.
        """
        ...


def l2_normalize(x: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """Row-wise L2 normalisation of ``x`` (``[n, d]`` or ``[d]``), returned as float32.

    Rows with norm below ``eps`` are returned unchanged (zeros stay zeros);
    NaN rows stay NaN.
    """
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim == 1:
        return l2_normalize(arr[None, :], eps)[0]
    if arr.ndim != 2:
        raise ValueError(f"l2_normalize expects a 1-D or 2-D array, got shape {arr.shape}")
    norms = np.linalg.norm(arr, axis=1, keepdims=True)
    safe = np.where(norms > eps, norms, 1.0)  # NaN norms propagate NaN, as intended
    return (arr / safe).astype(np.float32, copy=False)


def describe_input(item: object, limit: int = 80) -> str:
    """Human-readable name of an input for log messages (paths in full, other values abridged)."""
    if isinstance(item, Path):
        return str(item)
    if isinstance(item, str):
        text = item
        if len(item) <= 4096 and "\n" not in item:
            return item  # a path (or short text): never cut, the warning must name it
    elif isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], np.ndarray):
        text = f"<array shape={item[0].shape} dtype={item[0].dtype} sr={item[1]}>"
    elif isinstance(item, np.ndarray):
        text = f"<array shape={item.shape} dtype={item.dtype}>"
    else:
        text = f"<{type(item).__name__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


Loaded = TypeVar("Loaded")


def encode_in_batches(
    inputs: Sequence[Any],
    *,
    dim: int,
    batch_size: int,
    load: Callable[[Any], Loaded | BaseException],
    embed: Callable[[list[Loaded]], np.ndarray],
    label: str,
    num_workers: int = 1,
    progress: bool = False,
) -> np.ndarray:
    """The batch loop every encoder shares: float32 ``[n, dim]``, a NaN row for each failed input.

    ``inputs`` are cut into chunks of ``batch_size``. ``load`` turns one input into model
    input, or returns the exception it hit (it runs on ``num_workers`` threads: decoding
    releases the GIL); a failed input is logged as a WARNING naming it and keeps its NaN
    row. ``embed`` maps the loaded inputs of one chunk, in order, to ``[m, dim]`` rows (a
    NaN row where an input yields nothing, e.g. silent audio). ``label`` (``"image:NAME"``)
    names the progress bar and the warnings.
    """
    from tlrec.progress import progress_bar

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    items = list(inputs)
    out = np.full((len(items), dim), np.nan, dtype=np.float32)
    if not items:
        return out
    modality = label.split(":", 1)[0]
    with ThreadPoolExecutor(max_workers=max(1, num_workers)) as pool:
        for start in progress_bar(range(0, len(items), batch_size), show=progress, desc=label, unit="batch"):
            chunk = items[start:start + batch_size]
            good: list[int] = []
            loaded: list[Loaded] = []
            for offset, (item, result) in enumerate(zip(chunk, pool.map(load, chunk))):
                if isinstance(result, BaseException):
                    logger.warning("%s %s could not be read: %s: %s", modality, describe_input(item),
                                   type(result).__name__, result)
                else:
                    good.append(offset)
                    loaded.append(result)
            if not good:
                continue
            rows = np.asarray(embed(loaded), dtype=np.float32)
            if rows.shape != (len(good), dim):
                raise RuntimeError(f"{label}: the model gave vectors of shape {rows.shape}, expected "
                                   f"{(len(good), dim)}")
            out[[start + i for i in good]] = rows
    return out


def files_fingerprint(paths: Sequence[str | Path]) -> str:
    """Short (12 hex) fingerprint of the bytes of several files, order-independent by name."""
    digest = hashlib.sha256()
    for path in sorted(Path(p) for p in paths):
        digest.update(path.name.encode())
        digest.update(sha256_file(path).encode())
    return digest.hexdigest()[:12]


#: Names of saved tensors that are buffers, not parameters (BatchNorm statistics, BERT's position ids).
BUFFER_SUFFIXES = ("running_mean", "running_var", "num_batches_tracked", "position_ids")


def parameter_count(shapes: Mapping[str, Sequence[int]]) -> int:
    """Parameters in a state dict, from its tensor shapes (``name -> shape``), buffers left out."""
    return int(sum(math.prod(shape) for name, shape in shapes.items() if not name.endswith(BUFFER_SUFFIXES)))


def weight_file_shapes(path: str | Path) -> dict[str, tuple[int, ...]]:
    """``name -> shape`` of every tensor in a weight file, without building a model: a ``.safetensors``
    header (nothing else read), or a torch file loaded with ``weights_only=True``."""
    path = Path(path)
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), "np") as f:
            return {name: tuple(f.get_slice(name).get_shape()) for name in f.keys()}
    import torch

    state = torch.load(path, map_location="cpu", weights_only=True)
    return {name: tuple(t.shape) for name, t in state.items()}
