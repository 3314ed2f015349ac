"""Positive specs, probability metrics and calibration: known answers and the properties a broken version breaks."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest

from tlrec.errors import UsageError
from tlrec.tables import DataError
from tlrec.training.calibration import Calibrator
from tlrec.training.positive_spec import PositiveSpec
from tlrec.training.probability_metrics import expected_calibration_error, probability_metrics, reliability

ROWS = pl.DataFrame({"user_id": ["a", "a", "b", "b", "c"], "item_id": ["x", "y", "x", "z", "y"],
                     "event": ["rating", "rating", "purchase", "view", "rating"],
                     "value": [4.0, 3.5, 1.0, None, 5.0]})


@pytest.mark.parametrize("spec, expected", [
    ("purchase", [False, False, True, False, False]),
    ("rating>=4", [True, False, False, False, True]),  # value of rating events only
    ("value>0", [True, True, True, False, True]),  # a missing value is negative
    (" rating > 3.5 ", [True, False, False, False, True]),
    ("value==1", [False, False, True, False, False]),
])
def test_positive_spec_labels(spec: str, expected: list[bool]) -> None:
    assert PositiveSpec.parse(spec).labels(ROWS).to_list() == expected


@pytest.mark.parametrize("spec", ["", "rating>=", ">=4", "rating >= four", "a b"])
def test_a_malformed_spec_is_a_one_line_usage_error(spec: str) -> None:
    with pytest.raises(UsageError, match="--positive"):
        PositiveSpec.parse(spec)


@pytest.mark.parametrize("spec, frame, message", [
    ("value>0", ROWS.drop("value"), "column value"),
    ("like", ROWS, "no interaction is positive"),
    ("value>-1", ROWS.drop_nulls(), "every interaction is positive"),
    ("stars>=4", ROWS, "no 'stars' events"),
])
def test_a_spec_the_data_cannot_answer_names_the_file(spec: str, frame: pl.DataFrame, message: str) -> None:
    with pytest.raises(DataError, match=message) as err:
        PositiveSpec.parse(spec).labels(frame, where="data/events.csv")
    assert str(err.value).startswith("events.csv") and "\n" not in str(err.value)


def test_probability_metrics_known_answers() -> None:
    y = np.array([0, 0, 1, 1])
    p = np.array([0.1, 0.6, 0.4, 0.9])
    m = probability_metrics(y, p)
    assert m["roc_auc"] == pytest.approx(0.75)  # 3 of the 4 (positive, negative) pairs ordered right
    assert m["brier"] == pytest.approx((0.01 + 0.36 + 0.36 + 0.01) / 4)
    assert m["log_loss"] == pytest.approx(-(math.log(0.9) + math.log(0.4) + math.log(0.4) + math.log(0.9)) / 4)
    assert m["pr_auc"] == pytest.approx((1 + 2 / 3) / 2)
    assert m["base_rate"] == 0.5


def test_ece_is_zero_when_calibrated_and_the_gap_when_not() -> None:
    y = np.array([1, 0, 0, 0] * 25)  # observed rate 0.25
    assert expected_calibration_error(y, np.full(100, 0.25)) == pytest.approx(0.0)
    assert expected_calibration_error(y, np.full(100, 0.75)) == pytest.approx(0.5)
    r = reliability(y, np.full(100, 0.75), bins=4)
    assert r["count"].tolist() == [0, 0, 100, 0]  # 0.75 sits on the edge of bin [0.5, 0.75]
    assert r["frequency"][2] == pytest.approx(0.25)


def test_metrics_reject_probabilities_out_of_range() -> None:
    with pytest.raises(ValueError, match="within"):
        probability_metrics(np.array([0, 1]), np.array([0.5, 1.5]))


@pytest.mark.parametrize("distort", [lambda z: 3.0 * z - 1.0, lambda z: np.sign(z) * np.abs(z) ** 0.5])
def test_calibration_recovers_the_true_probability(distort) -> None:
    """Outcomes drawn from known probabilities; the model's logits are a monotone distortion of the
    true ones. The calibrated output is within 0.03 of the truth (ECE of the raw scores is far off)."""
    rng = np.random.default_rng(0)
    true_logit = rng.normal(-1.0, 1.5, 40_000)
    p_true = 1 / (1 + np.exp(-true_logit))
    y = (rng.random(len(p_true)) < p_true).astype(float)
    z = distort(true_logit)
    half = len(z) // 2
    cal = Calibrator.choose(z[:half], y[:half])
    p = cal(z[half:])
    assert np.abs(p - p_true[half:]).mean() < 0.03
    assert expected_calibration_error(y[half:], p) < 0.02
    assert set(cal.cv_log_loss) == {"temperature", "isotonic"}


def test_temperature_is_chosen_for_a_linear_distortion_and_round_trips() -> None:
    rng = np.random.default_rng(1)
    z_true = rng.normal(0, 2, 5000)
    y = (rng.random(5000) < 1 / (1 + np.exp(-z_true))).astype(float)
    cal = Calibrator.choose(z_true / 2.0 + 0.5, y)
    assert cal.kind == "temperature"
    assert cal.scale == pytest.approx(2.0, rel=0.1) and cal.shift == pytest.approx(-1.0, abs=0.15)
    again = Calibrator.from_state(cal.state())
    np.testing.assert_allclose(again(np.array([-1.0, 0.0, 2.0])), cal(np.array([-1.0, 0.0, 2.0])))


def test_a_broken_calibrator_state_is_refused() -> None:
    state = Calibrator.fit(np.array([0.0, 1, 2, 3]), np.array([0.0, 0, 1, 1]), "isotonic").state()
    state["knots_x"] = state["knots_x"][::-1].copy()
    with pytest.raises(ValueError, match="not sorted"):
        Calibrator.from_state(state)
    with pytest.raises(ValueError, match="incomplete"):
        Calibrator.from_state({"kind": np.array([0.0])})
    with pytest.raises(ValueError, match="both classes"):
        Calibrator.choose(np.zeros(50), np.zeros(50))


def test_propensity_features_known_answers() -> None:
    from tlrec.training.propensity_features import FEATURES, PRIOR, LabelledHistory, item_neighbours

    # items 0 and 1 are always taken together (co-occurrence cosine 1); item 2 by user 2 alone
    users = np.array([0, 0, 1, 1, 2])
    items = np.array([0, 1, 0, 1, 2])
    labels = np.array([1, 0, 1, 1, 0])
    s = item_neighbours(sp_seen(users, items, 3, 3).T, k=2)
    assert s[1, 0] == pytest.approx(1.0) and s[0, 1] == pytest.approx(1.0) and s[2, 0] == 0 and s[0, 0] == 0
    hist = LabelledHistory(users, items, labels, n_users=3, n_items=3)
    f = dict(zip(FEATURES, hist.features(np.array([0]), np.array([0]), exclude_self=np.array([1]))[0]))
    rate = 3 / 5
    # leave-one-out: user 0 keeps only (0, 1, label 0); item 0 keeps only (1, 0, label 1)
    assert f["user_rate"] == pytest.approx(math.log(((0 + PRIOR * rate) / (1 + PRIOR)) / (1 - (PRIOR * rate) / (1 + PRIOR))), rel=1e-5)
    assert f["user_count"] == pytest.approx(math.log(2))
    # cf: user 0's label on item 1 (the neighbour of 0), centred by user 0's rate 1/2: (0 - 0.5) * 1 / (1 + 1)
    assert f["cf_label"] == pytest.approx(-0.25)
    assert f["content_label"] == 0.0  # no vectors
    # a pair never seen: full statistics, no exclusion
    g = dict(zip(FEATURES, hist.features(np.array([2]), np.array([0]))[0]))
    assert g["user_count"] == pytest.approx(math.log(2)) and g["item_count"] == pytest.approx(math.log(3))


def sp_seen(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int):
    import scipy.sparse as sp

    return sp.csr_matrix((np.ones(len(users)), (users, items)), shape=(n_users, n_items))


def test_isotonic_does_not_answer_zero_beyond_a_small_empty_block() -> None:
    """A few negatives below 2,000 examples at a 30% rate: a logit below them is not "never"."""
    rng = np.random.default_rng(0)
    z = np.concatenate([[-5.0, -4.0], rng.normal(0, 1, 2000)])
    y = np.concatenate([[0.0, 0.0], (rng.random(2000) < 0.3).astype(float)])
    calibrator = Calibrator.fit(z, y, "isotonic")
    low, high = calibrator(np.array([-10.0, 10.0]))
    assert 0.01 < low < 0.3 and high < 1 - 1e-3  # before: 0.0001, the floor
