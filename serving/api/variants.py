"""The models in service: the default version plus every A/B variant's, swapped as one object.

A :class:`ModelSet` is immutable: start-up builds one, a reload builds a new one and swaps a
single reference, so a request that read the set answers from it to the end, and a
reload that cannot load every model changes nothing (all or nothing).

Routing a user (:meth:`ModelSet.route`): experiments in the order of their files; the
first that is active now (``[start, stop)``) and takes the user (its traffic share,
:func:`serving.experiments.assign_variant`) answers with the user's variant's model.
Everybody else gets the default model (``ARTIFACTS/current``). With no experiments this
costs one attribute test per request; with some, one SHA-256 per active experiment
(about 1 µs each). A user in two overlapping experiments is answered (and exposed) by
the first one only: the second does not see that user, which shrinks its sample but keeps
its arms comparable (the first experiment's hash is independent of the second's).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tlrec.errors import UsageError
from tlrec.serving.experiments import Experiment, assign_variant, load_experiment, resolve_artifact
from tlrec.serving.served_model import ServedModel
from tlrec.serving.settings import Settings
from tlrec.training.artifacts import ArtifactError, resolve_version
from tlrec.tables import DataError

logger = logging.getLogger(__name__)

Loader = Callable[[Path], ServedModel]  # version dir -> loaded (and maybe warmed) model; blocking


@dataclass(frozen=True)
class Arm:
    """One variant in service: the experiment's and variant's names and the model that answers."""

    experiment: str
    variant: str
    model: ServedModel


@dataclass(frozen=True)
class LiveExperiment:
    """An experiment with its arms loaded; ``start``/``stop`` as epoch seconds (±inf when open)."""

    experiment: Experiment
    source: Path
    arms: Mapping[str, Arm]
    start: float = -math.inf
    stop: float = math.inf

    def arm_for(self, user_id: str, now: float) -> Arm | None:
        """The user's arm if the experiment is active at ``now`` and takes the user; else None."""
        if not self.start <= now < self.stop:
            return None
        variant = assign_variant(user_id, self.experiment)
        return None if variant is None else self.arms[variant]


@dataclass(frozen=True)
class ModelSet:
    """Default model, live experiments, and every loaded model by its (resolved) version dir."""

    default: ServedModel
    default_path: Path
    experiments: tuple[LiveExperiment, ...] = ()
    loaded: Mapping[Path, ServedModel] = field(default_factory=dict)

    def route(self, user_id: str, now: float | None = None) -> Arm | None:
        """The arm that answers ``user_id`` (first active experiment that takes the user), or None: default."""
        if not self.experiments:
            return None
        now = time.time() if now is None else now
        for live in self.experiments:
            arm = live.arm_for(user_id, now)
            if arm is not None:
                return arm
        return None

    @property
    def arms(self) -> list[Arm]:
        """Every arm of every experiment, in file and variant order."""
        return [arm for live in self.experiments for arm in live.arms.values()]

    @property
    def models(self) -> list[ServedModel]:
        """Each distinct loaded model once (variants may share a version with each other or the default)."""
        return list({id(m): m for m in self.loaded.values()}.values())

    def signature(self) -> tuple:
        """Equal for two sets that serve the same versions under the same experiment definitions."""
        paths = {id(m): p for p, m in self.loaded.items()}
        return (self.default_path, tuple(
            (live.experiment.model_dump_json(), tuple((a.variant, paths[id(a.model)]) for a in live.arms.values()))
            for live in self.experiments
        ))

    def variant_labels(self) -> set[tuple[str, str, str]]:
        """``(experiment, variant, model version)`` of every arm (for ``tlrec_variant_info``)."""
        return {(a.experiment, a.variant, a.model.version) for a in self.arms}


# ---------------------------------------------------------------------------- loading (blocking)
def read_experiments(paths: Sequence[Path]) -> list[tuple[Path, Experiment]]:
    """Parse every experiment file; DataError (one line, naming the file) for a bad one or a repeated name."""
    found: dict[str, Path] = {}
    out = []
    for path in paths:
        exp = load_experiment(path)
        if exp.name in found:
            raise DataError(f"{path}: experiment {exp.name!r} is also defined in {found[exp.name]}; "
                            "experiment names must be unique")
        found[exp.name] = path
        out.append((Path(path), exp))
    return out


def _epoch(value: object, default: float) -> float:
    return default if value is None else value.timestamp()  # type: ignore[attr-defined]


def load_model_set(
    settings: Settings,
    load: Loader = ServedModel.load,
    reuse: Mapping[Path, ServedModel] | None = None,
) -> ModelSet:
    """Load the default version and every variant of ``settings.experiments``; blocking (run it in a thread).

    Variant ``artifact`` names resolve with :func:`serving.experiments.resolve_artifact`
    against the artifacts root, then as paths relative to the experiment file. A version
    dir already in ``reuse`` (the set in service: published versions never change) is not
    loaded again; each other one is loaded once (``load``: checksums verified), however
    many variants name it. Raises ``DataError`` / ``ArtifactError`` (one line naming the
    file, experiment and variant) if any experiment or model cannot be served: nothing
    is half-built.
    """
    if settings.artifacts is None:
        raise UsageError("no artifacts set (--artifacts or TLREC_ARTIFACTS)")
    loaded: dict[Path, ServedModel] = {}
    reuse = reuse or {}

    def get(version_dir: Path, what: str | None) -> ServedModel:
        key = version_dir.resolve()
        if key not in loaded:
            if key in reuse:
                loaded[key] = reuse[key]
            elif what is None:
                loaded[key] = load(key)
            else:
                try:
                    loaded[key] = load(key)
                except (ArtifactError, DataError) as exc:
                    raise type(exc)(f"{what}: {exc}") from None
        return loaded[key]

    default_path = resolve_version(Path(settings.artifacts)).resolve()
    default = get(default_path, None)  # its errors read as before experiments existed
    root = settings.artifacts_root
    experiments = []
    for source, exp in read_experiments(settings.experiments):
        arms = {}
        for i, v in enumerate(exp.variants):
            what = f"{source}: experiment {exp.name!r} variant {v.name!r}"
            try:
                version_dir = resolve_version(resolve_artifact(v.artifact, root, source.resolve().parent))
            except (ArtifactError, DataError) as exc:
                raise DataError(f"{source}: variants.{i}.artifact: {exc}") from None
            arms[v.name] = Arm(exp.name, v.name, get(version_dir, what))
        experiments.append(LiveExperiment(exp, source, arms, _epoch(exp.start, -math.inf), _epoch(exp.stop, math.inf)))
        logger.info("experiment %s (%s): %s; traffic %g", exp.name, source,
                    ", ".join(f"{a.variant}={a.model.version}" for a in arms.values()), exp.traffic)
    return ModelSet(default, default_path, tuple(experiments), loaded)
