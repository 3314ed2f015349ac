"""`tlrec encoders list` and `tlrec encoders compare` (services/cli_encoders.py, services/encoders.py).

compare runs on a tiny demo world: the films of generate_demo(n_items=120) (their
descriptions carry their topic in text), with each user's film events on their
favourite topics (from the demo's ground truth), so a text encoder that
understands the descriptions finds the cold film of the user's topic. It is
pitted against a tiny random BERT saved in tmp_path, which knows nothing.
"""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
import torch
from typer.testing import CliRunner

from tlrec.services.cli_encoders import encoders_app
from tlrec.services.demo_catalog import generate_demo
from tlrec.embeddings.catalog_inputs import encoder_inputs
from tlrec.services.encoders import compare_encoders, default_encoders
from tlrec.training.data import load_catalog

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory):
    return generate_demo(tmp_path_factory.mktemp("demo"), n_items=120, n_users=60, seed=0, progress=False)


@pytest.fixture(scope="module")
def films(demo, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(catalog of the films, their interactions on each user's favourite topics)."""
    root = tmp_path_factory.mktemp("films")
    catalog = pl.read_parquet(demo.catalog)
    truth = demo.catalog.parent / "truth"
    topics = pl.read_parquet(truth / "item_topics.parquet")
    tastes = pl.read_parquet(truth / "user_tastes.parquet")
    inter = pl.read_parquet(demo.interactions)
    fav = (inter.join(topics, on="item_id").filter(pl.col("domain") == "film")
           .join(tastes, on=["user_id", "topic"], how="semi").select(inter.columns))
    catalog.filter(pl.col("domain") == "film").write_parquet(root / "films.parquet")
    fav.write_parquet(root / "interactions.parquet")
    return root / "films.parquet", root / "interactions.parquet"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A randomly initialised 2-layer BERT with a 31-token vocabulary (knows nothing)."""
    from transformers import BertConfig, BertModel, BertTokenizerFast

    out = tmp_path_factory.mktemp("tiny_bert")
    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"abcdefghijklmnopqrstuvwxyz"]
    (out / "vocab.txt").write_text("\n".join(words) + "\n")
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(words), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=64, max_position_embeddings=512)).save_pretrained(out)
    BertTokenizerFast(vocab_file=str(out / "vocab.txt")).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def compared(films, tiny_bert, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("report")
    catalog, interactions = films
    result = runner.invoke(encoders_app, [
        "compare", "--catalog", str(catalog), "--interactions", str(interactions),
        "--encoders", f"minilm,hf:{tiny_bert}", "--out", str(out), "--k", "3"])
    return result, out


def test_list_shows_cards():
    result = runner.invoke(encoders_app, ["list"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    for name, dim in (("minilm", "384"), ("efficientnet-lite0", "1280"), ("crepe-tiny", "256")):
        row = next((ln for ln in lines if f" {name} " in ln), None)
        assert row is not None, (name, result.output)
        assert f" {dim} " in row
    assert "safetensors" in result.output and "pytorch" in result.output


def test_compare_writes_one_row_per_encoder(compared, tiny_bert):
    result, out = compared
    assert result.exit_code == 0, result.output
    report = json.loads((out / "encoders_compare.json").read_text())
    rows = report["results"]
    assert [r["encoder"] for r in rows] == ["minilm", f"hf:{tiny_bert}"]
    for r in rows:
        assert r["items_per_s"] > 0 and r["params"] > 0 and r["size_mb"] > 0
        assert 0.0 <= r["recall"] <= 1.0 and 0.0 <= r["ndcg"] <= 1.0
        assert r["modality"] == "text" and r["coverage"] == 1.0 and r["items_with_input"] == 48
    assert rows[0]["dim"] == 384 and rows[1]["dim"] == 32
    assert report["k"] == 3 and report["n_cold_items"] >= 5 and report["n_test_users"] > 0
    md = (out / "encoders_compare.md").read_text()
    assert sum(ln.startswith("| minilm ") for ln in md.splitlines()) == 1
    assert sum(ln.startswith(f"| hf:{tiny_bert} ") for ln in md.splitlines()) == 1
    png = (out / "encoders_compare.png").read_bytes()
    assert png.startswith(PNG_MAGIC) and len(png) > 5000
    assert "minilm" in result.output and "recall@3" in result.output  # the printed table


def test_minilm_beats_a_random_tiny_bert_on_films(compared):
    _, out = compared
    report = json.loads((out / "encoders_compare.json").read_text())
    minilm, tiny = report["results"]
    assert minilm["recall"] > tiny["recall"] + 0.2, (minilm["recall"], tiny["recall"])
    assert minilm["recall"] > report["random_recall"] + 0.2
    assert minilm["ndcg"] > tiny["ndcg"]


def test_default_encoders_follow_the_catalog(demo, films):
    full = load_catalog(demo.catalog)
    assert default_encoders(full) == ["minilm", "efficientnet-lite0", "crepe-tiny"]
    assert default_encoders(load_catalog(films[0])) == ["minilm"]
    texts = encoder_inputs(full, "text", None)
    assert all(isinstance(t, str) and ". " in t for t in texts)
    images = encoder_inputs(full, "image", None)
    assert sum(p is not None for p in images) == 36 and all(p is None or Path(p).is_absolute() for p in images)


def test_compare_bad_input_is_one_line(films, tmp_path):
    catalog, interactions = films
    result = runner.invoke(encoders_app, ["compare", "--catalog", str(catalog), "--interactions",
                                          str(interactions), "--encoders", "bert9000", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "unknown encoder 'bert9000'" in result.output and "minilm" in result.output
    with pytest.raises(ValueError, match="no item of films.parquet has audio input"):
        compare_encoders(catalog, interactions, ["crepe-tiny"])
    missing = runner.invoke(encoders_app, ["compare", "--catalog", str(tmp_path / "nope.csv"),
                                           "--interactions", str(interactions)])
    assert missing.exit_code == 2 and "nope.csv" in missing.output
    assert not list(tmp_path.glob("encoders_compare.*"))


def test_compare_reuses_embedded_vectors_and_keeps_each_result_as_it_comes(compared, films, tiny_bert, tmp_path):
    """Issue 16, item 3: vectors from `tlrec embed` are not computed again, and a stopped run keeps its rows."""
    from tlrec.embeddings.embed_catalog import embed_catalog
    from tlrec.services.encoders import write_report

    catalog, interactions = films
    vectors = embed_catalog(load_catalog(catalog), tmp_path / "vectors.parquet", image=None, audio=None,
                            progress=False)
    written: list[int] = []

    def keep_then_stop(so_far) -> None:
        write_report(so_far, tmp_path / "report")
        written.append(len(so_far.results))
        raise KeyboardInterrupt  # the user stops the run after the first encoder

    with pytest.raises(KeyboardInterrupt):
        compare_encoders(catalog, interactions, ["minilm", f"hf:{tiny_bert}"], k=3, vectors_path=vectors,
                         on_result=keep_then_stop)
    kept = json.loads((tmp_path / "report" / "encoders_compare.json").read_text())["results"]
    assert written == [1] and [r["encoder"] for r in kept] == ["minilm"]
    assert kept[0]["items_reused"] == kept[0]["items_with_input"] == 48  # nothing encoded again
    full = json.loads((compared[1] / "encoders_compare.json").read_text())["results"][0]
    assert kept[0]["recall"] == pytest.approx(full["recall"], abs=1e-6)  # reused vectors: the same answer
    assert kept[0]["items_per_s"] > 0  # timed on a sample
