"""The catalog behind the console and the answers' titles: items by id, title search, media files.

Media are served safely: only the files the catalog names (never a path from a request),
only when the file resolves (symlinks followed) inside the catalog file's folder, only with
a known media suffix, and with the content type that suffix names. URLs and anything else
are not served (the item shows no media).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import polars as pl

from tlrec.tables import CATALOG_COLUMNS, Columns
from tlrec.training.data import load_catalog

logger = logging.getLogger(__name__)

MediaKind = Literal["image", "audio"]
#: Suffix -> content type of the media files the console serves (anything else is not served).
MEDIA_TYPES: dict[MediaKind, dict[str, str]] = {
    "image": {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
              ".webp": "image/webp"},
    "audio": {".wav": "audio/wav", ".mp3": "audio/mpeg", ".ogg": "audio/ogg", ".oga": "audio/ogg",
              ".flac": "audio/flac", ".m4a": "audio/mp4"},
}
_MEDIA_COLUMNS: dict[MediaKind, str] = {"image": Columns.IMAGE_PATH, "audio": Columns.AUDIO_PATH}
_SEARCH_KEY = "__title_lower"


@dataclass(frozen=True)
class CatalogItem:
    """One item as the console shows it; ``image`` / ``audio``: servable files (None: none, or refused)."""

    item_id: str
    title: str
    description: str
    image: Path | None
    audio: Path | None
    metadata: dict[str, str]
    media_named: frozenset[str]  # the media the catalog names for it (served or not): its vector's inputs


class Catalog:
    """A catalog file loaded with ``training.data.load_catalog`` (validated; media paths made absolute)."""

    def __init__(self, path: Path, frame: pl.DataFrame) -> None:
        self.path = path
        self.folder = path.resolve().parent
        self._frame = frame.with_columns(pl.col(Columns.TITLE).str.to_lowercase().alias(_SEARCH_KEY))
        ids = frame[Columns.ITEM].to_list()
        self._row = {item: r for r, item in enumerate(ids)}
        #: item id -> title, for the API's answers
        self.titles: dict[str, str] = dict(zip(ids, frame[Columns.TITLE].to_list()))
        self._media = {kind: [self._servable(p, kind) for p in frame[col].to_list()]
                       for kind, col in _MEDIA_COLUMNS.items()}
        refused = {kind: sum(1 for p, ok in zip(frame[_MEDIA_COLUMNS[kind]].to_list(), paths) if p and ok is None)
                   for kind, paths in self._media.items()}
        for kind, count in refused.items():
            if count:
                logger.warning("%s: %d %s file(s) not served (outside %s, an unknown type, or a URL)",
                               path.name, count, kind, self.folder)

    @classmethod
    def load(cls, path: str | Path) -> Catalog:
        """Read and validate ``path`` (Parquet, CSV or JSONL); ``DataError`` names the file, row and column."""
        path = Path(path)
        catalog = cls(path, load_catalog(path))
        logger.info("console catalog %s: %d items", path, len(catalog))
        return catalog

    def __len__(self) -> int:
        return len(self._row)

    def __contains__(self, item_id: object) -> bool:
        return item_id in self._row

    def _servable(self, value: str | None, kind: MediaKind) -> Path | None:
        """The file ``value`` names if the console may serve it (inside the folder, a known suffix), else None."""
        if not value or "://" in value:
            return None
        try:
            resolved = Path(value).resolve()
        except (OSError, RuntimeError):
            return None
        if not resolved.is_relative_to(self.folder) or resolved.suffix.lower() not in MEDIA_TYPES[kind]:
            return None
        return resolved

    def item(self, item_id: str) -> CatalogItem | None:
        """The item, or None when the catalog has no such id."""
        r = self._row.get(item_id)
        if r is None:
            return None
        row = self._frame.row(r, named=True)
        meta = {k: str(v) for k, v in row.items() if k not in CATALOG_COLUMNS and k != _SEARCH_KEY and v is not None}
        named = frozenset(kind for kind, col in _MEDIA_COLUMNS.items() if row[col])
        return CatalogItem(item_id, row[Columns.TITLE], row[Columns.DESCRIPTION], self._media["image"][r],
                           self._media["audio"][r], meta, named)

    def search(self, query: str, limit: int) -> tuple[list[CatalogItem], int]:
        """Items whose title contains ``query`` (case-insensitive; titles starting with it first, then
        catalog order), at most ``limit``, and how many matched; an exact item id comes first."""
        q = query.strip().lower()
        frame = self._frame.with_row_index("__row")
        hits = frame.filter(pl.col(_SEARCH_KEY).str.contains(q, literal=True)) if q else frame
        hits = hits.with_columns(pl.col(_SEARCH_KEY).str.starts_with(q).alias("__prefix")) \
            .sort(["__prefix", "__row"], descending=[True, False])
        ids = hits[Columns.ITEM].head(limit).to_list()
        total = hits.height
        exact = query.strip()
        if exact in self._row and exact not in ids:
            ids, total = [exact, *ids[: limit - 1]], total + 1
        return [item for item in map(self.item, ids) if item is not None], total

    def media(self, item_id: str, kind: MediaKind) -> tuple[Path, str] | None:
        """``(file, content type)`` of the item's ``kind`` medium, checked again now (the file may have
        changed since loading); None when there is none to serve."""
        r = self._row.get(item_id)
        path = self._media[kind][r] if r is not None else None
        if path is None:
            return None
        resolved = path.resolve()
        if not resolved.is_relative_to(self.folder) or not resolved.is_file():
            return None
        return resolved, MEDIA_TYPES[kind][resolved.suffix.lower()]

    def summary(self, item: CatalogItem) -> dict[str, Any]:
        """The fields a list of items shows: id, title, which media it has."""
        return {"item_id": item.item_id, "title": item.title, "has_image": item.image is not None,
                "has_audio": item.audio is not None}
