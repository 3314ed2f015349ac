"""What the console's routes read besides the models: the catalog, histories, the experiment analyzer, reports.

One ``ConsoleState`` per app (``app.state.console``). The catalog is the file named by
``TLREC_CATALOG`` (``tlrec serve --catalog``), loaded when the app is built so a bad file stops
the start with one line; without it, the catalog the served version was trained on (its
manifest's ``inputs.catalog.path``) is loaded at start-up if that file is still there, and the
console works without titles or media otherwise.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from tlrec.errors import one_line
from tlrec.serving.console.catalog import Catalog
from tlrec.serving.console.experiments import ExperimentAnalyzer
from tlrec.serving.console.histories import Histories
from tlrec.serving.console.reports import ModelReport, find_report, model_report, ENCODERS_JSON, TRANSFER_JSON
from tlrec.serving.event_snapshot import FreshEvents
from tlrec.serving.served_model import ServedModel
from tlrec.serving.settings import Settings

logger = logging.getLogger(__name__)


@dataclass
class ConsoleState:
    settings: Settings
    histories: Histories
    analyzer: ExperimentAnalyzer | None = None
    catalog: Catalog | None = None
    catalog_note: str | None = "not loaded yet"
    _reports: dict[tuple[object, ...], ModelReport] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def create(cls, settings: Settings, fresh: FreshEvents, analyzer: ExperimentAnalyzer | None) -> ConsoleState:
        """The state of a new app; loads ``settings.catalog`` now (``DataError``: one line naming the file)."""
        state = cls(settings, Histories(fresh), analyzer)
        if settings.catalog is not None:
            state.catalog = Catalog.load(settings.catalog)
            state.catalog_note = f"{settings.catalog} (--catalog)"
        return state

    @property
    def titles(self) -> Mapping[str, str] | None:
        """Item id -> title (None without a catalog)."""
        catalog = self.catalog
        return catalog.titles if catalog is not None else None

    def load_training_catalog(self, model: ServedModel) -> None:
        """Without ``--catalog``: load the catalog ``model`` was trained on, if its file is still there; blocking."""
        if self.catalog is not None:
            return
        path = ((model.manifest.get("inputs") or {}).get("catalog") or {}).get("path")
        if not path or not Path(path).is_file():
            self.catalog_note = "no catalog: pass tlrec serve --catalog FILE (the training catalog " \
                                f"{'is not recorded' if not path else f'{path} is gone'})"
            logger.info("console: %s", self.catalog_note)
            return
        try:
            self.catalog = Catalog.load(path)
            self.catalog_note = f"{path} (the catalog {model.version} was trained on)"
        except Exception as exc:  # noqa: BLE001 - the API serves without titles
            self.catalog_note = f"training catalog unreadable: {one_line(exc, 300)}"
            logger.warning("console: %s", self.catalog_note)

    def model_report(self, model: ServedModel) -> ModelReport:
        """The models page of ``model`` (cached per version and report files); blocking."""
        folder = self.settings.resolved_reports_dir
        files = tuple((p, p.stat().st_mtime_ns) for p in (find_report(folder, n) for n in (TRANSFER_JSON, ENCODERS_JSON))
                      if p is not None)
        key = (model.version, files)
        with self._lock:
            cached = self._reports.get(key)
        if cached is None:
            cached = model_report(model.version, model.manifest, folder)
            with self._lock:
                self._reports = {key: cached}  # one entry: the version and files of the last look
        return cached
