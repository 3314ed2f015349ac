"""Recommender models behind one interface (``base.Recommender``)."""

from training.models.base import ModelConfig, Recommender
from training.models.ncf import NCFConfig, NCFModel
from training.models.popularity import PopularityConfig, PopularityModel

MODELS: dict[str, type[Recommender]] = {m.name: m for m in (NCFModel, PopularityModel)}


def get_model_class(name: str) -> type[Recommender]:
    """The model class registered under ``name``; ValueError names the allowed ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}") from None


__all__ = ["MODELS", "ModelConfig", "NCFConfig", "NCFModel", "PopularityConfig", "PopularityModel",
           "Recommender", "get_model_class"]
