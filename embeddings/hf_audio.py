"""Audio encoders from any transformers audio model (``hf:<id-or-dir>``): windows pooled into one vector per item."""

from __future__ import annotations

import logging
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from tlrec.embeddings.base import ModelCard, encode_in_batches
from tlrec.embeddings.hf import (
    AST_TYPE,
    FRAME_MEAN_TYPES,
    SILENCE_STD,
    count_params,
    files_summary,
    fingerprint,
    load_config,
    load_error,
    load_model,
    locate,
)

logger = logging.getLogger(__name__)


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
            raise load_error(loc.ref, "the feature extractor (preprocessor_config.json)", exc) from None
        sr = getattr(self.extractor, "sampling_rate", None)
        if not isinstance(sr, int) or sr <= 0:
            raise OSError(f"feature extractor of {loc.ref!r} has no sampling_rate; is it an audio model?")
        self.sample_rate = sr
        model = load_model(AutoModel, loc)
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

        dim = getattr(config, "hidden_size", None) if mt in FRAME_MEAN_TYPES or mt == AST_TYPE else None
        if mt == "whisper":
            dim = getattr(config, "d_model", None)
        if not isinstance(dim, int):  # unfamiliar family: measure on 1 s of quiet noise
            probe = (np.random.default_rng(0).standard_normal(sr) * 0.01).astype(np.float32)
            sums, _ = self._forward([self._featurise(probe)])
            dim = int(sums.shape[1])
        self.dim = int(dim)
        n_params = count_params([self.model])
        size_mb, file_format = files_summary(loc)
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

        def embed(loaded: list[list[tuple[dict[str, np.ndarray], int]]]) -> np.ndarray:
            windows = [(i, w) for i, item_windows in enumerate(loaded) for w in item_windows]
            sums = np.zeros((len(loaded), self.dim), dtype=np.float64)
            weights = np.zeros(len(loaded), dtype=np.float64)
            for idx in self._batches(windows, batch_size):
                s, w = self._forward([windows[i][1] for i in idx])
                for j, i in enumerate(idx):
                    sums[windows[i][0]] += s[j]
                    weights[windows[i][0]] += w[j]
            vecs = np.full((len(loaded), self.dim), np.nan, dtype=np.float32)
            done = weights > 0
            means = sums[done] / weights[done][:, None]
            norms = np.linalg.norm(means, axis=1, keepdims=True)
            vecs[done] = means / np.where(norms > 0, norms, 1.0)
            return vecs

        return encode_in_batches(inputs, dim=self.dim, batch_size=batch_size, load=self._prepare, embed=embed,
                                 label=f"audio:{self.card.name}", num_workers=self.num_workers,
                                 progress=progress)
