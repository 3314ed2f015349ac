"""training/selection.py: the served model is the one that validates best on the user's own data."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from tlrec.errors import ConfigError
from tlrec.tables import Columns
from tlrec.training.id_map import IdMap
from tlrec.training.interaction_data import InteractionData
from tlrec.training.models import BlendModel, ItemKNNModel, PopularityModel
from tlrec.training.models.blend import UNSCORED
from tlrec.training import selection as selection_module
from tlrec.training.selection import (
    BLEND_TOP,
    CANDIDATES,
    Selection,
    candidate_configs,
    learn_blend_weights,
    select_model,
    simplex_grid,
)
from tlrec.training.validation import ValidationSplit

C = Columns
N_GROUPS, GROUP_SIZE = 40, 3
FAST = ("popularity", "itemknn", "ease")
SMALL_NCF = {"ncf.epochs": 3, "ncf.dim": 8, "ncf.content_hidden": 16, "ncf.progress": False}


def _frame(rows: list[tuple[str, str, int]]) -> pl.DataFrame:
    return pl.DataFrame(rows, schema={C.USER: pl.String, C.ITEM: pl.String, C.TIMESTAMP: pl.Int64},
                        orient="row").with_columns(pl.lit("view").alias(C.EVENT), pl.lit(1.0).alias(C.VALUE))


def grouped_data(cold_items: int = 0, n_users: int = 200) -> InteractionData:
    """Items come in groups of 3 that always co-occur: each user takes every item of 3 random
    groups, so the held-out item is the one missing from a group (item-item models find it;
    popularity, nearly uniform here, cannot). ``cold_items`` catalog items have no interaction."""
    rng = np.random.default_rng(0)
    rows = []
    for u in range(n_users):
        for g in rng.choice(N_GROUPS, 3, replace=False):
            for k in range(GROUP_SIZE):
                rows.append((f"u{u:03d}", f"i{g * GROUP_SIZE + k:03d}", int(rng.integers(0, 10**6))))
    items = IdMap([f"i{i:03d}" for i in range(N_GROUPS * GROUP_SIZE + cold_items)])
    return InteractionData.build(_frame(rows), items)


def popular_data(n_users: int = 200, n_items: int = 100) -> InteractionData:
    """Users draw 8 items each from one global (Zipf) popularity: popularity is the only signal."""
    rng = np.random.default_rng(0)
    p = 1.0 / np.arange(1, n_items + 1)
    p /= p.sum()
    rows = [(f"u{u:03d}", f"i{i:03d}", int(rng.integers(0, 10**6)))
            for u in range(n_users) for i in rng.choice(n_items, 8, replace=False, p=p)]
    return InteractionData.build(_frame(rows), IdMap([f"i{i:03d}" for i in range(n_items)]))


def group_vectors(n_items: int) -> np.ndarray:
    """Content: one-hot group (cold items take the groups 0, 1, ...) plus a little noise."""
    group = np.concatenate([np.repeat(np.arange(N_GROUPS), GROUP_SIZE),
                            np.arange(n_items - N_GROUPS * GROUP_SIZE) % N_GROUPS])
    vectors = np.zeros((n_items, N_GROUPS + 2), np.float32)
    vectors[np.arange(n_items), group] = 1.0
    vectors[:, N_GROUPS:] = np.random.default_rng(1).normal(0, 0.05, (n_items, 2))
    return vectors


def _scores(selection: Selection) -> dict[str, float | None]:
    return {c.name: c.validation_ndcg for c in selection.candidates}


def assert_choice_is_the_argmax(selection: Selection) -> None:
    """The choice's validation NDCG is the table's max, up to ``TIE_TOLERANCE`` (relative); among
    single candidates within the tolerance of the best the earliest wins (ties go to the simpler)."""
    tol = float(getattr(selection_module, "TIE_TOLERANCE", 0.0))
    table = [(c.name, c.validation_ndcg) for c in selection.candidates if c.validation_ndcg is not None]
    scores = dict(table)
    assert scores[selection.choice] >= (1 - tol) * max(scores.values()) - 1e-12, selection.table()
    singles = [(name, score) for name, score in table if name != "blend"]
    top = max(score for _, score in singles)
    first = next(name for name, score in singles if score >= (1 - tol) * top - 1e-12)
    if selection.choice == "blend":  # a blend must beat that single candidate by more than the tolerance
        assert scores["blend"] > (1 + tol) * scores[first], selection.table()
    else:
        assert selection.choice == first, selection.table()


@pytest.fixture(scope="module")
def grouped_selection() -> tuple[InteractionData, Selection]:
    data = grouped_data()
    return data, select_model(data, None, candidates=FAST)


@pytest.fixture(scope="module")
def popular_selection() -> tuple[InteractionData, Selection]:
    data = popular_data()
    split = ValidationSplit.of(data, by="random")  # (auto may split by time by chance: ~2.5% false positives)
    return data, select_model(data, None, candidates=FAST, split=split)


# ------------------------------------------------------------------ the choice
def test_item_item_data_picks_an_item_item_model(grouped_selection):
    data, selection = grouped_selection
    assert selection.choice != "popularity"
    scores = _scores(selection)
    assert scores["itemknn"] > 0.9 and scores["popularity"] < 0.2, selection.table()
    assert_choice_is_the_argmax(selection)
    # served: the winner, refit on all of the data (it knows the held-out events too)
    assert selection.model.is_fitted and selection.served_as == selection.model.name
    items = selection.model.recommend(np.arange(data.n_users), 3, exclude=data.seen())[0]
    assert items.shape == (data.n_users, 3) and (items >= 0).all()


def test_popularity_data_choice_is_the_argmax(popular_selection):
    _, selection = popular_selection
    assert_choice_is_the_argmax(selection)
    scores = _scores(selection)
    # popularity carries all the signal: the winner gains nothing worth speaking of over it
    assert scores[selection.choice] - scores["popularity"] < 0.05, selection.table()
    assert selection.split["by"] == "random"


def test_selection_record(grouped_selection):
    data, selection = grouped_selection
    record = selection.to_dict()
    assert record["choice"] == selection.choice and record["served_as"] == selection.model.name
    names = [c["name"] for c in record["candidates"]]
    assert names[: len(FAST)] == list(FAST)
    assert all(isinstance(c["validation_ndcg"], float) for c in record["candidates"])
    assert record["validation"]["by"] in ("time", "random") and record["validation"]["reason"]
    assert record["validation"]["users"] == data.n_users
    if "blend" in names:
        assert record["blend"]["validation_ndcg"] <= record["blend"]["validation_ndcg_in_sample"] + 1e-12
        assert len(record["blend"]["components"]) <= BLEND_TOP
        assert sum(record["blend"]["components"].values()) == pytest.approx(1.0)
    assert "<- served" in selection.table()
    served = ([c.model for c in selection.model.config.components] if isinstance(selection.model, BlendModel)
              else [selection.model.name])
    assert set(served) <= set(selection.tuned)


def test_refit_candidate_is_what_model_name_would_serve():
    data = grouped_data()
    selection = select_model(data, None, candidates=FAST, keep_candidates=True)
    assert set(selection.tuned) == set(FAST)
    # --model NAME's model, from the tuned candidates: refit on all of the data
    knn = selection.refit_candidate("itemknn", data, None)
    direct = ItemKNNModel().fit(data)
    np.testing.assert_allclose(knn.score(np.arange(10)), direct.score(np.arange(10)), rtol=1e-6)


def test_empty_split_serves_popularity_with_a_note():
    data = InteractionData.build(_frame([(f"u{u}", f"i{u % 7:03d}", u) for u in range(30)]),
                                 IdMap([f"i{i:03d}" for i in range(10)]))
    selection = select_model(data, None, candidates=FAST)
    assert selection.choice == "popularity" and isinstance(selection.model, PopularityModel)
    assert selection.model.is_fitted and selection.candidates == []
    assert selection.notes and "popularity" in selection.notes[0]
    assert selection.to_dict()["notes"] == selection.notes


# ------------------------------------------------------------------ --set routing
def test_candidate_configs_routes_settings():
    out = candidate_configs({"epochs": 5})
    assert set(out) == set(CANDIDATES)
    assert {n for n, cfg in out.items() if cfg} == {"ncf", "lightfm"}
    assert out["ncf"] == {"epochs": 5} and out["lightfm"] == {"epochs": 5}

    out = candidate_configs({"ncf.dim": 8, "ease.l2": 50.0})
    assert out["ncf"] == {"dim": 8} and out["ease"] == {"l2": 50.0}
    assert out["lightfm"] == {} and out["itemknn"] == {} and out["popularity"] == {}

    out = candidate_configs({"val_fraction": 0.2}, names=("popularity", "itemknn", "ease"))
    assert out == {"popularity": {}, "itemknn": {}, "ease": {"val_fraction": 0.2}}


def test_candidate_configs_unknown_key_names_it():
    with pytest.raises(ConfigError, match="nonsense"):
        candidate_configs({"nonsense": 1})
    with pytest.raises(ConfigError, match="'bogus' is not a candidate"):
        candidate_configs({"bogus.dim": 8})
    with pytest.raises(ConfigError, match="not a candidate"):  # a model, but not one of these candidates
        candidate_configs({"ncf.dim": 8}, names=("popularity", "itemknn"))


def test_model_choice_check_validates_every_candidate_config():
    from tlrec.training.train import check_model_choice

    assert check_model_choice("auto", {"ncf.dim": 8, "epochs": 2}) is True
    with pytest.raises(ConfigError, match="ncf config: nonsense: unknown key"):
        check_model_choice("auto", {"ncf.nonsense": 1})
    with pytest.raises(ConfigError, match="neighbors"):
        check_model_choice("auto", {"itemknn.neighbors": 0})


# ------------------------------------------------------------------ blend weights
def test_simplex_grid():
    grid = simplex_grid(3)
    assert grid.shape == (66, 3)
    np.testing.assert_allclose(grid.sum(axis=1), 1.0)
    assert (grid >= 0).all() and len({tuple(np.round(r, 6)) for r in grid}) == 66
    np.testing.assert_allclose(grid * 10, np.round(grid * 10))  # multiples of the step
    two = simplex_grid(2)
    assert two.shape == (11, 2) and {tuple(np.round(r, 6)) for r in two} >= {(0.0, 1.0), (1.0, 0.0), (0.5, 0.5)}
    assert simplex_grid(2, step=0.5).shape == (3, 2)


@pytest.mark.parametrize("make", [grouped_data, popular_data])
def test_blend_cross_fitted_score_at_most_in_sample(make):
    data = make()
    split = ValidationSplit.of(data, by="random")
    models = [ItemKNNModel().tune(split), PopularityModel().tune(split)]
    weights, honest, in_sample = learn_blend_weights(split, models, None)
    assert len(weights) == 2 and sum(weights) == pytest.approx(1.0)
    assert any(np.allclose(weights, row) for row in simplex_grid(2))
    assert 0.0 <= honest <= in_sample + 1e-12
    # the in-sample best is at least as good as either model alone (weights 1/0 are on the grid)
    assert in_sample >= max(m.validation_ndcg_ for m in models) - 1e-9


# ------------------------------------------------------------------ new items
def test_winner_without_cold_items_is_served_in_a_blend_routed_to_ncf():
    """Vectors given: NCF scores new items from content, so whatever wins, new items can be recommended."""
    n_cold = 6
    data = grouped_data(cold_items=n_cold)
    vectors = group_vectors(data.n_items)
    selection = select_model(data, vectors, SMALL_NCF, candidates=("popularity", "itemknn", "ncf"))
    assert_choice_is_the_argmax(selection)
    assert selection.choice != "ncf", selection.table()  # 3 epochs of NCF cannot match itemknn here
    model = selection.model
    assert model.name == "blend" and isinstance(model, BlendModel)
    assert model.config.cold_items_from == "ncf" and model.recommends_for_cold_items
    assert "ncf" in [c.model for c in model.config.components]
    if selection.choice != "blend":
        assert selection.notes and "new items" in selection.notes[0]
        weights = {c.model: c.weight for c in model.config.components}
        assert weights == {selection.choice: 1.0, "ncf": 0.0}
    cold = np.arange(data.n_items - n_cold, data.n_items)
    scores = model.score(np.arange(data.n_users))
    assert np.isfinite(scores).all()
    assert (scores[:, cold] > UNSCORED / 2).all()
    # asked to rank only new items, the blend answers with them (finite scores, no padding)
    items, top = model.recommend(np.arange(5), 3, candidates=cold)
    assert set(items.ravel()) <= set(cold) and (items >= 0).all() and np.isfinite(top).all()


def test_no_router_without_vectors_or_ncf():
    """Without a content model among the candidates the winner is served alone (no cold-item blend)."""
    data = grouped_data(cold_items=4)
    selection = select_model(data, group_vectors(data.n_items), candidates=("popularity", "itemknn"))
    assert_choice_is_the_argmax(selection)
    if selection.choice != "blend":
        assert selection.model.name == selection.choice and not selection.notes
    else:
        assert selection.model.config.cold_items_from is None


# ------------------------------------------------------------------ fail fast, fail in one line
def test_finetune_layers_with_auto_fails_fast():
    """Before any embedding work: fine-tuning is an NCF option, not a candidate setting."""
    from tlrec.errors import UsageError
    from tlrec.training.train import check_model_choice

    with pytest.raises(UsageError, match="finetune"):
        check_model_choice("auto", {"finetune_layers": 2})


def test_every_candidate_skipped_is_a_one_line_error():
    from tlrec.errors import ConfigError

    with pytest.raises(ConfigError, match="no candidate could be fitted.*max_items"):
        select_model(grouped_data(), None, {"ease.max_items": 1}, candidates=("ease",))


# ------------------------------------------------------------------ waves: the candidates of a wave are independent
def test_an_iterative_candidate_stops_against_the_closed_form_ones_only():
    """Each wave's candidates see the same bar (the best of the waves before), so a runner may run them in any
    order, or in parallel (`tlrec train --ray-address`): here backwards, with the in-process table."""
    assert selection_module.candidate_waves(CANDIDATES) == [("popularity", "itemknn", "ease"), ("lightfm", "ncf")]
    data = grouped_data(cold_items=4)
    vectors = group_vectors(data.n_items)
    config = {**SMALL_NCF, "lightfm.epochs": 3, "lightfm.num_threads": 1}
    bars: list[list[float]] = []

    def backwards(fn, calls):
        bars.append([call[2].bar for call in calls])
        return [fn(*call) for call in calls[::-1]][::-1]

    ours = select_model(data, vectors, config, split=ValidationSplit.of(data, by="random"))
    theirs = select_model(data, vectors, config, split=ValidationSplit.of(data, by="random"), run=backwards)
    closed_form = max(c.validation_ndcg or 0.0 for c in theirs.candidates[:3])
    assert bars == [[0.0] * 3, [closed_form] * 2]
    assert [(c.name, c.validation_ndcg, c.note) for c in theirs.candidates] == \
        [(c.name, c.validation_ndcg, c.note) for c in ours.candidates]
    assert theirs.choice == ours.choice and theirs.blend == ours.blend
    users = np.arange(data.n_users)
    assert np.array_equal(theirs.model.score(users, None), ours.model.score(users, None))
