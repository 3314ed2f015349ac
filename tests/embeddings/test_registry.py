"""Encoder registry: names, aliases, caching, cards and ``hf:`` models."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tlrec.embeddings.base import Encoder
from tlrec.embeddings.registry import DEFAULTS, get_encoder, list_cards

TINY_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "cat", "dog", "sat", "on", "mat",
              "a", "rug", "stock", "market", "##s", "fell", "."]


def test_defaults():
    assert DEFAULTS == {"text": "minilm", "image": "efficientnet-lite0", "audio": "crepe-tiny"}


def test_unknown_name_lists_allowed_values():
    with pytest.raises(ValueError) as err:
        get_encoder("word2vec")
    message = str(err.value)
    for allowed in ("minilm", "efficientnet-lite0", "crepe-tiny", "crepe-full", "hf:"):
        assert allowed in message
    with pytest.raises(ValueError):
        get_encoder("hf:")


def test_alias_and_cache(text_encoder):
    assert get_encoder("all-MiniLM-L6-v2") is text_encoder
    assert get_encoder("minilm") is text_encoder
    assert isinstance(text_encoder, Encoder)


def test_list_cards_dims():
    from tlrec.embeddings import registry

    registry.clear_cache()
    cards = {c.name: c for c in list_cards()}
    assert registry._get_cached.cache_info().currsize == 0  # read from files: no encoder built (before: 69 s)
    assert {n: (c.modality, c.dim) for n, c in cards.items()} == {
        "minilm": ("text", 384),
        "minilm-int8": ("text", 384),
        "efficientnet-lite0": ("image", 1280),
        "crepe-tiny": ("audio", 256),
        "crepe-full": ("audio", 2048),
    }
    for card in cards.values():
        assert card.params > 0 and card.size_mb > 0 and card.source
        assert bool(card.version) == (card.name != "minilm-int8")  # its int8 layers are chosen when it loads


def _save_tiny_bert(directory: Path) -> int:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    vocab = directory / "vocab.txt"
    vocab.write_text("\n".join(TINY_VOCAB) + "\n")
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    config = BertConfig(vocab_size=len(TINY_VOCAB), hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=37, max_position_embeddings=64)
    model = BertModel(config)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return sum(p.numel() for p in model.parameters())


def test_hf_local_directory(tmp_path):
    n_params = _save_tiny_bert(tmp_path)
    encoder = get_encoder(f"hf:{tmp_path}")
    assert get_encoder(f"hf:{tmp_path}") is encoder
    out = encoder.encode(["the cat sat on the mat", "stock markets fell", "", "a dog"], batch_size=3)
    assert out.shape == (4, 32) and out.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)
    card = encoder.card
    assert card.dim == 32 and card.params == n_params and card.modality == "text"
    assert card.name == f"hf:{tmp_path}" and card.file_format == ".safetensors"
    assert "max_tokens=64" in card.version  # capped at max_position_embeddings


def test_hf_unavailable_model_is_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="no-such-org/no-such-model"):
        get_encoder("hf:no-such-org/no-such-model")
