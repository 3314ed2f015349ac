"""The models page: the served version's manifest, validation table, transfer report and encoder comparison.

* **validation table**: the candidates ``tlrec train --model auto`` compared (manifest
  ``selection``), or the one model's own validation NDCG@10 (``validation_ndcg@10``).
* **transfer report**: the manifest's ``transfer`` (``tlrec train --modalities auto`` records it),
  else ``transfer.json`` from the reports folder (``tlrec evaluate --transfer-report --report
  DIR``); its plot is the folder's ``transfer_gains.png``, or drawn from the figures with the
  same function the report uses (``training.transfer.plot_gains``).
* **encoder comparison**: ``encoders_compare.json`` and ``.png`` from the reports folder
  (``tlrec encoders compare --out DIR``).

The reports folder (``TLREC_REPORTS_DIR``, default ``reports/`` beside the artifacts root) is
searched with its direct subfolders; the newest file of each name wins. Only these file
names are read.
"""

from __future__ import annotations

import io
import json
import logging
import math
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tlrec.errors import one_line

logger = logging.getLogger(__name__)

TRANSFER_JSON, TRANSFER_PNG = "transfer.json", "transfer_gains.png"
#: matplotlib's pyplot is not thread-safe: the console draws one plot at a time.
PLOT_LOCK = threading.Lock()
ENCODERS_JSON, ENCODERS_PNG = "encoders_compare.json", "encoders_compare.png"


@dataclass
class Section:
    """One report on the page: its figures (JSON), plot (PNG bytes) and where they came from."""

    data: dict[str, Any] | None = None
    png: bytes | None = None
    source: str | None = None
    note: str | None = None  # why it is missing or incomplete


@dataclass
class ModelReport:
    version: str
    model: str
    task: str
    manifest: dict[str, Any]
    validation: list[dict[str, Any]]
    validation_note: str | None
    transfer: Section = field(default_factory=Section)
    encoders: Section = field(default_factory=Section)


def finite(obj: Any) -> Any:
    """``obj`` with NaN and infinities replaced by None (JSON has neither)."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [finite(v) for v in obj]
    return obj


def validation_table(manifest: dict[str, Any]) -> tuple[list[dict[str, Any]], str | None]:
    """Rows ``{name, validation_ndcg, fit_seconds, note, served}`` and a note when there is no table."""
    selection = manifest.get("selection")
    if isinstance(selection, dict) and isinstance(selection.get("candidates"), list):
        served = selection.get("served_as") or selection.get("choice")
        rows = [{"name": str(c.get("name")), "validation_ndcg": c.get("validation_ndcg"),
                 "fit_seconds": c.get("fit_seconds"), "note": str(c.get("note") or ""),
                 "served": c.get("name") == served}
                for c in selection["candidates"] if isinstance(c, dict)]
        return rows, None
    if "validation_ndcg@10" in manifest:
        return [{"name": str(manifest.get("model")), "validation_ndcg": manifest["validation_ndcg@10"],
                 "fit_seconds": manifest.get("fit_seconds"), "note": "one model trained (no comparison)",
                 "served": True}], None
    return [], "no validation recorded (a model trained without a validation split)"


def find_report(folder: Path | None, name: str) -> Path | None:
    """The newest file called ``name`` in ``folder`` or its direct subfolders (None: none)."""
    if folder is None or not folder.is_dir():
        return None
    found = [p for p in (folder / name, *(d / name for d in folder.iterdir() if d.is_dir())) if p.is_file()]
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def _shown(path: Path, folder: Path | None) -> str:
    """Where a report file is, as the page says it: relative to the reports folder."""
    try:
        return f"reports folder: {path.relative_to(folder)}" if folder is not None else path.name
    except ValueError:
        return path.name


def _read_json(path: Path) -> dict[str, Any]:
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{path.name}: not a JSON object")
    return data


def transfer_plot(data: dict[str, Any]) -> bytes:
    """The transfer report's gains plot (``training.transfer.plot_gains``) drawn from its JSON figures."""
    from tlrec.training.transfer import Gain, TransferReport, plot_gains

    keys = ("variant", "reference", "group", "metric", "diff", "ci_low", "ci_high", "relative")
    gains = [Gain(**{k: (math.nan if g.get(k) is None else g[k]) for k in keys}) for g in data.get("gains", [])]
    groups = {g.group: g.metric for g in gains}
    report = TransferReport(list(data.get("modalities", [])), groups=groups, gains=gains)
    buf = io.BytesIO()
    with PLOT_LOCK:
        plot_gains(report, buf)
    return buf.getvalue()


def _transfer(manifest: dict[str, Any], folder: Path | None) -> Section:
    path = find_report(folder, TRANSFER_JSON)
    try:
        if isinstance(manifest.get("transfer"), dict):
            data, source = manifest["transfer"], "manifest (tlrec train --modalities auto)"
        elif path is not None:
            data, source = _read_json(path), _shown(path, folder)
        else:
            return Section(note=f"none: train with --modalities auto, or put {TRANSFER_JSON} "
                                f"(tlrec evaluate --transfer-report --report DIR) in the reports folder")
        png_path = path.parent / TRANSFER_PNG if path is not None and not isinstance(manifest.get("transfer"), dict) \
            else None
        png = png_path.read_bytes() if png_path is not None and png_path.is_file() else transfer_plot(data)
        return Section(finite(data), png, source)
    except Exception as exc:  # noqa: BLE001 - a bad report file must not break the page
        logger.warning("console: transfer report unreadable: %s", one_line(exc, 300))
        return Section(note=f"unreadable: {one_line(exc, 300)}")


def _encoders(folder: Path | None) -> Section:
    path = find_report(folder, ENCODERS_JSON)
    if path is None:
        return Section(note=f"none: put {ENCODERS_JSON} and .png (tlrec encoders compare --out DIR) in the "
                            "reports folder")
    try:
        png = path.parent / ENCODERS_PNG
        return Section(finite(_read_json(path)), png.read_bytes() if png.is_file() else None, _shown(path, folder))
    except Exception as exc:  # noqa: BLE001
        logger.warning("console: encoder comparison unreadable: %s", one_line(exc, 300))
        return Section(note=f"unreadable: {one_line(exc, 300)}")


def model_report(version: str, manifest: dict[str, Any], reports_dir: Path | None) -> ModelReport:
    """Everything the models page shows for one served version; blocking (reads files, may draw a plot)."""
    rows, note = validation_table(manifest)
    return ModelReport(version, str(manifest.get("model", "?")), str(manifest.get("task", "recommend")),
                       finite(manifest), finite(rows), note, _transfer(manifest, reports_dir), _encoders(reports_dir))
