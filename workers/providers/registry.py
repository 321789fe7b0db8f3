"""Choosing a provider by the agent's model name: ``dev``, ``openai:<model>``,
``anthropic:<model>``."""

from __future__ import annotations

from streams.settings import Settings

from .base import ModelProvider
from .dev import DevModel


class ModelUnknownError(ValueError):
    code = "MODEL_UNKNOWN"


def provider_for(model: str, settings: Settings) -> ModelProvider:
    if model == "dev" or model.startswith("dev:"):
        return DevModel()
    raise ModelUnknownError(
        f"no provider serves model {model!r} (use dev, openai:… or anthropic:…)"
    )
