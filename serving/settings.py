"""Settings of the HTTP service, read from the environment (prefix ``TLREC_``) by pydantic-settings.

Every field is an environment variable named ``TLREC_<FIELD>`` (e.g. ``TLREC_API_KEYS``);
``tlrec serve`` passes its options (``--artifacts``, ``--insecure``, ``--threads``,
``--experiment``, ``--catalog`` ...) as overrides. Keys never come from the command line,
so they do not show up in ``ps``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from tlrec.errors import ConfigError

MIB = 1 << 20
#: The exposure log's name in the events folder (unless ``TLREC_EXPOSURES_FILE`` says otherwise).
EXPOSURES_FILE = "exposures.jsonl"


class InsecureConfigError(ConfigError):
    """No API key is set and ``insecure`` was not asked for: the server refuses to start."""


def available_cores() -> int:
    """CPUs this process may run on (``sched_getaffinity``: respects taskset and cpusets)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)


def model_threads_default() -> int:
    """Model calls run at once by default: the cores this process may use but one, at least one.

    The event loop (HTTP parsing, routing, validation, responses) needs a core of its own: with
    as many model threads as cores they take turns with it. On 2 cores one model thread serves
    as many requests at 16 connections as two, with a p99 about a quarter lower
    (``bench/results/api_wrk.md``, ``bench/api_wrk.py --threads 1,2``).
    """
    return max(1, available_cores() - 1)


class Settings(BaseSettings):
    """Configuration of ``tlrec serve`` (see README, "Serving")."""

    model_config = SettingsConfigDict(env_prefix="TLREC_", extra="ignore", frozen=True)

    artifacts: Path | None = Field(
        default=None, description="Artifacts root (with `current`) or one version directory."
    )
    propensity_artifacts: Path | None = Field(
        default=None, description="A `--task propensity` artifacts root: serves POST /v1/users/{id}/propensity."
    )
    return_artifacts: Path | None = Field(
        default=None, description="A `--task return` artifacts root: serves GET /v1/users/{id}/return."
    )
    catalog: Path | None = Field(
        default=None, description="Catalog file the web console and the answers' titles read (`--catalog`); "
        "default: the catalog the served version was trained on, if that file is still there.",
    )
    reports_dir: Path | None = Field(
        default=None, description="Folder of report files the console's models page shows (transfer.json, "
        "encoders_compare.json and their PNGs); default: `reports/` beside the artifacts root.",
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        default_factory=list, description="Comma-separated keys accepted in X-API-Key for /v1 routes."
    )
    admin_key: SecretStr | None = Field(default=None, description="Key for /v1/admin routes (also valid for /v1).")
    insecure: bool = Field(default=False, description="Serve without keys (local experiments only).")
    events_dir: Path | None = Field(
        default=None, description="Event log folder; default: `events/` beside the artifacts root."
    )
    max_body_bytes: int = Field(default=MIB, ge=1024, description="Larger request bodies get 413.")
    max_header_bytes: int = Field(
        default=16 * 1024, ge=1024, le=MIB,
        description="Request line + headers over this get 431 and the connection is closed (`tlrec serve`): "
        "the server stops reading at the limit.",
    )
    deadline_ms: int = Field(default=1000, ge=10, le=60_000, description="Model work past this falls back.")
    threads: int = Field(
        default_factory=model_threads_default, ge=1, le=256,
        description="Model calls run at once, one thread each (default: the cores given but one, for the event "
        "loop; at least 1).",
    )
    intra_op_threads: int = Field(
        default=1, ge=1, le=256, description="torch/FAISS threads inside one model call (1: calls run side by side)."
    )
    max_batch: int = Field(default=32, ge=1, le=1024, description="Most requests merged into one model call.")
    fresh_per_user: int = Field(default=200, ge=1, le=10_000, description="Fresh events kept per user.")
    fresh_max_users: int = Field(default=100_000, ge=1, description="Users with fresh events kept (LRU).")
    history_half_life_days: float = Field(
        default=0.0, ge=0.0, description="POST /v1/recommendations: recency half-life of timestamped items (0: off)."
    )
    experiments: Annotated[list[Path], NoDecode] = Field(
        default_factory=list,
        description="A/B experiment YAML files, comma-separated (`tlrec serve --experiment FILE`, repeatable); "
        "each variant's model is loaded at start and on reload.",
    )
    exposures_file: Path | None = Field(
        default=None, description="Exposure log (JSON lines); default: `exposures.jsonl` in the events folder."
    )
    exposure_wait_ms: int = Field(
        default=1000, ge=0, le=60_000,
        description="Longest an answer waits for its exposure to be fsynced (0: answer at once, write behind).",
    )

    @field_validator("api_keys", "experiments", mode="before")
    @classmethod
    def _split_commas(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("admin_key", mode="before")
    @classmethod
    def _empty_admin_key(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @property
    def artifacts_root(self) -> Path:
        """The folder holding versions and ``current`` (the parent of a version directory)."""
        if self.artifacts is None:
            raise ValueError("no artifacts set (--artifacts or TLREC_ARTIFACTS)")
        path = Path(self.artifacts)
        return path.parent if (path / "manifest.json").is_file() else path

    @property
    def resolved_events_dir(self) -> Path:
        """``events_dir``, or ``events/`` beside the artifacts root (``demo_out/artifacts`` -> ``demo_out/events``)."""
        return Path(self.events_dir) if self.events_dir is not None else self.artifacts_root.parent / "events"

    @property
    def resolved_reports_dir(self) -> Path:
        """``reports_dir``, or ``reports/`` beside the artifacts root (``demo_out/artifacts`` -> ``demo_out/reports``)."""
        return Path(self.reports_dir) if self.reports_dir is not None else self.artifacts_root.parent / "reports"

    @property
    def resolved_exposures_file(self) -> Path:
        """``exposures_file``, or ``exposures.jsonl`` in the events folder."""
        if self.exposures_file is not None:
            return Path(self.exposures_file)
        return self.resolved_events_dir / EXPOSURES_FILE

    @property
    def has_keys(self) -> bool:
        return bool(self.api_keys) or self.admin_key is not None

    def check_secure(self) -> None:
        """Raise ``InsecureConfigError`` when no key is set and ``insecure`` is off."""
        if not self.has_keys and not self.insecure:
            raise InsecureConfigError(
                "no API keys set: refusing to start; set TLREC_API_KEYS (comma-separated) and "
                "TLREC_ADMIN_KEY, or pass --insecure to serve without authentication"
            )
