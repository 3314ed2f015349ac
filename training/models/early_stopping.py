"""Early stopping of an epoch-trained net on a validation score (NCF, its new-item tower, sasrec)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

from torch import nn
from tlrec.progress import progress_bar

logger = logging.getLogger(__name__)

__all__ = ["EarlyStopping"]


class EarlyStopping:
    """The epochs of one training run, with the best state on validation kept.

    Iterate over it for the epoch numbers ``1..epochs``; after an epoch, ``due(epoch)`` says
    whether to validate and ``record(epoch, score)`` (higher is better, named ``metric``) keeps ``module``'s state when the score is
    the best so far. Training stops after ``patience`` validations without a gain, or once
    ``hopeless(best)`` (from the third validation on; e.g. ``ValidationSplit.hopeless``: far
    below the best model already compared). ``restore()`` loads the best state back.

    The progress bar counts epochs without a total when validation may stop early (no false
    ETA) and shows the best epoch and the patience left.
    """

    def __init__(self, module: nn.Module, epochs: int, every: int, patience: int, validate: bool,
                 desc: str, progress: bool = True, hopeless: Any = None, metric: str = "val_ndcg@10") -> None:
        self.module, self.epochs, self.every, self.patience = module, epochs, every, patience
        self.metric = metric
        self.validate, self.desc, self.hopeless = validate, desc, hopeless
        self.best_score, self.best_epoch = -1.0, 0
        self.best_state: dict[str, Any] | None = None
        self.bad = 0
        self.stopped = False
        self.postfix: dict[str, str] = {}
        self._bar = progress_bar(total=None if validate else epochs, show=progress, desc=desc, unit="epoch",
                                 leave=False)

    def __iter__(self) -> Iterator[int]:
        try:
            for epoch in range(1, self.epochs + 1):
                yield epoch
                self._bar.set_postfix(self.postfix, refresh=False)
                self._bar.update()
                if self.stopped:
                    return
        finally:
            self._bar.close()

    def due(self, epoch: int) -> bool:
        """Whether to validate after ``epoch`` (every ``every`` epochs and after the last)."""
        return self.validate and (epoch % self.every == 0 or epoch == self.epochs)

    def record(self, epoch: int, score: float) -> None:
        """Note the validation ``score`` after ``epoch``; keep the state if best; decide whether to stop."""
        if score > self.best_score:
            self.best_score, self.best_epoch, self.bad = score, epoch, 0
            self.best_state = {k: v.clone() for k, v in self.module.state_dict().items()}
        else:
            self.bad += 1
        self.postfix.update({self.metric: f"{score:.4f}", "best": f"{self.best_score:.4f}@{self.best_epoch}",
                             "patience": f"{self.patience - self.bad}"})
        if self.bad >= self.patience:
            self.stopped = True
        elif self.hopeless is not None and epoch >= 3 * self.every and self.hopeless(self.best_score):
            logger.info("%s: stopped at epoch %d: %s %.4f is far below the best model's",
                        self.desc, epoch, self.metric, self.best_score)
            self.stopped = True

    def restore(self) -> int:
        """Load the best state into the module (if one was validated); the epoch count kept."""
        if self.best_state is None:
            return self.epochs
        self.module.load_state_dict(self.best_state)
        return self.best_epoch
