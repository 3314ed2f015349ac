"""--finetune-layers: the top encoder layers over cached lower-layer states, trained with NCF."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from tlrec.embeddings.finetune import TextTopLayers, encoder_layers
from tlrec.embeddings.text import TextEncoder

TEXTS = ["Toy Story (1995). Adventure|Animation|Children", "Heat (1995). Action|Crime|Thriller", None,
         "A longer description of a film about a detective in a rainy city " * 3]


@pytest.fixture(scope="module")
def encoder() -> TextEncoder:
    return TextEncoder()


@pytest.mark.parametrize("n_layers", [1, 3])
def test_untrained_top_layers_reproduce_the_encoder(encoder, n_layers):
    tower = TextTopLayers(encoder, TEXTS, n_layers).eval()
    ref = encoder.encode([t or "" for t in TEXTS])
    got = tower.encode_all().numpy()
    assert got.shape == ref.shape
    np.testing.assert_allclose((ref * got).sum(1), 1.0, atol=1e-5)


def test_only_the_top_layers_train_and_the_cache_stays(encoder):
    tower = TextTopLayers(encoder, TEXTS, 1)
    cache = tower.cache.clone()
    out = tower(torch.tensor([0, 1]))
    (out[0] @ out[1]).backward()
    grads = [p.grad for p in tower.parameters()]
    assert grads and all(g is not None for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)
    assert torch.equal(tower.cache, cache)
    assert not any(p.requires_grad for p in tower.buffers())
    # the encoder itself is untouched: its layers are copies
    assert all(p.grad is None for p in encoder.model.parameters())


def test_bad_layer_counts_and_models_are_named(encoder):
    n = len(encoder_layers(encoder.model))
    with pytest.raises(ValueError, match=f"between 1 and {n}"):
        TextTopLayers(encoder, TEXTS, n + 1)
    with pytest.raises(ValueError, match=f"between 1 and {n}"):
        TextTopLayers(encoder, TEXTS, 0)
    with pytest.raises(ValueError, match="BERT-style"):
        encoder_layers(torch.nn.Linear(2, 2))


def test_train_finetunes_the_text_layers(world, tmp_path):
    """`tlrec train --finetune-layers 1`: the text block of the served content moves, serving still works."""
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from tlrec.embeddings.vectors import load_item_vectors
    from tlrec.serving.served_model import ServedModel
    from tlrec.services.cli import app

    out = tmp_path / "artifacts"
    result = CliRunner().invoke(app, [
        "train", "--catalog", str(world.catalog), "--interactions", str(world.train), "--out", str(out),
        "--vectors", str(world.vectors), "--model", "ncf", "--finetune-layers", "1", "--epochs", "2",
        "--set", "val_fraction=0", "--set", "finetune_epochs=1", "--set", "progress=false",
    ])
    assert result.exit_code == 0, result.output
    version = out / (out / "current").read_text().strip()
    config = json.loads((version / "training.json").read_text())["config"]
    assert config["finetune_layers"] == 1
    content = load_file(version / "model" / "weights.safetensors")["content"].numpy()
    vectors = load_item_vectors(world.vectors)
    items = json.loads((version / "items.json").read_text())
    row_of = {item: i for i, item in enumerate(vectors.item_ids)}
    frozen = vectors.fused[[row_of[i] for i in items]]
    cosine = (content * frozen).sum(1)
    assert np.isfinite(content).all()
    np.testing.assert_allclose(np.linalg.norm(content, axis=1), np.linalg.norm(frozen, axis=1), atol=1e-4)
    assert 0.5 < cosine.mean() < 0.99999, cosine.mean()  # moved, but still the pre-trained space
    served = ServedModel.load(out)
    (rec,) = served.recommend_history([items[:3]], 5)
    assert len(rec.item_ids) == 5 and not set(rec.item_ids) & set(items[:3])
