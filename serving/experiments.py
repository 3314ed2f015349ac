"""A/B experiments: the YAML definition, the stable-hash assignment and the exposure log.

Pure pieces the API and the offline harness (``services/ab``) share; nothing here
loads a model or touches the network.

* :class:`Experiment` / :class:`Variant`: the experiment file (pydantic, ``extra="forbid"``)::

      name: ranker-v2
      salt: "2026-11"
      traffic: 1.0                  # share of units in the experiment
      start: 2026-11-01             # optional, inclusive (a date is midnight UTC)
      stop: 2026-12-01              # optional, exclusive
      control: control              # optional, default: the first variant
      variants:
        - {name: control, artifact: v1, weight: 0.5}
        - {name: treatment, artifact: v2, weight: 0.5}

  More keys: ``description``, ``click_events`` (default ``[click]``),
  ``conversion_events`` (default ``[purchase, convert]``), ``value_events``
  (default: the conversion events), ``alpha`` (0.05), ``srm_alpha`` (0.001),
  ``sequential_tau`` (0.05: sd of the mSPRT mixture, in units of the metric's sd).
* :func:`assign_variant`: a pure function of (unit id, experiment name, salt) through
  SHA-256 (never Python's ``hash()``), so every process, machine and hash seed agrees.
* The exposure contract: ``EXPOSURE_COLUMNS`` (``user_id, experiment, variant, timestamp``),
  written by ``serving.exposure_log.ExposureLog`` (one line per experiment and unit) and
  read by the offline harness (``services.ab.inputs``).
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import logging
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from tlrec.tables import Columns, DataError

logger = logging.getLogger(__name__)

#: The exposure contract: one record per (experiment, unit), ``timestamp`` in epoch seconds.
EXPERIMENT = "experiment"
VARIANT = "variant"
EXPOSURE_COLUMNS = (Columns.USER, EXPERIMENT, VARIANT, Columns.TIMESTAMP)

__all__ = [
    "Experiment",
    "EXPERIMENT",
    "EXPOSURE_COLUMNS",
    "VARIANT",
    "Variant",
    "assign_variant",
    "assign_many",
    "hash_buckets",
    "load_experiment",
    "parse_experiment",
    "resolve_artifact",
]

_NAME_RE = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$"
_WEIGHT_TOLERANCE = 1e-6


class Variant(BaseModel):
    """One arm: its name, the artifact it serves (version name or path) and its share of the traffic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME_RE)
    artifact: str = Field(min_length=1)
    weight: float = Field(ge=0.0, le=1.0)


def _utc(value: Any) -> Any:
    """Dates -> midnight UTC; naive datetimes -> UTC; anything else passes to pydantic."""
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo is not None else value.replace(tzinfo=_dt.timezone.utc)
    if isinstance(value, _dt.date):
        return _dt.datetime(value.year, value.month, value.day, tzinfo=_dt.timezone.utc)
    return value


class Experiment(BaseModel):
    """An experiment definition (see the module docstring for the YAML keys)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=_NAME_RE)
    salt: str = Field(min_length=1)
    traffic: float = Field(default=1.0, ge=0.0, le=1.0)
    start: _dt.datetime | None = None
    stop: _dt.datetime | None = None
    variants: list[Variant] = Field(min_length=2)
    control: str | None = None
    description: str = ""
    click_events: list[str] = Field(default_factory=lambda: ["click"], min_length=1)
    conversion_events: list[str] = Field(default_factory=lambda: ["purchase", "convert"], min_length=1)
    value_events: list[str] | None = None
    alpha: float = Field(default=0.05, gt=0.0, lt=1.0)
    srm_alpha: float = Field(default=0.001, gt=0.0, lt=1.0)
    sequential_tau: float = Field(default=0.05, gt=0.0)

    @field_validator("salt", mode="before")
    @classmethod
    def _salt_as_text(cls, value: Any) -> Any:
        # YAML reads `salt: 2026` as an int and `salt: 2026-11-01` as a date; both mean their text.
        if isinstance(value, (int, _dt.date)) and not isinstance(value, bool):
            return str(value)
        return value

    @field_validator("start", "stop", mode="before")
    @classmethod
    def _as_utc(cls, value: Any) -> Any:
        return _utc(value)

    @field_validator("variants")
    @classmethod
    def _check_variants(cls, variants: list[Variant]) -> list[Variant]:
        names = [v.name for v in variants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"variant names must be unique, repeated: {', '.join(dupes)}")
        total = math.fsum(v.weight for v in variants)
        if abs(total - 1.0) > _WEIGHT_TOLERANCE:
            raise ValueError(f"variant weights must sum to 1, got {total:g} "
                             f"({', '.join(f'{v.name}={v.weight:g}' for v in variants)})")
        return variants

    @model_validator(mode="after")
    def _check(self) -> Experiment:
        names = [v.name for v in self.variants]
        if self.control is not None and self.control not in names:
            raise ValueError(f"control {self.control!r} is not a variant (variants: {', '.join(names)})")
        if self.start is not None and self.stop is not None and self.stop <= self.start:
            raise ValueError(f"stop ({self.stop.isoformat()}) must be after start ({self.start.isoformat()})")
        # the defaults that depend on other fields, filled in so that the parsed experiment says them
        # (frozen: set once, here, before anyone reads it)
        object.__setattr__(self, "control", self.control_variant)
        object.__setattr__(self, "value_events", self.value_event_names)
        return self

    # ------------------------------------------------------------------ helpers
    @property
    def control_variant(self) -> str:
        """Name of the control arm: ``control`` if set, else the first variant."""
        return self.control or self.variants[0].name

    @property
    def variant_names(self) -> list[str]:
        return [v.name for v in self.variants]

    @property
    def weights(self) -> dict[str, float]:
        return {v.name: v.weight for v in self.variants}

    @property
    def value_event_names(self) -> list[str]:
        """Events whose ``value`` counts towards value per user (default: the conversion events)."""
        return self.value_events if self.value_events is not None else self.conversion_events

    def variant(self, name: str) -> Variant:
        """The variant called ``name``; KeyError naming the allowed ones."""
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(f"unknown variant {name!r} in experiment {self.name!r} "
                       f"(variants: {', '.join(self.variant_names)})")

    def is_active(self, at: _dt.datetime | None = None) -> bool:
        """True if ``at`` (default now, UTC; naive = UTC) is in ``[start, stop)``."""
        at = _utc(at) if at is not None else _dt.datetime.now(_dt.timezone.utc)
        return (self.start is None or at >= self.start) and (self.stop is None or at < self.stop)


# --------------------------------------------------------------------------- loading


def _location(loc: Sequence[Any]) -> str:
    """``variants.1.weight: `` for a key's error; empty for a whole-file rule."""
    return ".".join(str(p) for p in loc) + ": " if loc else ""


def parse_experiment(doc: Any, source: str = "experiment") -> Experiment:
    """Validate a parsed YAML/JSON document; DataError ``"<source>: <key>: <problem>"`` (one line)."""
    if not isinstance(doc, dict):
        kind = "an empty file" if doc is None else f"a {type(doc).__name__}"
        raise DataError(f"{source}: expected a mapping of experiment keys (name, salt, variants ...), got {kind}")
    try:
        return Experiment.model_validate(doc)
    except ValidationError as exc:
        errors = exc.errors()
        first = errors[0]
        msg = str(first["msg"]).removeprefix("Value error, ")
        more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
        where = _location(first["loc"])
        if first["type"] == "extra_forbidden":
            msg = "unknown key"
        raise DataError(f"{source}: {where}{msg}{more}") from None


def load_experiment(path: str | Path) -> Experiment:
    """Read an experiment YAML file (``yaml.safe_load``) and validate it.

    Raises:
        DataError: missing or unreadable file, invalid YAML (names line and
            column), or a key that fails validation (names the key path, e.g.
            ``variants.1.weight``); always one line starting with the file name.
    """
    import yaml

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: experiment file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{path}: cannot read experiment file ({exc})") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise DataError(f"{path}: not valid YAML ({where}{problem})") from None
    return parse_experiment(doc, str(path))


def resolve_artifact(artifact: str, artifacts_root: str | Path | None = None,
                     base_dir: str | Path | None = None) -> Path:
    """The directory a variant's ``artifact`` names.

    Tried in order: ``artifacts_root / artifact`` (a version name such as ``v1``
    or a published ``20261123T130512Z-3f2a``), then ``artifact`` as a path
    (relative paths against ``base_dir``, e.g. the experiment file's folder).

    Raises:
        DataError: none of them is a directory (names what was tried).
    """
    tried: list[Path] = []
    if artifacts_root is not None:
        tried.append(Path(artifacts_root) / artifact)
    as_path = Path(artifact).expanduser()
    if not as_path.is_absolute() and base_dir is not None:
        as_path = Path(base_dir) / as_path
    tried.append(as_path)
    for candidate in tried:
        if candidate.is_dir():
            return candidate
    raise DataError(f"artifact {artifact!r}: not found (tried {', '.join(str(p) for p in tried)})")


# --------------------------------------------------------------------------- assignment

_HASH_SEP = "\x1f"  # unit separator: cannot appear in a name, so (name, salt, unit) -> text is injective
_FLOAT_BITS = 53


def hash_buckets(unit_id: str, experiment: str, salt: str) -> tuple[float, float]:
    """Two independent uniform numbers in ``[0, 1)`` for a unit: (traffic bucket, variant bucket).

    Both come from ``sha256(experiment + US + salt + US + unit_id)`` (UTF-8): the
    first 8 bytes give the traffic bucket, the next 8 the variant bucket, each
    as its top 53 bits over 2**53. Stable across processes, machines, Python
    versions and ``PYTHONHASHSEED``.
    """
    digest = hashlib.sha256(_HASH_SEP.join((experiment, salt, str(unit_id))).encode("utf-8")).digest()
    scale = float(1 << _FLOAT_BITS)
    traffic = (int.from_bytes(digest[0:8], "big") >> (64 - _FLOAT_BITS)) / scale
    variant = (int.from_bytes(digest[8:16], "big") >> (64 - _FLOAT_BITS)) / scale
    return traffic, variant


def _pick(bucket: float, variants: Sequence[Variant]) -> str:
    cumulative = 0.0
    for v in variants:
        cumulative += v.weight
        if bucket < cumulative:
            return v.name
    return next(v.name for v in reversed(variants) if v.weight > 0)  # float rounding at the very top


def assign_variant(unit_id: str, experiment: Experiment) -> str | None:
    """The variant of ``unit_id`` in ``experiment``, or None if the unit is outside its traffic share.

    A pure function of (unit id, experiment name, salt, traffic, weights): the
    unit is in when its traffic bucket is below ``traffic``; its arm comes from
    the variant bucket against the cumulative weights, in file order. The two
    buckets are independent, so raising ``traffic`` only adds units and never
    moves an assigned one to another arm (changing weights or the salt does).
    The time window (``start``/``stop``) is not checked here: see
    :meth:`Experiment.is_active`.
    """
    traffic_bucket, variant_bucket = hash_buckets(unit_id, experiment.name, experiment.salt)
    if traffic_bucket >= experiment.traffic:
        return None
    return _pick(variant_bucket, experiment.variants)


def assign_many(unit_ids: Iterable[str], experiment: Experiment) -> list[str | None]:
    """:func:`assign_variant` for each id, in order (about 2 µs per id)."""
    return [assign_variant(u, experiment) for u in unit_ids]
