"""The encoder contract, checked on every built-in registry name: ``encode`` gives float32
``[n, card.dim]`` with unit rows, the same answer twice and batch by batch, a NaN row for an
input it cannot read, and MiniLM a known vector."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from tlrec.embeddings.registry import builtin_names, describe, get_encoder, modality_of

SR = 16_000


def _inputs(modality: str, chelsea, sine) -> list:
    if modality == "text":
        return ["A cat sits on the mat.", "Quarterly tax filing deadline.", "A kitten rests on a rug."]
    if modality == "image":
        return [chelsea, chelsea.rotate(90, expand=True), chelsea.convert("L")]
    return [(sine(220.0), SR), (sine(880.0, seconds=0.5), SR), (sine(440.0, amp=0.2), SR)]


def _unreadable(modality: str, tmp_path) -> object:
    if modality == "text":
        return None
    bad = tmp_path / ("broken.jpg" if modality == "image" else "broken.wav")
    bad.write_bytes(b"not a media file")
    return bad


@pytest.mark.parametrize("name", builtin_names())
def test_encoder_contract(name, chelsea, sine, tmp_path):
    encoder = get_encoder(name)
    modality = modality_of(name)
    assert encoder.card.modality == modality and encoder.card.dim > 0
    described = describe(name)  # what `tlrec encoders list` shows without loading
    if name == "minilm-int8":  # the probe chose its layers at load (or fell back to fp32): the card says which
        described = (describe("minilm") if encoder.card.name == "minilm"
                     else dataclasses.replace(described, version=encoder.card.version))
    assert described == encoder.card
    inputs = _inputs(modality, chelsea, sine)

    vectors = encoder.encode(inputs, batch_size=2)
    assert vectors.dtype == np.float32 and vectors.shape == (len(inputs), encoder.card.dim)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(encoder.encode(inputs, batch_size=2), vectors, atol=1e-6)  # deterministic
    # batching changes nothing (int8 quantises activations with one scale per batch: close, not equal)
    np.testing.assert_allclose(encoder.encode(inputs, batch_size=1), vectors, atol=2e-2 if "int8" in name else 1e-4)
    assert encoder.encode([]).shape == (0, encoder.card.dim)

    bad = _unreadable(modality, tmp_path)
    if bad is not None:
        rows = encoder.encode([inputs[0], bad])
        assert not np.isnan(rows[0]).any() and np.isnan(rows[1]).all()


# all-MiniLM-L6-v2 of "A cat sits on the mat.", first 8 of 384 dims: masked mean pooling + L2, computed
# with plain transformers (AutoModel/AutoTokenizer), as sentence-transformers does.
MINILM_CAT = [0.12654, -0.03285, -0.02906, 0.04441, -0.04345, 0.0321, 0.04811, 0.02768]


def test_minilm_gives_the_known_vector():
    encoder = get_encoder("minilm")
    vector = encoder.encode(["A cat sits on the mat.", "A kitten rests on a rug.", "Quarterly tax filing deadline."])
    np.testing.assert_allclose(vector[0, :8], MINILM_CAT, atol=2e-4)
    similar, unrelated = vector[0] @ vector[1], vector[0] @ vector[2]
    assert similar > 0.5 > 0.2 > unrelated
