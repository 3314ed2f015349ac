"""The probability models served beside the recommender: propensity and return (issue 15).

``tlrec serve --propensity A --return B`` (or ``TLREC_PROPENSITY_ARTIFACTS`` /
``TLREC_RETURN_ARTIFACTS``) loads them, verified, before the port opens.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from tlrec.serving.settings import Settings
from tlrec.training.propensity_artifact import PropensityArtifact
from tlrec.training.return_artifact import ReturnArtifact

logger = logging.getLogger(__name__)

__all__ = ["ProbabilityModels"]


@dataclass(frozen=True)
class ProbabilityModels:
    """The loaded probability models (None: not served) and their version names."""

    propensity: PropensityArtifact | None = None
    propensity_version: str = ""
    returns: ReturnArtifact | None = None
    return_version: str = ""

    @classmethod
    def load(cls, settings: Settings) -> ProbabilityModels:
        """The models ``settings`` names, each verified; ``ArtifactError`` (one line) on a bad one."""
        found: dict[str, object] = {}
        if settings.propensity_artifacts is not None:
            found["propensity"], found["propensity_version"] = PropensityArtifact.load(settings.propensity_artifacts)
            logger.info("propensity model %s (%s)", found["propensity_version"], found["propensity"].positive.text)
        if settings.return_artifacts is not None:
            found["returns"], found["return_version"] = ReturnArtifact.load(settings.return_artifacts)
            logger.info("return model %s (%g days)", found["return_version"], found["returns"].horizon_days)
        return cls(**found)  # type: ignore[arg-type]
