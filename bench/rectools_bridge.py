"""Bench-only bridge to RecTools' ``SASRecModel``, run in a virtual environment of its own.

RecTools 0.19 pins ``numpy<2`` (and pyarrow 26 needs numpy>=2), so it cannot live in
the project's ``.venv``. :func:`ensure_venv` creates a separate venv on first use
(default ``~/.cache/tlrec/bench-rectools-venv``, or ``$TLREC_RECTOOLS_VENV``) with the
exact versions below, and :func:`run_sasrec` exchanges Parquet files with
``bench/rectools_sasrec.py`` running there.

    from bench.rectools_bridge import run_sasrec
    result = run_sasrec(train, users, k=10, work=Path("/tmp/sasrec"))
    result.recs["42"]  # up to 10 item ids, best first, items seen in train excluded

Nothing here is imported by ``tlrec``; it needs only polars and the standard library.
The first call installs ~1 GB (torch CPU wheel from the local wheel cache, RecTools,
Lightning, pandas, scipy): about a minute here. Later calls check the venv by
importing rectools in it (a few seconds).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

# Installed in this order into the RecTools venv. torch goes first and alone: 2.13.0 is
# the CPU wheel on this machine's disk (any other torch request pulls a CUDA build of
# several GB); the constraints then stop pip from replacing it. pyarrow 26 refuses
# numpy < 2 at import, so 25.0.1 is the newest that works beside RecTools' numpy 1.26.
RECTOOLS_TORCH_REQUIREMENT = "torch==2.13.0"
RECTOOLS_REQUIREMENTS: list[str] = ["rectools[torch]==0.19.0", "pyarrow==25.0.1"]
# `pip freeze` of a working venv (Python 3.11, 2026-12): every version pinned.
RECTOOLS_CONSTRAINTS: list[str] = [
    "aiohappyeyeballs==2.7.1",
    "aiohttp==3.14.5",
    "aiosignal==1.4.0",
    "annotated-types==0.8.0",
    "attrs==23.2.0",
    "fastrlock==0.8.4",
    "filelock==4.3.1",
    "frozenlist==1.8.0",
    "fsspec==2026.9.0",
    "idna==3.20",
    "Jinja2==3.1.6",
    "lightning-utilities==0.15.3",
    "MarkupSafe==3.0.4",
    "mpmath==1.3.0",
    "multidict==7.2.1",
    "networkx==3.6.1",
    "numpy==1.26.4",
    "packaging==26.4",
    "pandas==2.3.3",
    "pm-implicit==0.7.3",
    "propcache==0.5.4",
    "pyarrow==25.0.1",
    "pydantic==2.14.4",
    "pydantic_core==2.50.5",
    "python-dateutil==4.0.0",
    "pytorch-lightning==2.5.2",
    "pytz==2026.6",
    "PyYAML==6.0.4",
    "RecTools==0.19.0",
    "scipy==1.17.1",
    "sympy==1.14.0",
    "threadpoolctl==3.8.0",
    "torch==2.13.0",
    "torchmetrics==1.9.0",
    "tqdm==4.70.1",
    "typeguard==4.6.1",
    "typing-inspection==0.4.5",
    "typing_extensions==4.16.0",
    "tzdata==2026.6",
    "yarl==1.25.1",
]
EXPECTED_VERSIONS: dict[str, str] = {
    "rectools": "0.19.0",
    "torch": "2.13.0",
    "pyarrow": "25.0.1",
}

VENV_ENV_VAR = "TLREC_RECTOOLS_VENV"
DEFAULT_VENV = Path("~/.cache/tlrec/bench-rectools-venv")
RUNNER = Path(__file__).resolve().parent / "rectools_sasrec.py"
DEFAULT_TIMEOUT_S = 4 * 3600.0
_INSTALL_TIMEOUT_S = 3600.0
_MARKER = "tlrec-rectools-bridge.json"

logger = logging.getLogger(__name__)

_CHECK_SCRIPT = (
    "import json, numpy, pyarrow, pytorch_lightning, rectools, torch; "
    "from rectools.models import SASRecModel; "
    "print(json.dumps({'rectools': rectools.__version__, 'torch': torch.__version__, "
    "'pytorch_lightning': pytorch_lightning.__version__, 'numpy': numpy.__version__, "
    "'pyarrow': pyarrow.__version__}))"
)


@dataclass(frozen=True)
class SASRecResult:
    """What one RecTools SASRec run returned.

    recs: every requested user -> up to ``k`` item ids (str), best first, items the
        user has in the training frame excluded; ``[]`` for a user RecTools could not
        serve (absent from train).
    fit_seconds / recommend_seconds: wall time of ``model.fit`` / ``model.recommend``
        measured inside the runner (venv start-up and file I/O excluded).
    settings: every SASRecModel parameter as RecTools reports it (``get_params``),
        plus the runner's ``seed``, ``accelerator`` and ``torch_num_threads``.
    versions: rectools, torch, pytorch_lightning, numpy, python in the RecTools venv.
    info: counts from the runner (interactions, users, ``n_items_train`` against
        ``n_items_model``, the items SASRec can recommend at all).
    """

    recs: dict[str, list[str]]
    fit_seconds: float
    recommend_seconds: float
    settings: dict[str, Any]
    versions: dict[str, str]
    info: dict[str, Any]


def venv_path() -> Path:
    """Where the RecTools venv lives: ``$TLREC_RECTOOLS_VENV`` or ``~/.cache/tlrec/bench-rectools-venv``."""
    raw = os.environ.get(VENV_ENV_VAR) or str(DEFAULT_VENV)
    return Path(raw).expanduser().resolve()


def _venv_python(venv: Path) -> Path:
    return venv / "bin" / "python"


def _clean_env() -> dict[str, str]:
    """The caller's environment without anything that points Python at the project's venv."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP")
    }
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _one_line(text: str, limit: int = 2000) -> str:
    lines = [line.strip() for line in text.strip().splitlines() if line.strip()]
    joined = " | ".join(lines[-15:])
    return joined[-limit:]


def _run(cmd: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    logger.info("running: %s", " ".join(cmd))
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=_clean_env(),
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(
            f"command failed ({proc.returncode}): {' '.join(cmd)}: {_one_line(proc.stderr + proc.stdout)}"
        )
    return proc


def _check(venv: Path) -> dict[str, str] | None:
    """Versions importable in ``venv`` if rectools imports there and matches the pins, else None."""
    python = _venv_python(venv)
    if not python.exists():
        return None
    try:
        proc = subprocess.run(
            [str(python), "-c", _CHECK_SCRIPT],
            capture_output=True,
            text=True,
            timeout=300,
            env=_clean_env(),
            check=False,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if proc.returncode != 0:
        logger.info(
            "RecTools venv at %s does not import rectools: %s",
            venv,
            _one_line(proc.stderr, 300),
        )
        return None
    try:
        versions: dict[str, str] = json.loads(proc.stdout.strip().splitlines()[-1])
    except (json.JSONDecodeError, IndexError):
        return None
    for name, want in EXPECTED_VERSIONS.items():
        if versions.get(name, "").split("+")[0] != want:
            logger.info(
                "RecTools venv at %s has %s %s, want %s",
                venv,
                name,
                versions.get(name),
                want,
            )
            return None
    return versions


def ensure_venv() -> Path:
    """Create the RecTools venv if needed and return its path; idempotent.

    Quick when the venv works (one subprocess importing rectools, a few seconds). Else
    creates it with ``python -m venv`` (``--clear`` if a broken venv is in the way),
    installs ``torch==2.13.0`` alone, then ``RECTOOLS_REQUIREMENTS`` under
    ``RECTOOLS_CONSTRAINTS``, and checks again. Holds a file lock beside the venv so
    concurrent callers install once. Needs PyPI (or the machine's wheel mirror);
    raises RuntimeError if an install step fails.
    """
    venv = venv_path()
    venv.parent.mkdir(parents=True, exist_ok=True)
    lock_path = venv.parent / f".{venv.name}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        versions = _check(venv)
        if versions is not None:
            logger.debug("RecTools venv ok at %s: %s", venv, versions)
            return venv
        start = time.perf_counter()
        logger.info("creating the RecTools venv at %s (one-off, about a minute)", venv)
        python = _venv_python(venv)
        create = [sys.executable, "-m", "venv"]
        if venv.exists() and (venv / "pyvenv.cfg").exists() and not _runs(python):
            create.append("--clear")
        if not _runs(python):
            _run([*create, str(venv)], timeout=600)
        pip = [str(python), "-m", "pip", "install", "--disable-pip-version-check"]
        _run([*pip, RECTOOLS_TORCH_REQUIREMENT], timeout=_INSTALL_TIMEOUT_S)
        constraints = venv / "tlrec-constraints.txt"
        constraints.write_text("\n".join(RECTOOLS_CONSTRAINTS) + "\n")
        _run(
            [*pip, "-c", str(constraints), *RECTOOLS_REQUIREMENTS],
            timeout=_INSTALL_TIMEOUT_S,
        )
        versions = _check(venv)
        if versions is None:
            raise RuntimeError(
                f"RecTools venv at {venv} still does not import rectools {EXPECTED_VERSIONS} after install"
            )
        (venv / _MARKER).write_text(
            json.dumps(
                {
                    "requirements": [
                        RECTOOLS_TORCH_REQUIREMENT,
                        *RECTOOLS_REQUIREMENTS,
                    ],
                    "versions": versions,
                    "seconds": round(time.perf_counter() - start, 1),
                },
                indent=2,
            )
            + "\n"
        )
        logger.info(
            "RecTools venv ready at %s in %.0f s: %s",
            venv,
            time.perf_counter() - start,
            versions,
        )
        return venv


def _runs(python: Path) -> bool:
    if not python.exists():
        return False
    try:
        return (
            subprocess.run(
                [str(python), "-c", "pass"],
                capture_output=True,
                timeout=60,
                check=False,
            ).returncode
            == 0
        )
    except (OSError, subprocess.TimeoutExpired):
        return False


def run_sasrec(
    train: pl.DataFrame,
    users: list[str],
    k: int,
    work: Path,
    settings: dict[str, Any] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> SASRecResult:
    """Fit RecTools SASRec (softmax loss) on ``train`` and recommend top-``k`` for ``users``.

    train: one row per interaction, columns ``user_id`` (str), ``item_id`` (str),
        ``timestamp`` (int Unix seconds, or a polars Date/Datetime), optionally
        ``value`` (float, ignored: every interaction weighs 1). Each user's sequence
        is their rows by timestamp with a stable sort: rows with equal timestamps keep
        the frame's order, so order the frame the way ties should break. Ids are cast
        to str. Only the last ``session_max_len`` (100) events of a user feed the
        model; ~100k interactions take ~40-100 s per epoch on 2 shared cores.
    users: user ids to recommend for; ids absent from ``train`` get ``[]``.
    k: recommendations per user (>= 1). Items the user has in ``train`` are excluded,
        and only items in the model's vocabulary can come out (see ``info``).
    work: directory for ``train.parquet``, ``users.parquet``, ``recs.parquet`` (+ .json)
        and ``runner.log``; created if missing, files overwritten.
    settings: overrides of ``DEFAULT_SETTINGS`` in ``bench/rectools_sasrec.py`` (e.g.
        ``{"epochs": 50}``); unknown keys make the runner fail.
    timeout_s: limit for the runner subprocess (fit + recommend); CPU fits of the
        defaults on ~100k interactions take minutes to tens of minutes on 2 cores.

    Calls :func:`ensure_venv` first. Raises RuntimeError (one line, with the tail of the
    runner's log) if the runner fails or times out.
    """
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    missing = {"user_id", "item_id", "timestamp"} - set(train.columns)
    if missing:
        raise ValueError(f"train lacks columns {sorted(missing)}")
    venv = ensure_venv()
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    train_path, users_path, out_path, log_path = (
        work / "train.parquet",
        work / "users.parquet",
        work / "recs.parquet",
        work / "runner.log",
    )
    timestamp = pl.col("timestamp")
    if train.schema["timestamp"] in (pl.Datetime, pl.Date):
        timestamp = timestamp.dt.epoch("s")
    timestamp = timestamp.cast(pl.Int64)
    columns = [
        pl.col("user_id").cast(pl.Utf8),
        pl.col("item_id").cast(pl.Utf8),
        timestamp,
    ]
    if "value" in train.columns:
        columns.append(pl.col("value").cast(pl.Float64))
    train.select(columns).write_parquet(train_path)
    user_ids = [str(u) for u in users]
    pl.DataFrame({"user_id": user_ids}, schema={"user_id": pl.Utf8}).write_parquet(
        users_path
    )
    for stale in (out_path, Path(str(out_path) + ".json")):
        stale.unlink(missing_ok=True)

    cmd = [
        str(_venv_python(venv)),
        str(RUNNER),
        "--train",
        str(train_path),
        "--users",
        str(users_path),
        "--k",
        str(k),
        "--out",
        str(out_path),
        "--settings",
        json.dumps(settings or {}),
    ]
    logger.info(
        "RecTools SASRec: %d interactions, %d users, k=%d, settings %s",
        train.height,
        len(user_ids),
        k,
        settings or {},
    )
    with open(log_path, "w") as log:
        try:
            proc = subprocess.run(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=timeout_s,
                env=_clean_env(),
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise RuntimeError(
                f"RecTools SASRec runner timed out after {timeout_s:.0f} s: {_one_line(log_path.read_text())}"
            ) from None
    if proc.returncode != 0:
        raise RuntimeError(
            f"RecTools SASRec runner failed ({proc.returncode}): {_one_line(log_path.read_text())}"
        )

    sidecar = json.loads(Path(str(out_path) + ".json").read_text())
    recs: dict[str, list[str]] = {u: [] for u in user_ids}
    frame = pl.read_parquet(out_path).sort(["user_id", "rank"])
    for user, items in (
        frame.group_by("user_id", maintain_order=True)
        .agg(pl.col("item_id"))
        .iter_rows()
    ):
        recs[user] = list(items)
    versions = {
        "rectools": sidecar["rectools_version"],
        "torch": sidecar["torch_version"],
        "pytorch_lightning": sidecar.get("pytorch_lightning_version", ""),
        "numpy": sidecar.get("numpy_version", ""),
        "python": sidecar.get("python_version", ""),
    }
    info = {
        key: value
        for key, value in sidecar.items()
        if key.startswith("n_") or key == "torch_num_threads"
    }
    logger.info(
        "RecTools SASRec: fit %.1f s, recommend %.1f s, %d/%d users served",
        sidecar["fit_seconds"],
        sidecar["recommend_seconds"],
        sidecar.get("n_users_with_recs", 0),
        len(user_ids),
    )
    return SASRecResult(
        recs=recs,
        fit_seconds=float(sidecar["fit_seconds"]),
        recommend_seconds=float(sidecar["recommend_seconds"]),
        settings=sidecar["settings"],
        versions=versions,
        info=info,
    )
