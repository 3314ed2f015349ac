"""Reduced-precision TextEncoder: int8 stays within cosine 0.99 of fp32, and the guard falls back.

The fall-back cases use a tiny random BERT built here, so they cost well under a second each.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch

import tlrec.embeddings.text as text_mod
from tlrec.embeddings.text import TextEncoder, calibration_texts, probe_sentences

# Sentences unrelated to the probe and calibration sets (catalog-like and conversational).
OTHER_SENTENCES = [
    "A lone gunslinger rides into a dusty frontier town to settle an old score.",
    "Ceramic pour-over coffee dripper, fits most mugs, dishwasher safe.",
    "An upbeat synth-pop track with a catchy chorus and driving bass line.",
    "The committee postponed the vote until next Thursday.",
    "My order arrived two weeks late and the box was crushed.",
    "Marine biologists follow a pod of humpback whales from Hawaii to Alaska.",
    "Kids love this colourful puzzle with chunky wooden pieces.",
    "Where is the nearest train station?",
    "Gluten-free chocolate brownie mix, 500 g",
    "The Last Voyage of the Demeter",
    "Soft wool scarf",
    "Quarterly revenue rose 12% on strong demand for cloud services, the company said on Tuesday.",
    "A haunted lighthouse keeper slowly loses his grip on reality during a winter storm.",
    "Smart thermostat with app control and energy reports, works with voice assistants.",
    "Two rival chefs compete to open the best restaurant in a tiny seaside village, and fall in love.",
    "Remember to water the tomatoes every morning during the heatwave.",
] + [
    " ".join(["This long product description repeats itself to pass the token limit."] * 30),
    " ".join(["A sprawling family saga that spans three generations and two continents,"] * 8),
]


@pytest.fixture(scope="module")
def int8_encoder() -> TextEncoder:
    from tlrec.embeddings.registry import get_encoder

    return get_encoder("minilm-int8")  # the registry's (minilm_int8()), shared with the contract test: built once


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


def test_probe_and_calibration_sets(text_encoder):
    probe, calib = probe_sentences(), calibration_texts()
    assert len(probe) == 64 and len(set(probe)) == 64 and "" in probe
    assert len(calib) == 64 and not set(calib) & set(probe)
    n_tokens = [len(ids) for ids in text_encoder._tokenize(probe)]
    assert min(n_tokens) == 2 and max(n_tokens) == 256  # from [CLS] [SEP] to truncated paragraphs
    assert probe == probe_sentences() and calib == calibration_texts()  # fixed


def test_int8_is_kept_and_card_says_so(int8_encoder, text_encoder):
    enc = int8_encoder
    assert enc.quantized and enc.precision == "int8"
    assert enc.card.name == "minilm-int8" and "int8" in enc.card.version
    assert enc.card.version != text_encoder.card.version
    assert enc.card.dim == 384 and enc.card.params == text_encoder.card.params
    check = enc.quantize_check
    assert check["kept"] and check["min_cosine"] >= 0.99 and check["threshold"] == 0.99
    int8 = [m for m in enc.model.modules() if type(m).__name__ == "Int8Linear"]
    # 6 layers x (query, key, value, attention output, 2 feed-forward); 30 if the down-projections stayed fp32
    assert len(int8) == (36 if check["layers"].startswith("all (") else 30)
    shared = [m for m in int8 if m.group is not None]  # query/key/value scale their common input once
    assert len(shared) == 18 and len({id(m.group) for m in shared}) == 6


def test_int8_within_099_of_fp32_on_probe_and_other_sentences(int8_encoder, text_encoder):
    for texts in (probe_sentences(), OTHER_SENTENCES):
        cos = _cosines(int8_encoder.encode(texts), text_encoder.encode(texts))
        assert cos.min() >= 0.99, (cos.min(), texts[int(cos.argmin())][:60])
    out = int8_encoder.encode(OTHER_SENTENCES)
    assert out.dtype == np.float32 and out.shape == (len(OTHER_SENTENCES), 384)
    np.testing.assert_allclose(np.linalg.norm(out, axis=1), 1.0, atol=1e-5)


def test_int8_keeps_semantics(int8_encoder):
    cat, kitten, stocks = int8_encoder.encode(
        ["A cat sits on the mat", "A kitten rests on a rug", "Stock markets fell sharply today"])
    assert cat @ kitten > cat @ stocks + 0.3


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = tmp_path_factory.mktemp("tiny_bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz", "the", "cat", "dog"]
    (out / "vocab.txt").write_text("\n".join(words) + "\n")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=64)).save_pretrained(out)
    BertTokenizerFast(vocab_file=str(out / "vocab.txt")).save_pretrained(out)
    return out


def test_guard_falls_back_to_fp32_with_a_warning(tiny_bert, monkeypatch, caplog):
    fp32 = TextEncoder(tiny_bert, name="tiny")
    monkeypatch.setattr(text_mod, "QUANTIZE_MIN_COSINE", 1.01)  # unreachable
    with caplog.at_level(logging.WARNING, logger="tlrec.embeddings.text"):
        enc = TextEncoder(tiny_bert, name="tiny", quantize=True)
    assert not enc.quantized and enc.precision == "fp32"
    assert enc.card.name == "tiny" and enc.card.version == fp32.card.version
    assert not enc.quantize_check["kept"] and enc.quantize_check["tried"]
    assert any("int8 rejected" in r.getMessage() and "keeping fp32" in r.getMessage() for r in caplog.records)
    assert not any(type(m).__name__ == "Int8Linear" for m in enc.model.modules())
    np.testing.assert_allclose(enc.encode(["the cat"]), fp32.encode(["the cat"]), atol=1e-6)


def test_tiny_model_int8_passes_with_default_threshold(tiny_bert):
    enc = TextEncoder(tiny_bert, name="tiny", quantize="int8")
    assert enc.quantized and enc.card.name == "tiny-int8"


def test_bf16_needs_native_support(tiny_bert, monkeypatch, caplog):
    monkeypatch.setattr(text_mod, "_cpu_supports", lambda flag: False)
    with caplog.at_level(logging.WARNING, logger="tlrec.embeddings.text"):
        enc = TextEncoder(tiny_bert, name="tiny", quantize="bf16")
    assert enc.precision == "fp32" and enc.card.name == "tiny"
    assert any("no native bfloat16" in r.getMessage() for r in caplog.records)


def test_bad_arguments(tiny_bert):
    with pytest.raises(ValueError, match="quantize must be"):
        TextEncoder(tiny_bert, quantize="int4")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="threads"):
        TextEncoder(tiny_bert, threads=0)


def test_threads_are_set_while_encoding_and_restored(tiny_bert, monkeypatch):
    enc = TextEncoder(tiny_bert, threads=1)
    before = torch.get_num_threads()
    seen = []
    real_forward = enc._forward
    monkeypatch.setattr(enc, "_forward", lambda seqs: (seen.append(torch.get_num_threads()), real_forward(seqs))[1])
    enc.encode(["the cat", "dog"])
    assert seen and set(seen) == {1}
    assert torch.get_num_threads() == before
