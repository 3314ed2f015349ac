"""tlrec: recommendation and behaviour prediction built on transfer learning.

The Python API, the same jobs as the ``tlrec`` command::

    import tlrec

    version_dir = tlrec.train("shop/catalog.parquet", "shop/interactions.parquet", "shop/artifacts")
    model = tlrec.load("shop/artifacts")               # verified; the version `current` names
    model.recommend(["u0001", "u0002"], k=10)          # one Recommendations per user, input order
    model.recommend_history([["film-0007", "film-0042"]], k=10)   # a new or anonymous user

Layers (each imports only from those before it): the base modules here (``tlrec.errors``,
``tlrec.files``, ``tlrec.tables``, ``tlrec.ray_cluster``) -> ``tlrec.embeddings`` ->
``tlrec.training`` -> ``tlrec.serving`` -> ``tlrec.services``. ``docs/architecture.md`` is
the map. The functions below import their layer when called, so ``import tlrec`` stays cheap.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from tlrec.errors import ConfigError, InputError, TlrecError, UsageError

if TYPE_CHECKING:
    from tlrec.serving.served_model import ServedModel

__all__ = ["ConfigError", "InputError", "TlrecError", "UsageError", "embed", "load", "train"]
__version__ = "0.1.0"


def load(artifacts: str | Path) -> ServedModel:
    """The model of an artifacts root (the version ``current`` names) or of one version directory.

    Every file is verified against the manifest first; a missing, corrupt or foreign file
    raises ``TlrecError`` naming it. The result answers ``recommend(user_ids, k)``,
    ``recommend_history(histories, k)``, ``similar_items(item_id, k)`` and ``popular(k)``
    with external ids, as the API does.
    """
    from tlrec.serving.served_model import ServedModel

    return ServedModel.load(Path(artifacts))


def train(
    catalog: str | Path,
    interactions: str | Path,
    out: str | Path,
    *,
    vectors: str | Path | None = None,
    model: str = "auto",
    config: dict[str, Any] | None = None,
    modalities: str = "all",
) -> Path:
    """Fit ``model`` on the files (catalog and interactions contracts) and publish a version under ``out``.

    ``model="auto"`` compares the candidate models on a validation split of the interactions
    and serves the best (``training.selection``); a registry name forces one.

    ``vectors``: an item-vectors file from :func:`embed` (default: the catalog is embedded
    with the default encoders). ``config``: model settings (``tlrec train --set``).
    Returns the new version directory; ``out/current`` names it.
    """
    from tlrec.services.jobs import train_job

    return train_job(Path(catalog), Path(interactions), Path(out),
                     vectors_path=Path(vectors) if vectors is not None else None,
                     model=model, config=config, modalities=modalities)


def embed(
    catalog: str | Path,
    out: str | Path,
    *,
    text: str | None = "minilm",
    image: str | None = "efficientnet-lite0",
    audio: str | None = "crepe-tiny",
    ray_address: str | None = None,
) -> Path:
    """Embed a catalog file with the pre-trained encoders into an item-vectors Parquet at ``out``.

    ``None`` for a modality skips it; ``ray_address`` ("local", "auto", "ray://...") runs
    the encoders as a Ray Data job instead of in this process. Re-runs embed only changed items.
    """
    from tlrec.services.jobs import embed_job

    return embed_job(Path(catalog), Path(out), text=text, image=image, audio=audio, ray_address=ray_address)
