"""The Python API (``tlrec.train``, ``tlrec.load``): the same jobs and answers as the command and the server."""

from __future__ import annotations

import pytest

import tlrec
from tlrec.serving.served_model import ServedModel


def test_import_is_cheap_and_names_the_api():
    import subprocess
    import sys

    code = "import sys, tlrec; print(any(m.split('.')[0] in ('torch', 'ray', 'faiss') for m in sys.modules))"
    heavy = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert heavy.strip() == "False"
    assert {"train", "load", "embed", "TlrecError"} <= set(tlrec.__all__)


def test_load_answers_as_served_model(tiny_world):
    model = tlrec.load(tiny_world.artifacts)
    direct = ServedModel.load(tiny_world.artifacts)
    assert model.version == direct.version == tiny_world.ncf.name
    users = tiny_world.users[:5] + ["someone-new"]
    got = model.recommend(users, k=5)
    assert [r.item_ids for r in got] == [r.item_ids for r in direct.recommend(users, k=5)]
    assert [r.source for r in got] == ["model"] * 5 + ["popular"]


def test_train_publishes_a_version_that_loads(tiny_world, tmp_path):
    version = tlrec.train(tiny_world.catalog, tiny_world.train, tmp_path / "artifacts", model="popularity")
    assert (tmp_path / "artifacts" / "current").read_text().strip() == version.name
    recs = tlrec.load(tmp_path / "artifacts").recommend_history([["i000", "i004"]], k=3)
    assert len(recs[0].item_ids) == 3 and not {"i000", "i004"} & set(recs[0].item_ids)


def test_expected_failures_are_tlrec_errors(tmp_path):
    with pytest.raises(tlrec.TlrecError, match="no such directory"):
        tlrec.load(tmp_path / "missing")
    with pytest.raises(tlrec.TlrecError, match="unknown model 'nope'"):
        tlrec.train(tmp_path / "c.csv", tmp_path / "i.csv", tmp_path / "a", model="nope")
