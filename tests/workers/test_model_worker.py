"""The model worker against the scripted model server (the providers' own protocols over
HTTP) and a real broker: what it records for an answer, a retried failure and a failure,
the text it streams to the output topic, and the calls it does not make again."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from aiokafka import TopicPartition
from faststream.kafka import TestKafkaBroker
from prometheus_client import REGISTRY

from schemas import events
from schemas.envelope import Envelope, derived_id, envelope, from_kafka, to_kafka, trace_id
from streams.catalog import Catalog, ensure_topics
from streams.consumer import ConsumerRuntime
from streams.handler import Position
from streams.publisher import Publisher
from streams.settings import Settings
from streams.subscriber import kafka_broker
from tests.eventually import eventually
from tests.kafka import REPO
from tests.processes import clean_environ, die_with_parent
from tests.services import database_url, redis_url
from tests.topics import read_all
from workers.model_worker import ModelWorker
from workers.providers.protocol_server import ModelServer, Reply

TENANT = "tenant-models"
TOOL = events.ToolDefinition(tool_id="tool-weather", name="weather", url="http://tools/weather")


@pytest.fixture
def models() -> Iterator[ModelServer]:
    server = ModelServer().start()
    yield server
    server.stop()


@pytest.fixture
async def catalog(bootstrap: str) -> Catalog:
    catalog = Catalog(f"mw{uuid.uuid4().hex[:10]}.")
    await ensure_topics(bootstrap, catalog, 1)
    return catalog


@pytest.fixture
async def worker(
    bootstrap: str, catalog: Catalog, models: ModelServer
) -> AsyncIterator[ModelWorker]:
    settings = Settings(
        openai_base_url=f"{models.url}/v1",
        openai_api_key="sk-test",
        anthropic_base_url=models.url,
        anthropic_api_key="ak-test",
        model_timeout_s=5,
        model_max_retries=1,
        model_retry_backoff_s=0.01,
    )
    worker = ModelWorker(bootstrap, catalog, settings)
    yield worker
    await worker.close()


def request(model: str, message: str = "hello", call_id: str = "call-1") -> Envelope[Any]:
    data = events.ModelCallRequested(
        session_id="s-1",
        turn_id="t-1",
        call_id=call_id,
        step=1,
        model=model,
        agent_id="agent-1",
        agent_version=3,
        messages=[events.MessageValue(role="user", content=message)],
        tools=[TOOL],
    )
    return envelope(data, source="/tests", tenant_id=TENANT)


async def output(bootstrap: str, catalog: Catalog) -> list[Any]:
    records = await asyncio.to_thread(read_all, bootstrap, catalog.output)
    return [from_kafka(r.key, r.value, list(r.headers)).data for r in records]


async def test_an_answer_is_recorded_and_its_text_streamed_in_order(
    worker: ModelWorker, bootstrap: str, catalog: Catalog
) -> None:
    env = request("dev", "hello there")

    result, usage = await worker.perform(env)
    await worker.written()

    assert isinstance(result.data, events.ModelCallCompleted)
    assert (result.data.text, result.data.tool_calls, result.data.attempts) == (
        "echo: hello there",
        [],
        1,
    )
    assert usage.data == events.UsageRecorded(
        tenant_id=TENANT,
        kind="model",
        resource="dev",
        quantities={"input_tokens": 2, "cached_input_tokens": 0, "output_tokens": 3},
        used_at=env.time,  # the request's: a repeat records the same
        agent_id="agent-1",
        agent_version=3,
        session_id="s-1",
        turn_id="t-1",
        step=1,
        call_id="call-1",
        trace_id=trace_id(env.traceparent),
    )
    assert usage.id == derived_id(env.id, "usage")  # recorded again, it is the same event
    streamed = await output(bootstrap, catalog)
    deltas = [o for o in streamed if isinstance(o, events.OutputDelta)]
    assert [d.index for d in deltas] == list(range(len(deltas)))
    assert "".join(d.text for d in deltas) == "echo: hello there"
    assert streamed[-1] == events.OutputMessage(
        session_id="s-1", turn_id="t-1", call_id="call-1", text="echo: hello there", final=True
    )


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
async def test_a_providers_tool_calls_are_recorded_and_the_call_id_is_sent(
    worker: ModelWorker, models: ModelServer, protocol: str
) -> None:
    call = events.ToolCallValue(id="c-1", name="weather", arguments={"city": "Oslo"})
    models.script(Reply(chunks=("Looking.",), tool_calls=(call,)))

    result, _usage = await worker.perform(request(f"{protocol}:m-1"))

    assert isinstance(result.data, events.ModelCallCompleted)
    assert (result.data.text, result.data.tool_calls) == ("Looking.", [call])
    (received,) = models.received
    assert received.protocol == protocol
    assert received.headers["X-Agentlog-Call-Id"] == "call-1"
    assert received.body["model"] == "m-1"
    assert [t["name"] for t in _tools(received.body)] == ["weather"]


def _tools(body: dict[str, Any]) -> list[dict[str, Any]]:
    return [t.get("function", t) for t in body.get("tools", [])]


async def test_a_retried_failure_counts_the_usage_of_every_attempt(
    worker: ModelWorker, models: ModelServer
) -> None:
    # Anthropic tells the input tokens when a message starts: a cut attempt used them.
    models.script(
        Reply(chunks=("par", "tial"), cut_after=1, usage=events.UsageValue(input_tokens=5)),
        Reply(
            chunks=("whole",),
            usage=events.UsageValue(input_tokens=5, output_tokens=1, cached_input_tokens=3),
        ),
    )

    result, usage = await worker.perform(request("anthropic:m-1"))

    assert isinstance(result.data, events.ModelCallCompleted)
    assert (result.data.text, result.data.attempts) == ("whole", 2)
    assert result.data.usage.input_tokens == 10
    # Billed apart: the input not served from the cache, and the cached input.
    assert usage.data.quantities == {
        "input_tokens": 10 - 3,
        "cached_input_tokens": 3,
        "output_tokens": result.data.usage.output_tokens,
    }


async def test_the_result_says_who_answered_and_when_the_call_was_requested(
    worker: ModelWorker, models: ModelServer
) -> None:
    models.script(Reply(chunks=("late",), stall_s=0.3), Reply(status=401, stall_s=0.2))

    asked, refusal = request("openai:m-1"), request("anthropic:m-2")
    answered, _usage = await worker.perform(asked)
    refused, _usage = await worker.perform(refusal)

    # The request's time, not a measured duration: performed again, the same payload.
    assert (answered.data.provider, answered.data.model) == ("openai", "m-1")
    assert answered.data.requested_at == asked.time
    assert (answered.time - asked.time).total_seconds() >= 0.3
    assert isinstance(refused.data, events.ModelCallFailed)
    assert (refused.data.provider, refused.data.model) == ("anthropic", "m-2")
    assert refused.data.requested_at == refusal.time


async def test_a_failure_is_recorded_with_its_code_and_usage(
    worker: ModelWorker, models: ModelServer
) -> None:
    models.script(Reply(status=401))

    result, usage = await worker.perform(request("openai:m-1"))

    assert isinstance(result.data, events.ModelCallFailed)
    assert result.data.code == "MODEL_AUTH_FAILED"
    assert "sk-test" not in result.data.detail
    assert isinstance(usage.data, events.UsageRecorded)
    assert len(models.received) == 1, "an authentication failure is not retried"


async def test_a_model_no_provider_serves_fails_the_call_unmade(
    worker: ModelWorker, models: ModelServer
) -> None:
    (result,) = await worker.perform(request("nope:m-1"))

    assert isinstance(result.data, events.ModelCallFailed)
    assert result.data.code == "MODEL_UNKNOWN"
    assert models.received == []


def model_series() -> set[tuple[str, str]]:
    """The (provider, model) label pairs of every model call metric in this process."""
    return {
        (sample.labels["provider"], sample.labels["model"])
        for family in REGISTRY.collect()
        if family.name.startswith("agentlog_model_")
        for sample in family.samples
    }


async def test_metrics_name_no_model_a_tenant_chose(
    bootstrap: str, catalog: Catalog, models: ModelServer
) -> None:
    settings = Settings(
        openai_base_url=f"{models.url}/v1",
        openai_api_key="sk-test",
        anthropic_base_url=models.url,
        anthropic_api_key="ak-test",
        metrics_models="openai:listed-by-the-operator, anthropic:also-listed",
    )
    worker = ModelWorker(bootstrap, catalog, settings)
    before = model_series()
    try:
        # 40 agents of 40 tenants, each naming a model of its own, and the listed ones.
        for n in range(40):
            for protocol in ("dev", "openai", "anthropic"):
                await worker.perform(request(f"{protocol}:tenant-secret-{n}", call_id=f"c-{n}"))
        for model in ("dev", "openai:listed-by-the-operator", "anthropic:also-listed"):
            await worker.perform(request(model))
    finally:
        await worker.close()

    added = model_series() - before
    assert not [pair for pair in added if "secret" in pair[1]]
    assert added <= {
        ("dev", "dev"),
        ("dev", "other"),
        ("openai", "other"),
        ("openai", "listed-by-the-operator"),
        ("anthropic", "other"),
        ("anthropic", "also-listed"),
    }
    assert ("openai", "listed-by-the-operator") in model_series()


async def test_a_request_whose_result_is_in_the_log_is_not_performed_again(
    worker: ModelWorker, models: ModelServer, catalog: Catalog, bootstrap: str
) -> None:
    answered, fresh = request("openai:m-1", call_id="c-a"), request("openai:m-1", call_id="c-b")
    result = answered.follow(
        events.ModelCallCompleted(
            session_id="s-1",
            turn_id="t-1",
            call_id="c-a",
            step=1,
            text="earlier",
            tool_calls=[],
            usage=events.UsageValue(),
        ),
        step="result",
        source="/tests",
    )
    publisher = Publisher(bootstrap, catalog)
    await publisher.start()
    try:
        # c-a is on the work topic (a copy) and the events topic, then its result on
        # the events topic alone.
        await publisher.publish_all([answered, result])
    finally:
        await publisher.stop()
    # Assigned its work partition, the worker reads it to its end, and the events
    # partition of its number from the oldest request's time: c-a has its result.
    await worker.on_assigned([TopicPartition(catalog.model_calls, 0)])
    items = [(env, Position(catalog.model_calls, 0, n)) for n, env in enumerate([answered, fresh])]

    outputs = await worker.handle_batch(items)

    assert [r.headers["X-Agentlog-Call-Id"] for r in models.received] == ["c-b"]
    assert [o.causation_id for o in outputs] == [fresh.id, fresh.id]  # a result and its usage
    assert await worker.handle_batch(items) == [], "performed once, however often it comes"
    assert len(models.received) == 1


async def test_the_role_handles_a_request_under_faststreams_test_broker(
    worker: ModelWorker, bootstrap: str, catalog: Catalog
) -> None:
    """The model role's FastStream subscriber, driven by ``TestKafkaBroker``: a request
    published to its work topic reaches the handler typed by the role's facts, and its
    result and usage are recorded (on the real broker, through the role's publisher)."""
    publisher = Publisher(bootstrap, catalog)
    await publisher.start()
    broker = kafka_broker(bootstrap)
    subscriber = ConsumerRuntime(worker, publisher).subscribe(broker)
    env = request("dev", "under test")
    key, value, headers = to_kafka(env)
    try:
        async with TestKafkaBroker(broker) as test_broker:
            await test_broker.publish(
                value,
                topic=catalog.model_calls,
                key=key,
                headers={name: raw.decode() for name, raw in headers},
            )
            (consume,) = subscriber.calls
            (facts,), _kwargs = consume.handler.mock.call_args
    finally:
        await publisher.stop()

    assert facts == [env.data]  # handed as the event model, validated once
    recorded = await asyncio.to_thread(read_all, bootstrap, catalog.events)
    results = [from_kafka(r.key, r.value, list(r.headers)) for r in recorded]
    completed = [r for r in results if isinstance(r.data, events.ModelCallCompleted)]
    assert [(r.causation_id, r.data.text) for r in completed] == [(env.id, "echo: under test")]
    usage = await asyncio.to_thread(read_all, bootstrap, catalog.usage)
    assert [dict(r.headers)["ce_causationid"].decode() for r in usage] == [env.id]


async def publish(bootstrap: str, catalog: Catalog, env: Envelope[Any]) -> None:
    publisher = Publisher(bootstrap, catalog)
    await publisher.start()
    try:
        await publisher.publish(env)
    finally:
        await publisher.stop()


def test_faststream_run_serves_the_model_role(bootstrap: str) -> None:
    """``faststream run workers.model:app`` answers a model call through the broker, and
    stops gracefully on SIGINT."""
    catalog = Catalog(f"fsrun{uuid.uuid4().hex[:8]}.")
    asyncio.run(ensure_topics(bootstrap, catalog, 1))
    env = {
        **clean_environ(),
        "AGENTLOG_KAFKA_BOOTSTRAP_SERVERS": bootstrap,
        "AGENTLOG_TOPIC_PREFIX": catalog.prefix,
        "AGENTLOG_DATABASE_URL": database_url(),
        "AGENTLOG_REDIS_URL": redis_url(),
    }
    role = subprocess.Popen(
        [sys.executable, "-m", "faststream", "run", "workers.model:app"],
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=die_with_parent,
    )
    try:
        asyncio.run(publish(bootstrap, catalog, request("dev", "via faststream run")))

        def answered() -> list[str]:
            if role.poll() is not None:  # fails at once, not as "not yet"
                pytest.fail(role.stdout.read().decode() if role.stdout else "")
            facts = [
                from_kafka(record.key, record.value, list(record.headers)).data
                for record in read_all(bootstrap, catalog.events)
            ]
            return [fact.text for fact in facts if isinstance(fact, events.ModelCallCompleted)]

        # Every 0.3 s: each look reads the whole events topic.
        answers = eventually(answered, "an answer from the role", timeout=30, poll=0.3)
        assert answers == ["echo: via faststream run"]
    finally:
        role.send_signal(signal.SIGINT)
        output = role.communicate(timeout=30)[0].decode()
    assert role.returncode == 0, output
    assert "shut down gracefully" in output
