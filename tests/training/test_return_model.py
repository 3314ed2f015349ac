"""Return propensity: the known answer on planted constant-rate customers, no look past the as-of time."""

from __future__ import annotations

import copy

import numpy as np
import pytest
from scipy.special import logsumexp

from tlrec.tables import DataError
from tlrec.training.artifacts import ArtifactError
from tlrec.training.return_model import DAY, EventTimeline, ReturnConfig, ReturnModel, parse_horizon

RATES = np.array([0.01, 0.04, 0.2])  # events per day: three kinds of customers
DAYS, HORIZON_DAYS = 400, 30


def planted(n_users: int = 600, seed: int = 0) -> dict:
    """Customers who buy at a constant rate (a Poisson process) drawn from ``RATES``; items are noise."""
    rng = np.random.default_rng(seed)
    rates = rng.choice(RATES, n_users)
    counts = rng.poisson(rates * DAYS)
    users = np.repeat(np.arange(n_users), counts)
    timestamps = rng.integers(0, DAYS * DAY, len(users))
    return {"rates": rates, "users": users, "timestamps": timestamps, "items": rng.integers(0, 40, len(users)),
            "counts": np.bincount(users, minlength=n_users), "n_users": n_users}


def bayes_probability(counts: np.ndarray) -> np.ndarray:
    """The best possible answer: P(an event in the next 30 days | k events in 400 days), the kind of
    customer unknown (equal priors), the process memoryless."""
    loglik = counts[:, None] * np.log(RATES)[None] - DAYS * RATES[None]
    posterior = np.exp(loglik - logsumexp(loglik, 1, keepdims=True))
    return posterior @ (1 - np.exp(-HORIZON_DAYS * RATES))


@pytest.fixture(scope="module")
def world() -> dict:
    w = planted()
    w["model"] = ReturnModel(ReturnConfig(horizon=HORIZON_DAYS * DAY, progress=False)).fit(
        w["users"], w["timestamps"], w["items"], w["n_users"], 40, None, as_of=DAYS * DAY)
    return w


def test_calibrated_return_probabilities_match_the_bayes_answer(world: dict) -> None:
    p, known, as_of = world["model"].predict(np.arange(world["n_users"]))
    assert (known == (world["counts"] > 0)).all() and (as_of == DAYS * DAY).all()
    best = bayes_probability(world["counts"])
    assert np.abs(p - best)[known].mean() < 0.06
    for rate in RATES:  # each kind of customer on average
        kind = known & (world["rates"] == rate)
        assert abs(p[kind].mean() - best[kind].mean()) < 0.06, rate


def test_a_user_without_events_gets_the_base_rate_and_is_marked_unknown(world: dict) -> None:
    model = world["model"]
    p, known, _ = model.predict(np.array([-1, world["n_users"] + 5]))
    assert not known.any() and np.allclose(p, model.prior) and 0.5 < model.prior < 0.8


def test_fresh_events_count_and_move_the_as_of_time(world: dict) -> None:
    model = world["model"]
    quiet = int(np.argmin(world["counts"] + 1000 * (world["counts"] == 0)))  # the least active known user
    (before,), _, _ = model.predict(np.array([quiet]))
    burst = DAYS * DAY + np.arange(1, 30) * DAY // 2  # 29 events over the 15 days after the as-of time
    (after,), (known,), (as_of,) = model.predict(np.array([quiet]), [(burst, np.zeros(len(burst), np.int64))])
    assert known and as_of == burst.max() and after > before + 0.3


def test_events_after_the_as_of_time_change_nothing() -> None:
    w = planted(200, seed=1)
    cfg = ReturnConfig(horizon=HORIZON_DAYS * DAY, progress=False, epochs=5)
    base = ReturnModel(cfg).fit(w["users"], w["timestamps"], w["items"], w["n_users"], 40, None, as_of=300 * DAY)
    later = w["timestamps"] > 300 * DAY  # move every later event: the labels must not see them
    moved = np.where(later, w["timestamps"] + 7 * DAY, w["timestamps"])
    again = ReturnModel(cfg).fit(w["users"], moved, w["items"], w["n_users"], 40, None, as_of=300 * DAY)
    users = np.arange(w["n_users"])
    assert np.allclose(base.predict(users)[0], again.predict(users)[0])


def test_timeline_features_read_only_events_up_to_the_time() -> None:
    tl = EventTimeline(np.array([0, 0, 0, 1]), np.array([0, 10 * DAY, 40 * DAY, 5 * DAY]), np.zeros(4, np.int64), 2)
    x = np.expm1(tl.features(np.array([0, 1]), 20 * DAY, 10 * DAY))
    assert x[0, 0] == pytest.approx(2) and x[0, 2] == pytest.approx(1.0)  # 2 events by day 20, last 1 horizon ago
    assert x[1, 0] == pytest.approx(1) and x[1, 3] == pytest.approx(1.5)  # tenure 15 days = 1.5 horizons
    assert list(tl.active(4 * DAY)) == [0]


def test_too_short_a_history_is_one_line() -> None:
    w = planted(50)
    with pytest.raises(DataError, match="horizons of history.*--horizon"):
        ReturnModel(ReturnConfig(horizon=200 * DAY, progress=False)).fit(
            w["users"], w["timestamps"], w["items"], w["n_users"], 40)


def test_saved_model_loads_to_the_same_answers_and_a_corrupt_one_is_refused(world: dict, tmp_path) -> None:
    model = world["model"]
    model.save(tmp_path / "m")
    users = np.arange(world["n_users"])
    assert np.allclose(ReturnModel.load(tmp_path / "m").predict(users)[0], model.predict(users)[0])
    weights = tmp_path / "m" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-50])
    with pytest.raises(ArtifactError, match="weights.safetensors"):
        ReturnModel.load(tmp_path / "m")


@pytest.mark.parametrize(("text", "seconds"), [("30d", 30 * DAY), ("12h", 12 * 3600), ("2w", 14 * DAY),
                                               ("1.5d", 36 * 3600)])
def test_parse_horizon(text: str, seconds: int) -> None:
    assert parse_horizon(text) == seconds


@pytest.mark.parametrize("text", ["30", "0d", "-3d", "30 days", ""])
def test_parse_horizon_refuses_what_it_cannot_read(text: str) -> None:
    with pytest.raises(ValueError, match="horizon"):
        parse_horizon(text)


def test_a_per_user_as_of_time_reads_only_the_events_before_it(world: dict) -> None:
    """``predict(at=...)``: each user's answer as of their own time, blind to their later events."""
    model, users = world["model"], np.arange(world["n_users"])
    assert np.array_equal(model.predict(users, at=np.full(len(users), DAYS * DAY))[0], model.predict(users)[0])
    at = np.random.default_rng(5).integers(DAY, DAYS * DAY, len(users))
    p, known, as_of = model.predict(users, at=at)
    blind = copy.copy(model)  # the same model, shown only the events at or before each user's time
    keep = world["timestamps"] <= at[world["users"]]
    blind.timeline = EventTimeline(world["users"][keep], world["timestamps"][keep], world["items"][keep],
                                   world["n_users"])
    p_blind, known_blind, _ = blind.predict(users, at=at)
    assert np.array_equal(as_of, at) and np.array_equal(known, known_blind) and np.allclose(p, p_blind)
    assert not known[np.bincount(world["users"][keep], minlength=len(users)) == 0].any()
