"""The model worker: performs ``ModelCallRequested`` with the agent's provider.

Text streams to the output topic as ``OutputDelta`` while the call runs; the result is
recorded as ``ModelCallCompleted`` or ``ModelCallFailed``, and usage (of every attempt,
failed ones included) as ``UsageRecorded`` on the usage topic: input tokens apart from
cached input tokens, since plans price them apart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

from opentelemetry.trace import SpanKind

from schemas import events
from schemas.base import Fact
from schemas.envelope import Envelope
from schemas.errors import ErrorCode
from streams import tracing
from streams.catalog import Catalog
from streams.handler import WritesItself
from streams.logs import redact
from streams.publisher import Publisher
from streams.settings import Settings

from .effect_worker import EffectWorker
from .metrics import MODEL_CALL_ERRORS, MODEL_CALL_SECONDS, MODEL_TOKENS, ModelLabels
from .providers.base import ModelProvider, ModelRequest, ProviderError, ToolSpec
from .providers.registry import ModelUnknownError, Providers
from .providers.retry import Outcome, RetryPolicy, complete_with_retries

log = logging.getLogger(__name__)


class ModelWorker(EffectWorker, WritesItself):
    name = "model"
    request_type = events.ModelCallRequested
    result_types = (events.ModelCallCompleted, events.ModelCallFailed)
    source = "/workers/model"

    def __init__(self, bootstrap_servers: str, catalog: Catalog, settings: Settings) -> None:
        super().__init__(bootstrap_servers, catalog)
        self.providers = Providers(settings)
        self.model_labels = ModelLabels(settings.metrics_models.split(","))
        self.policy = RetryPolicy(
            max_retries=settings.model_max_retries,
            timeout_s=settings.model_timeout_s,
            backoff_base_s=settings.model_retry_backoff_s,
        )
        # The output topic's own producer: the deltas, then the whole message, in order;
        # results go out beside them through the runtime's, not queued behind them. Not
        # traced: a span per streamed chunk would outnumber the turn's others, and no
        # consumer of them continues a trace (the call's ``chat`` span covers them).
        self.stream = Publisher(bootstrap_servers, catalog, traced=False)
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
                **common,
                code=ErrorCode.MODEL_UNKNOWN,
                detail=str(exc),
                usage=events.UsageValue(),
                model=req.model,
                requested_at=env.time,
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
        labels = (provider.name, self.model_labels.of(req.model, model))
        called = await self._call(env, provider, request, labels, on_delta)
        answered: dict[str, Any] = {
            **common,
            "provider": provider.name,
            "model": model,
            "requested_at": env.time,
        }
        if isinstance(called, ProviderError):
            used = called.usage or events.UsageValue()
            result = events.ModelCallFailed(
                **answered, code=called.code, detail=redact(str(called)), usage=used
            )
        else:
            response = called.response
            used = called.usage
            result = events.ModelCallCompleted(
                **answered,
                text=response.text,
                tool_calls=response.tool_calls,
                usage=used,
                attempts=called.attempts,
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

    async def _call(
        self,
        env: Envelope[Any],
        provider: ModelProvider,
        request: ModelRequest,
        labels: tuple[str, str],
        on_delta: Callable[[int, str], Awaitable[None]],
    ) -> Outcome | ProviderError:
        """The model call, retries included: a GenAI ``chat`` span, and its metrics
        (``labels``: the provider and the model as metrics may name it)."""
        with tracing.span(
            f"chat {request.model}",
            env.traceparent,
            kind=SpanKind.CLIENT,
            attributes={
                "gen_ai.operation.name": "chat",
                "gen_ai.provider.name": provider.name,
                "gen_ai.request.model": request.model,
                "gen_ai.conversation.id": env.data.session_id,
            },
        ) as span:
            started = time.perf_counter()
            called: Outcome | ProviderError
            try:
                called = await complete_with_retries(provider, request, on_delta, self.policy)
                used = called.usage
            except ProviderError as exc:
                called, used = exc, exc.usage or events.UsageValue()
                tracing.failed(span, exc.code)
                MODEL_CALL_ERRORS.labels(*labels, exc.code).inc()
            MODEL_CALL_SECONDS.labels(*labels).observe(time.perf_counter() - started)
            MODEL_TOKENS.labels(*labels, "input").inc(used.input_tokens)
            MODEL_TOKENS.labels(*labels, "output").inc(used.output_tokens)
            if span is not None:
                span.set_attribute("gen_ai.usage.input_tokens", used.input_tokens)
                span.set_attribute("gen_ai.usage.output_tokens", used.output_tokens)
        return called

    async def close(self) -> None:
        await self.providers.close()
        if self._stream_started:
            await self.stream.stop()
        await super().close()
