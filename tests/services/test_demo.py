"""`tlrec demo` end to end (small in the default run; full size, with the 1.3x target, under -m slow)."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from tlrec.services.demo import run_demo


def _check_outputs(result) -> dict:
    for path in (result.catalog, result.interactions, result.vectors, result.train, result.test):
        assert path.is_file(), path
    assert (result.out / "images").is_dir() and any((result.out / "images").iterdir())
    assert (result.out / "audio").is_dir() and any((result.out / "audio").iterdir())
    current = (result.artifacts / "current").read_text().strip()
    manifest = json.loads((result.artifacts / current / "manifest.json").read_text())
    evaluation = json.loads((result.out / "evaluation.json").read_text())
    assert manifest["selection"]["choice"] == evaluation["served_model"]  # current = the chosen model
    return evaluation


def test_small_demo_runs_end_to_end(tmp_path):
    console = Console(file=open(tmp_path / "console.txt", "w"), width=120)
    result = run_demo(tmp_path / "demo", n_items=200, n_users=120, seed=3, console=console)
    evaluation = _check_outputs(result)
    assert set(evaluation["metrics"]) == {"popularity", "served"}
    console.file.close()
    text = (tmp_path / "console.txt").read_text()
    assert "ndcg@10" in text and "recent history" in text and "model selection" in text


@pytest.mark.slow
def test_full_demo_served_model_beats_popularity_by_1_3x(tmp_path):
    result = run_demo(tmp_path / "demo", console=Console(file=open(tmp_path / "c.txt", "w")))
    evaluation = _check_outputs(result)
    assert evaluation["ndcg@10_ratio_served_over_popularity"] >= 1.3, evaluation
