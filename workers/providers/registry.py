"""Choosing a provider by the agent's model name: ``dev``, ``openai:<model>`` or
``anthropic:<model>``; the part after the colon is the provider's own model name.

One HTTP client (and so one connection pool) serves every provider of a worker.
"""

from __future__ import annotations

import re

import httpx

from schemas.errors import ErrorCode
from schemas.values import MODEL_PATTERN
from streams.logs import add_secrets
from streams.settings import Settings

from .anthropic import AnthropicMessages
from .base import ModelProvider
from .dev import DevModel
from .openai import OpenAIChat


class ModelUnknownError(ValueError):
    code = ErrorCode.MODEL_UNKNOWN


class Providers:
    def __init__(self, settings: Settings) -> None:
        add_secrets(settings.openai_api_key, settings.anthropic_api_key)
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(
                settings.model_timeout_s, connect=min(10.0, settings.model_timeout_s)
            )
        )
        self.dev = DevModel()
        self.openai = OpenAIChat(self.http, settings.openai_base_url, settings.openai_api_key)
        self.anthropic = AnthropicMessages(
            self.http, settings.anthropic_base_url, settings.anthropic_api_key
        )

    def resolve(self, model: str) -> tuple[ModelProvider, str]:
        """The provider serving ``model`` and the name to ask it for."""
        if not re.match(MODEL_PATTERN, model):
            raise ModelUnknownError(
                f"no provider serves model {model!r} (use dev, openai:<model> or anthropic:<model>)"
            )
        prefix, _, name = model.partition(":")
        if prefix == "openai":
            return self.openai, name
        if prefix == "anthropic":
            return self.anthropic, name
        return self.dev, model

    async def close(self) -> None:
        await self.http.aclose()
