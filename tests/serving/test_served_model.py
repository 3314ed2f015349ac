"""The served path (FAISS retrieve -> NCF rank -> filter) on a small real demo world."""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest

from tlrec.serving.served_model import ServedModel
from tlrec.training.artifacts import ArtifactError
from tlrec.training.model_artifact import INDEX_FILE
from tlrec.tables import Columns


@pytest.fixture(scope="module")
def served(world):
    return ServedModel.load(world.artifacts)


def _train(world) -> pl.DataFrame:
    return pl.read_parquet(world.train)


def test_loads_current_version(served, world):
    assert served.version == world.ncf_version.name
    assert served.index is not None and served.index.ntotal == len(served.items)


def test_exclude_seen_and_k_items(served, world):
    train = _train(world)
    users = train[Columns.USER].unique().sort().head(20).to_list()
    for rec in served.recommend(users, 10, exclude_seen=True):
        seen = set(train.filter(pl.col(Columns.USER) == rec.user_id)[Columns.ITEM])
        assert len(rec.item_ids) == 10 and rec.source == "model"
        assert not seen & set(rec.item_ids)
        assert rec.ranks == list(range(1, 11))
        assert rec.scores == sorted(rec.scores, reverse=True)


def test_faiss_path_equals_full_model_ranking(served, world):
    """Retrieval through FAISS then ranking gives the model's own served ranking."""
    users = _train(world)[Columns.USER].unique().sort().head(15).to_list()
    idx = served.users.to_internal(users)
    expected, _ = served.model.recommend(idx, 10, exclude=served.seen)
    got = served.recommend(users, 10, exclude_seen=True)
    for row, rec in zip(expected, got):
        assert served.items.to_external(row) == rec.item_ids


def test_unknown_user_gets_popular(served):
    (rec,) = served.recommend(["nobody-here"], 5)
    assert rec.source == "popular" and len(rec.item_ids) == 5
    top = np.argsort(-served.fallback.item_scores, kind="stable")[:5]
    assert rec.item_ids == served.items.to_external(top)


def test_candidates_restrict(served):
    candidates = list(served.items.external[:7])
    for rec in served.recommend(list(served.users.external[:5]) + ["stranger"], 5, candidates=candidates):
        assert set(rec.item_ids) <= set(candidates)


def test_recommend_frame_holds_the_lists_of_recommend(served):
    """Batch scoring's long frame (built from arrays) is ``recommend``'s lists, row for row."""
    users = list(served.users.external[:6]) + ["stranger"]
    candidates = list(served.items.external[:12])
    for k, cands in ((10, None), (5, candidates), (len(served.items) + 5, None)):
        frame, unknown = served.recommend_frame(users, k, True, cands)
        recs = served.recommend(users, k, True, cands)
        assert unknown == 1
        assert frame.columns == [Columns.USER, Columns.ITEM, Columns.SCORE, Columns.RANK]
        assert frame[Columns.USER].to_list() == [r.user_id for r in recs for _ in r.item_ids]
        assert frame[Columns.ITEM].to_list() == [i for r in recs for i in r.item_ids]
        assert frame[Columns.SCORE].to_list() == [s for r in recs for s in r.scores]
        assert frame[Columns.RANK].to_list() == [n for r in recs for n in r.ranks]


def test_cold_items_are_recommendable_through_content(served, world):
    """Items with no training interactions get ranked, and mostly for users whose taste they match."""
    train = _train(world)
    cold = sorted(set(served.items.external) - set(train[Columns.ITEM]))
    assert len(cold) >= 5
    topics = pl.read_parquet(world.root / "truth" / "item_topics.parquet")
    topic_of = dict(zip(topics["item_id"], topics["topic"]))
    tastes = pl.read_parquet(world.root / "truth" / "user_tastes.parquet")
    liked: dict[str, set] = {}
    for u, t in tastes.select("user_id", "topic").iter_rows():
        liked.setdefault(u, set()).add(t)
    users = sorted(set(train[Columns.USER]))
    recs = served.recommend(users, 1, candidates=cold)
    hit = np.mean([topic_of[r.item_ids[0]] in liked[r.user_id] for r in recs])
    # chance: the share of cold items in a user's liked topics
    chance = np.mean([np.mean([topic_of[c] in liked[u] for c in cold]) for u in users])
    assert hit > 2 * chance, (hit, chance)


def test_similar_items(served):
    item = served.items.external[0]
    similar = served.similar_items(item, 5)
    assert len(similar) == 5 and item not in [i for i, _ in similar]


def test_corrupt_artifact_is_refused(world, tmp_path):
    copy = tmp_path / world.ncf_version.name
    shutil.copytree(world.ncf_version, copy)
    data = bytearray((copy / INDEX_FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (copy / INDEX_FILE).write_bytes(bytes(data))
    with pytest.raises(ArtifactError, match="index.faiss"):
        ServedModel.load(copy)
