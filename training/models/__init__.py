"""Recommender models behind one interface (``base.Recommender``)."""

from tlrec.errors import ConfigError
from tlrec.training.models.base import ModelConfig, Recommender
from tlrec.training.models.content import ContentProfileConfig, ContentProfileModel
from tlrec.training.models.ease import EASEConfig, EASEModel
from tlrec.training.models.itemknn import ItemKNNConfig, ItemKNNModel
from tlrec.training.models.lightfm_model import LightFMConfig, LightFMModel
from tlrec.training.models.ncf import NCFConfig, NCFModel
from tlrec.training.models.popularity import PopularityConfig, PopularityModel

MODELS: dict[str, type[Recommender]] = {m.name: m for m in (NCFModel, PopularityModel, ContentProfileModel)}

MODELS.update({m.name: m for m in (ItemKNNModel, EASEModel, LightFMModel)})


def get_model_class(name: str) -> type[Recommender]:
    """The model class registered under ``name``; ``ConfigError`` (a ValueError) names the allowed ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}") from None


__all__ = ["MODELS", "ContentProfileConfig", "ContentProfileModel", "ModelConfig", "NCFConfig", "NCFModel",
           "PopularityConfig", "PopularityModel", "Recommender", "get_model_class"]
__all__ += ["EASEConfig", "EASEModel", "ItemKNNConfig", "ItemKNNModel", "LightFMConfig", "LightFMModel"]
