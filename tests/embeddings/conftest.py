"""Shared fixtures for the embeddings tests: real encoders (offline), media files."""

from __future__ import annotations

import os

# No machine here reaches a model hub: make transformers fail fast instead of retrying.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path  # noqa: E402
from typing import Callable  # noqa: E402

import numpy as np  # noqa: E402
import pytest  # noqa: E402

SR = 16_000


@pytest.fixture(scope="session")
def text_encoder():
    from tlrec.embeddings.registry import get_encoder

    return get_encoder("minilm")


@pytest.fixture(scope="session")
def image_encoder():
    from tlrec.embeddings.registry import get_encoder

    return get_encoder("efficientnet-lite0")


@pytest.fixture(scope="session")
def audio_encoder():
    from tlrec.embeddings.registry import get_encoder

    return get_encoder("crepe-tiny")


@pytest.fixture(scope="session")
def sine() -> Callable[..., np.ndarray]:
    """``sine(freq, sr=16000, seconds=1.0, amp=0.5)`` -> float32 mono samples."""

    def make(freq: float, sr: int = SR, seconds: float = 1.0, amp: float = 0.5) -> np.ndarray:
        t = np.arange(int(sr * seconds)) / sr
        return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)

    return make


@pytest.fixture(scope="session")
def chelsea():
    """The skimage cat photo as an RGB PIL image (451x300)."""
    from PIL import Image
    from skimage import data

    return Image.fromarray(data.chelsea())


def write_wav(path: Path, samples: np.ndarray, sr: int) -> Path:
    """Write float samples in [-1, 1] (``[n]`` or ``[n, ch]``) as 16-bit PCM WAV."""
    from scipy.io import wavfile

    wavfile.write(path, sr, np.clip(samples * 32767, -32768, 32767).astype(np.int16))
    return path


@pytest.fixture(scope="session")
def wav_writer() -> Callable[[Path, np.ndarray, int], Path]:
    return write_wav
