"""EarlyStopping: stops after `patience` validations without a gain, keeps and restores the best state."""

from __future__ import annotations

import torch

from tlrec.training.models.early_stopping import EarlyStopping


def run(scores: list[float] | dict[int, float], patience: int = 2, every: int = 1, epochs: int = 100,
        hopeless=None) -> tuple[list[int], EarlyStopping, torch.nn.Linear]:
    net = torch.nn.Linear(1, 1, bias=False)
    stop = EarlyStopping(net, epochs, every, patience, True, "test", progress=False, hopeless=hopeless)
    ran = []
    for epoch in stop:
        ran.append(epoch)
        net.weight.data.fill_(float(epoch))  # the state after `epoch` is recognisable
        if stop.due(epoch):
            stop.record(epoch, scores[epoch] if isinstance(scores, dict) else scores[epoch - 1])
    return ran, stop, net


def test_stops_after_patience_and_restores_the_best_epoch() -> None:
    ran, stop, net = run([0.1, 0.3, 0.2, 0.25, 0.9])
    assert ran == [1, 2, 3, 4]  # 0.2 and 0.25 are no gain over 0.3: patience 2 is spent
    assert stop.restore() == 2
    assert net.weight.item() == 2.0


def test_validates_every_few_epochs_and_after_the_last() -> None:
    ran, stop, _ = run({3: 0.1, 6: 0.2, 7: 0.3}, every=3, epochs=7)
    assert ran == list(range(1, 8))
    assert [e for e in ran if stop.due(e)] == [3, 6, 7]
    assert stop.restore() == 7


def test_a_hopeless_score_stops_from_the_third_validation() -> None:
    ran, stop, _ = run([0.01, 0.02, 0.03, 0.04], patience=5, hopeless=lambda best: best < 0.5)
    assert ran == [1, 2, 3]


def test_without_validation_every_epoch_runs_and_nothing_is_restored() -> None:
    net = torch.nn.Linear(1, 1)
    stop = EarlyStopping(net, 4, 1, 1, False, "test", progress=False)
    assert list(stop) == [1, 2, 3, 4]
    assert not stop.due(4)
    assert stop.restore() == 4
