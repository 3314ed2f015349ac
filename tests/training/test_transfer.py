"""Measured transfer: interval logic on hand-made numbers, then a small end-to-end run."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tlrec.embeddings.vectors import ItemVectors
from tlrec.training.metrics import bootstrap_diff
from tlrec.training.transfer import (
    ALL,
    NONE,
    GroupResult,
    TransferReport,
    _gains,
    measure_variant,
    render_markdown,
    select_modalities,
    transfer_report,
    variants,
)


def test_bootstrap_interval_brackets_the_mean_and_narrows_with_users():
    rng = np.random.default_rng(0)
    small = rng.normal(0.1, 1.0, 100)
    large = rng.normal(0.1, 1.0, 10_000)
    d_small, lo_s, hi_s = bootstrap_diff(small, np.zeros(100))
    d_large, lo_l, hi_l = bootstrap_diff(large, np.zeros(10_000))
    assert lo_s < d_small < hi_s and lo_l < d_large < hi_l
    assert hi_l - lo_l < (hi_s - lo_s) / 5
    assert lo_l > 0  # a true +0.1 effect over 10k users is resolved


def test_variants_per_modality():
    assert variants(["text"]) == {NONE: [], ALL: ["text"]}
    assert set(variants(["text", "image"])) == {NONE, ALL, "all - text", "all - image"}


def _result(values):
    values = np.asarray(values, float)
    return {g: GroupResult("m", [f"u{i}" for i in range(len(values))], values)
            for g in ("warm", "sparse", "cold items")}


def test_a_modality_whose_removal_helps_is_named_negative():
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 0.2, 400)
    report = TransferReport(["text", "image"])
    report.results = {
        NONE: _result(base),
        ALL: _result(base + 0.05),
        "all - text": _result(base),  # text carries the gain
        "all - image": _result(base + 0.10),  # dropping image is better: image hurts
    }
    _gains(report, ["text", "image"], seed=0)
    assert set(report.negative) == {"image"}
    assert report.keep_modalities() == ["text"]
    plus_text = next(g for g in report.gains if g.variant == "+text" and g.group == "warm")
    assert plus_text.verdict == "positive" and plus_text.diff == pytest.approx(0.05)
    assert "image hurts" in render_markdown(report)


def test_noise_is_no_clear_difference():
    rng = np.random.default_rng(2)
    base = rng.uniform(0, 0.2, 300)
    report = TransferReport(["text"])
    report.results = {NONE: _result(base), ALL: _result(base + rng.normal(0, 0.01, 300))}
    _gains(report, ["text"], seed=0)
    assert report.negative == {} and report.keep_modalities() == ["text"]
    assert {g.verdict for g in report.gains} == {"no clear difference"}


def _world(n_groups=6, items_per_group=40, users_per_group=20, seed=0):
    """Users like one group each; 'text' encodes the group, 'image' is noise."""
    rng = np.random.default_rng(seed)
    n_items = n_groups * items_per_group
    group = np.repeat(np.arange(n_groups), items_per_group)
    rows, t = [], 0
    for u in range(n_groups * users_per_group):
        g = u % n_groups
        for i in rng.permutation(np.flatnonzero(group == g))[:12]:
            t += 1
            rows.append((f"u{u}", f"i{i}", t))
    inter = pl.DataFrame(rows, schema=["user_id", "item_id", "timestamp"], orient="row").with_columns(
        pl.lit("view").alias("event"), pl.lit(1.0).alias("value"))
    text = np.eye(n_groups, dtype=np.float32)[group] + rng.normal(0, 0.05, (n_items, n_groups)).astype(np.float32)
    image = rng.normal(0, 1, (n_items, 6)).astype(np.float32)
    ids = [f"i{i}" for i in range(n_items)]
    vecs = select_modalities(ItemVectors(ids, np.zeros((n_items, 1), np.float32), {"text": text, "image": image},
                                         {"modalities": ["text", "image"]}), ["text", "image"])
    catalog = pl.DataFrame({"item_id": ids, "title": ids})
    return catalog, inter, vecs


def test_transfer_report_end_to_end():
    catalog, inter, vecs = _world()
    calls = []

    def backwards(fn, args):  # the variants are independent: any order (or parallel Ray tasks) gives the report
        calls.extend(args)
        return [fn(*a) for a in args[::-1]][::-1]

    report = transfer_report(catalog, inter, vecs, config={"epochs": 15, "val_fraction": 0.0, "dim": 16, "content_hidden": 32,
                                                            "batch_users": 16, "lr": 1e-2}, run=backwards)
    assert set(report.results) == {NONE, ALL, "all - text", "all - image"}
    alone = measure_variant(*calls[list(report.results).index(ALL)])
    assert all(np.array_equal(alone[g].values, report.results[ALL][g].values) for g in report.groups)
    cold = {name: res["cold items"].mean for name, res in report.results.items()}
    # group-bearing text ranks cold items far above chance; noise alone does not
    assert cold[ALL] > cold[NONE] + 0.2
    assert cold["all - image"] > cold["all - text"] + 0.2
    assert "text" not in report.negative
    md = render_markdown(report)
    assert "| all - image |" in md and "cold items" in md


def test_next_item_transfer_report_measures_content_on_new_item_targets():
    from tlrec.training.transfer_next import next_item_transfer_report

    catalog, inter, vecs = _world()
    report = next_item_transfer_report(catalog, inter, vecs, modalities=["text"], config={
        "epochs": 15, "validation": "none", "dim": 16, "content_hidden": 16, "blocks": 1, "heads": 1,
        "max_len": 12, "batch_users": 32, "lr": 1e-2})
    assert set(report.results) == {NONE, ALL}
    groups = list(report.groups)
    assert groups[0] == "warm" and groups[1].startswith("short histories") and groups[2] == "new-item targets"
    new = {name: res["new-item targets"].mean for name, res in report.results.items()}
    assert new[ALL] > new[NONE] + 0.2  # the group-bearing text places held-out items; ids alone cannot
    md = render_markdown(report, "Next-item transfer")
    assert "new-item targets (hit_rate@10)" in md and "| all |" in md
