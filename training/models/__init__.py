"""Recommender models behind one interface (``base.Recommender``)."""

from typing import Any

from pydantic import ValidationError

from tlrec.errors import ConfigError
from tlrec.training.models.base import ModelConfig, Recommender
from tlrec.training.models.blend import BlendConfig, BlendModel
from tlrec.training.models.content import ContentProfileConfig, ContentProfileModel
from tlrec.training.models.ease import EASEConfig, EASEModel
from tlrec.training.models.itemknn import ItemKNNConfig, ItemKNNModel
from tlrec.training.models.lightfm_model import LightFMConfig, LightFMModel
from tlrec.training.models.ncf import NCFConfig, NCFModel
from tlrec.training.models.popularity import PopularityConfig, PopularityModel
from tlrec.training.models.sasrec import SASRecConfig, SASRecModel

MODELS: dict[str, type[Recommender]] = {
    m.name: m for m in (NCFModel, PopularityModel, ContentProfileModel, ItemKNNModel, EASEModel, LightFMModel, BlendModel,
                  SASRecModel)
}


def build_model(model: str, config: dict[str, Any] | None = None) -> Recommender:
    """An unfitted model of registry name ``model``; ``ConfigError`` names the bad key."""
    model_class = get_model_class(model)
    try:
        return model_class(model_class.config_class.model_validate(config or {}))
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(x) for x in first["loc"]) or "config"
        msg = "unknown key" if first["type"] == "extra_forbidden" else first["msg"]
        more = f" (+{exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise ConfigError(f"{model} config: {where}: {msg}{more}") from None


def get_model_class(name: str) -> type[Recommender]:
    """The model class registered under ``name``; ``ConfigError`` (a ValueError) names the allowed ones."""
    try:
        return MODELS[name]
    except KeyError:
        raise ConfigError(f"unknown model {name!r}; choose one of: {', '.join(sorted(MODELS))}") from None


__all__ = [
    "MODELS", "BlendConfig", "BlendModel", "ContentProfileConfig", "ContentProfileModel", "EASEConfig", "EASEModel",
    "ItemKNNConfig", "ItemKNNModel", "LightFMConfig", "LightFMModel", "ModelConfig", "NCFConfig", "NCFModel",
    "PopularityConfig", "PopularityModel", "Recommender", "SASRecConfig", "SASRecModel", "build_model",
    "get_model_class",
]
