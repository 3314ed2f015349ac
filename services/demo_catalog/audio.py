"""Music tracks: 1.5 s of 16 kHz mono audio whose pitch register and timbre carry the topic."""

from __future__ import annotations

import io
import wave
from collections.abc import Callable, Sequence

import numpy as np
from tlrec.services.demo_catalog.constants import AUDIO_DURATION_S, SAMPLE_RATE

_N_SAMPLES = int(round(SAMPLE_RATE * AUDIO_DURATION_S))
_Note = tuple[float, float, float]  # start s, duration s, frequency Hz


def _osc(kind: str, phase: np.ndarray) -> np.ndarray:
    if kind == "sine":
        return np.sin(phase)
    frac = (phase / (2 * np.pi)) % 1.0
    saw = 2.0 * frac - 1.0
    if kind == "saw":
        return saw
    if kind == "square":
        return np.where(frac < 0.5, 1.0, -1.0)
    if kind == "triangle":
        return 2.0 * np.abs(saw) - 1.0
    raise ValueError(f"unknown oscillator {kind!r}; allowed: sine, saw, square, triangle")


def _semi(f0: float, semitones: float) -> float:
    return f0 * 2.0 ** (semitones / 12.0)


def _sequence(starts: np.ndarray, dur: float, freqs: Sequence[float]) -> list[_Note]:
    return [(float(s), dur, float(f)) for s, f in zip(starts, freqs)]


def _notes_low_drone(rng: np.random.Generator) -> tuple[list[_Note], str]:
    return [(0.0, AUDIO_DURATION_S, rng.uniform(65, 90))], "legato"


def _notes_low_pulse(rng: np.random.Generator) -> tuple[list[_Note], str]:
    f0, step = rng.uniform(98, 125), 60.0 / rng.uniform(110, 160) / 2
    starts = np.arange(rng.uniform(0, 0.05), AUDIO_DURATION_S - 0.05, step)
    return _sequence(starts, step * rng.uniform(0.4, 0.6), [f0] * len(starts)), "pluck"


def _notes_walk(rng: np.random.Generator) -> tuple[list[_Note], str]:
    f0, step = rng.uniform(140, 175), 60.0 / rng.uniform(90, 130)
    degrees = np.array([0, 2, 3, 5, 7])
    starts = np.arange(0.0, AUDIO_DURATION_S, step)
    idx = np.clip(np.cumsum(rng.integers(-1, 2, size=len(starts))) + 1, 0, len(degrees) - 1)
    return _sequence(starts, step, [_semi(f0, degrees[i]) for i in idx]), "legato"


def _notes_mid_pulse(rng: np.random.Generator) -> tuple[list[_Note], str]:
    f0, step = rng.uniform(220, 280), rng.uniform(0.09, 0.14)
    starts = np.arange(rng.uniform(0, 0.04), AUDIO_DURATION_S - 0.04, step)
    return _sequence(starts, step * rng.uniform(0.4, 0.6), [f0] * len(starts)), "pluck"


def _notes_melody(rng: np.random.Generator) -> tuple[list[_Note], str]:
    f0 = rng.uniform(330, 400)
    scale = (0, 2, 4, 7, 9)
    notes: list[_Note] = []
    t = 0.0
    while t < AUDIO_DURATION_S:
        dur = rng.uniform(0.2, 0.4)
        notes.append((t, dur, _semi(f0, scale[int(rng.integers(len(scale)))])))
        t += dur
    return notes, "vibrato"


def _notes_trill(rng: np.random.Generator) -> tuple[list[_Note], str]:
    f0, step = rng.uniform(520, 620), rng.uniform(0.05, 0.08)
    upper = _semi(f0, float(rng.choice([1, 2])))
    starts = np.arange(0.0, AUDIO_DURATION_S, step)
    return _sequence(starts, step, [f0 if k % 2 == 0 else upper for k in range(len(starts))]), "legato"


def _notes_arpeggio(rng: np.random.Generator) -> tuple[list[_Note], str]:
    f0, step = rng.uniform(760, 880), rng.uniform(0.08, 0.13)
    pattern = (0, 4, 7, 4) if rng.random() < 0.5 else (0, 4, 7)
    starts = np.arange(0.0, AUDIO_DURATION_S - 0.02, step)
    freqs = [_semi(f0, pattern[k % len(pattern)]) for k in range(len(starts))]
    return _sequence(starts, step * 0.8, freqs), "gate"


def _notes_bells(rng: np.random.Generator) -> tuple[list[_Note], str]:
    f0 = rng.uniform(1350, 1600)
    n = int(rng.integers(3, 7))
    starts = np.sort(rng.uniform(0.0, AUDIO_DURATION_S - 0.2, size=n))
    freqs = [_semi(f0, float(rng.choice([0, -3, 2]))) for _ in range(n)]
    return _sequence(starts, 0.6, freqs), "bell"


# name -> (oscillator, note generator); topics are ordered by rising pitch register.
_TRACK_SPECS: dict[str, tuple[str, Callable[[np.random.Generator], tuple[list[_Note], str]]]] = {
    "low_sine_drone": ("sine", _notes_low_drone),
    "low_square_pulse": ("square", _notes_low_pulse),
    "midlow_triangle_walk": ("triangle", _notes_walk),
    "mid_saw_pulses": ("saw", _notes_mid_pulse),
    "mid_sine_melody": ("sine", _notes_melody),
    "high_saw_trill": ("saw", _notes_trill),
    "high_square_arpeggio": ("square", _notes_arpeggio),
    "high_sine_bells": ("sine", _notes_bells),
}
TRACK_TOPICS: tuple[str, ...] = tuple(f"track:{name}" for name in _TRACK_SPECS)


def render_track(topic: str, rng: np.random.Generator) -> np.ndarray:
    """Synthesise 1.5 s of mono int16 audio at 16 kHz whose pitch and timbre show ``topic``."""
    kind, note_fn = _TRACK_SPECS[topic]
    notes, shape = note_fn(rng)
    n = _N_SAMPLES
    t = np.arange(n) / SAMPLE_RATE
    freq = np.full(n, notes[0][2])
    env = np.zeros(n)
    for start, dur, f in notes:
        s = int(start * SAMPLE_RATE)
        e = min(n, int((start + dur) * SAMPLE_RATE))
        if e <= s:
            continue
        freq[s:e] = f
        tr = np.arange(e - s) / SAMPLE_RATE
        if shape in ("pluck", "bell"):
            tau = 0.25 * dur if shape == "pluck" else rng.uniform(0.15, 0.35)
            seg = np.exp(-tr / tau) * np.minimum(1.0, tr / 0.004)
        else:
            attack = 0.15 if shape == "legato" and dur > 1.0 else 0.01
            seg = np.minimum(1.0, tr / attack) * np.minimum(1.0, (dur - tr) / 0.02)
        env[s:e] = np.maximum(env[s:e], seg)
    if shape == "legato" and len(notes) == 1:  # slow swell of a drone
        env *= 0.75 + 0.25 * np.sin(2 * np.pi * rng.uniform(0.5, 2.0) * t + rng.uniform(0, 2 * np.pi))
    vib_depth = 0.012 if shape == "vibrato" else 0.002
    freq = freq * (1.0 + vib_depth * np.sin(2 * np.pi * rng.uniform(4.5, 6.5) * t))
    phase = 2 * np.pi * np.cumsum(freq) / SAMPLE_RATE + rng.uniform(0, 2 * np.pi)
    signal = _osc(kind, phase) * env
    if shape == "bell":  # a quiet inharmonic partial gives the bell its colour
        signal += 0.2 * np.sin(2.76 * phase) * env
    peak = float(np.max(np.abs(signal))) or 1.0
    signal = signal / peak + rng.normal(0.0, rng.uniform(0.002, 0.01), size=n)
    signal *= rng.uniform(0.5, 0.85)
    return np.clip(np.rint(signal * 32767), -32768, 32767).astype(np.int16)


def wav_bytes(samples: np.ndarray) -> bytes:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(SAMPLE_RATE)
        w.writeframes(samples.astype("<i2").tobytes())
    return buf.getvalue()
