"""The model worker: performs ``ModelCallRequested`` with the agent's provider.

Text streams to the output topic as ``OutputDelta`` while the call runs; the result is
recorded as ``ModelCallCompleted`` or ``ModelCallFailed``, and usage (of every attempt,
failed ones included) as ``UsageRecorded`` on the usage topic: input tokens apart from
cached input tokens, since plans price them apart.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from schemas import events
from schemas.base import Fact
from schemas.envelope import Envelope
from schemas.errors import ErrorCode
from streams.catalog import Catalog
from streams.logs import redact
from streams.publisher import Publisher
from streams.settings import Settings

from .effect_worker import EffectWorker
from .providers.base import ModelRequest, ProviderError, ToolSpec
from .providers.registry import ModelUnknownError, Providers
from .providers.retry import RetryPolicy, complete_with_retries

log = logging.getLogger(__name__)


class ModelWorker(EffectWorker):
    name = "model"
    request_type = events.ModelCallRequested
    result_types = (events.ModelCallCompleted, events.ModelCallFailed)
    source = "/workers/model"

    def __init__(self, bootstrap_servers: str, catalog: Catalog, settings: Settings) -> None:
        super().__init__(bootstrap_servers, catalog)
        self.providers = Providers(settings)
        self.policy = RetryPolicy(
            max_retries=settings.model_max_retries,
            timeout_s=settings.model_timeout_s,
            backoff_base_s=settings.model_retry_backoff_s,
        )
        # The output topic's own producer: the deltas, then the whole message, in order;
        # results go out beside them through the runtime's, not queued behind them.
        self.stream = Publisher(bootstrap_servers, catalog)
        self._stream_started = False
        self._streaming: list[asyncio.Future[Any]] = []

    async def _stream(self, env: Envelope[Any]) -> None:
        if not self._stream_started:
            self._stream_started = True
            await self.stream.start()
        self._streaming.append(await self.stream.enqueue(env))

    async def written(self) -> None:
        """Wait until what was streamed is acknowledged (before the runtime commits)."""
        streaming, self._streaming = self._streaming, []
        await asyncio.gather(*streaming)

    async def perform(self, env: Envelope[Any]) -> list[Envelope[Any]]:
        req: events.ModelCallRequested = env.data
        ids: dict[str, Any] = {"session_id": req.session_id, "turn_id": req.turn_id}
        common: dict[str, Any] = {**ids, "call_id": req.call_id, "step": req.step}
        result: Fact
        streamed = 0

        async def on_delta(attempt: int, text: str) -> None:
            nonlocal streamed
            delta = events.OutputDelta(
                **ids, call_id=req.call_id, index=streamed, text=text, attempt=attempt
            )
            await self._stream(env.follow(delta, step=f"delta-{streamed}", source=self.source))
            streamed += 1

        try:
            provider, model = self.providers.resolve(req.model)
        except ModelUnknownError as exc:
            result = events.ModelCallFailed(
                **common, code=ErrorCode.MODEL_UNKNOWN, detail=str(exc), usage=events.UsageValue()
            )
            return [env.follow(result, step="result", source=self.source)]
        request = ModelRequest(
            model=model,
            call_id=req.call_id,
            messages=req.messages,
            tools=[
                ToolSpec(name=t.name, description=t.description, parameters=t.parameters)
                for t in req.tools
            ],
        )
        try:
            outcome = await complete_with_retries(provider, request, on_delta, self.policy)
        except ProviderError as exc:
            used = exc.usage or events.UsageValue()
            result = events.ModelCallFailed(
                **common, code=exc.code, detail=redact(str(exc)), usage=used
            )
        else:
            response = outcome.response
            used = outcome.usage
            result = events.ModelCallCompleted(
                **common,
                text=response.text,
                tool_calls=response.tool_calls,
                usage=used,
                attempts=outcome.attempts,
            )
            message = events.OutputMessage(
                **ids, call_id=req.call_id, text=response.text, final=not response.tool_calls
            )
            await self._stream(env.follow(message, step="output", source=self.source))
        return self.recorded(
            env,
            result,
            req.call_id,
            req.model,
            {
                "input_tokens": used.input_tokens - used.cached_input_tokens,
                "cached_input_tokens": used.cached_input_tokens,
                "output_tokens": used.output_tokens,
            },
        )

    async def close(self) -> None:
        await self.providers.close()
        if self._stream_started:
            await self.stream.stop()
        await super().close()
