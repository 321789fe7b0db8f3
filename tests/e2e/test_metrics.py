"""Metrics from every role: each role in its own process serves ``/metrics`` (and its
probes) on a port of its own; after a scripted load every role's counters show what the
test caused, and every consumer's lag goes back to 0."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from schemas import events
from schemas.envelope import from_kafka
from schemas.usage import UsageRecorded
from tests.e2e.conftest import ToolServer, drop_schemas, platform_env
from tests.e2e.test_bad_input import turn
from tests.e2e.test_turns import open_session, setup_agent
from tests.eventually import eventually
from tests.kafka import REPO
from tests.processes import die_with_parent
from tests.topics import read_all
from workers.providers.protocol_server import ModelServer, Reply

ROLE_ARGS = {
    "projector": ["projector"],
    **{r: ["worker", r] for r in ("commands", "orchestrator", "model", "tool", "billing")},
    "invoicer": ["worker", "invoicer"],
}
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def cluster(
    bootstrap: str, tmp_path: Path, model_server: ModelServer
) -> Iterator[tuple[dict[str, str], dict[str, str]]]:
    """Every role as its own process, and the gateway: their environment, and each one's
    base URL by role (``gateway``, ``projector``, ``commands``, …)."""
    tag = f"e2e_{uuid.uuid4().hex[:10]}"
    env = {
        **platform_env(bootstrap, tag, model_server),
        "AGENTLOG_METRICS_PORT": "0",
        "AGENTLOG_TOOL_ALLOWED_NETWORKS": "127.0.0.0/8",
    }
    subprocess.run([sys.executable, "-m", "agentlog_cli", "migrate"], cwd=REPO, env=env, check=True)
    procs: list[subprocess.Popen[bytes]] = []
    urls: dict[str, str] = {}
    try:
        for role, args in [*ROLE_ARGS.items(), ("gateway", ["gateway"])]:
            proc = subprocess.Popen(
                [sys.executable, "-m", "agentlog_cli", *args],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=(tmp_path / f"{role}.log").open("ab"),
                preexec_fn=die_with_parent,
            )
            procs.append(proc)
            assert proc.stdout is not None
            line = proc.stdout.readline().decode().split()  # "metrics <url>/metrics"
            assert line[:1] in (["metrics"], ["gateway"]), (role, line)
            urls[role] = line[1].removesuffix("/metrics")
        for role, url in urls.items():
            eventually(functools.partial(_ready, url), f"{role} ready", timeout=30)
        yield env, urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        drop_schemas(tag)


def _ready(url: str) -> bool:
    with contextlib.suppress(httpx.TransportError):
        return httpx.get(f"{url}/readyz", timeout=2).status_code == 200
    return False


def scrape(url: str) -> Samples:
    response = httpx.get(f"{url}/metrics", timeout=5)
    assert response.status_code == 200
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    """The sum of ``name``'s samples that have ``labels`` (0 if none)."""
    wanted = set(labels.items())
    return sum(v for (n, ls), v in samples.items() if n == name and wanted <= ls)


def lags(samples: Samples) -> dict[tuple[str, str], float]:
    return {
        (dict(ls)["topic"], dict(ls)["partition"]): v
        for (n, ls), v in samples.items()
        if n == "agentlog_consumer_lag"
    }


def _produce(bootstrap: str, topic: str, value: bytes) -> None:
    async def send() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
        await producer.start()
        try:
            await producer.send_and_wait(topic, value, key=b"junk")
        finally:
            await producer.stop()

    asyncio.run(send())


def test_every_role_serves_the_counts_of_a_scripted_load_and_lag_returns_to_0(
    cluster: tuple[dict[str, str], dict[str, str]],
    tool_server: ToolServer,
    model_server: ModelServer,
) -> None:
    env, urls = cluster
    prefix = env["AGENTLOG_TOPIC_PREFIX"]
    created = subprocess.run(
        [sys.executable, "-m", "agentlog_cli", "tenants", "create", "metrics"],
        cwd=REPO,
        env=env,
        check=True,
        capture_output=True,
    )
    key = created.stdout.decode().split()[-1]
    attempts = 1 + int(env["AGENTLOG_MODEL_MAX_RETRIES"])
    api = httpx.Client(
        base_url=urls["gateway"], timeout=30, headers={"Authorization": f"Bearer {key}"}
    )
    with api:
        flaky = api.post(
            "/v1/tools", json={"name": "flaky", "url": f"{tool_server.url}/broken", "timeout_s": 2}
        )
        assert flaky.status_code == 201, flaky.text
        agent = setup_agent(api, tool_server)
        api.patch(f"/v1/agents/{agent['agent_id']}", json={"tools": ["weather", "flaky"]})
        outcomes: Counter[str] = Counter()
        for _ in range(3):
            session_id = open_session(api, agent["agent_id"])
            outcomes[turn(api, session_id, 'call weather {"city": "Oslo"}')["status"]] += 1
        outcomes[turn(api, session_id, "call flaky")["status"]] += 1
        failing = api.post("/v1/agents", json={"name": "failing", "model": "openai:gpt-test"})
        model_server.script(*(Reply(status=500) for _ in range(attempts)))
        failed = turn(api, open_session(api, failing.json()["agent_id"]), "hello")
        outcomes[failed["status"]] += 1
        assert failed["error_code"] == "MODEL_UNAVAILABLE", failed
    assert outcomes == {"completed": 4, "failed": 1}
    bootstrap = env["AGENTLOG_KAFKA_BOOTSTRAP_SERVERS"]
    _produce(bootstrap, f"{prefix}agentlog.commands", b"not a cloudevent")

    def log(name: str) -> list[Any]:
        return read_all(bootstrap, f"{prefix}{name}")

    # Every consumer has caught up: every partition it owns shows lag 0.
    def caught_up() -> dict[str, Samples]:
        scraped = {role: scrape(url) for role, url in urls.items()}
        behind = {
            role: lag for role in ROLE_ARGS if not (lag := lags(scraped[role])) or any(lag.values())
        }
        handled = value(scraped["commands"], "agentlog_records_dead_lettered_total")
        assert not behind, f"still behind: {behind}"
        assert handled == 1, f"{handled} dead-lettered"
        return scraped

    # Every half second: the roles measure their lag once a second, and each look scrapes
    # every role's metrics.
    scraped = eventually(caught_up, "every consumer caught up", timeout=30, poll=0.5)

    usage = [from_kafka(r.key, r.value, list(r.headers)).data for r in log("agentlog.usage")]
    model_usage = [u for u in usage if isinstance(u, UsageRecorded) and u.kind == "model"]
    dev_usage = [u for u in model_usage if u.resource == "dev"]
    commands = log("agentlog.commands")
    event_types = Counter(
        dict(r.headers).get("ce_type", b"").decode() for r in log("agentlog.events")
    )

    gateway = scraped["gateway"]
    route = "/v1/sessions/{session_id}/turns"
    assert value(gateway, "agentlog_gateway_requests_total", route=route, status="200") == 5

    cmd = scraped["commands"]
    topic = f"{prefix}agentlog.commands"
    assert value(cmd, "agentlog_records_handled_total", topic=topic) == len(commands) - 1
    assert value(cmd, "agentlog_records_dead_lettered_total", reason="unreadable") == 1
    assert value(cmd, "agentlog_handler_seconds_count", role="commands") > 0

    orchestrator = scraped["orchestrator"]
    assert value(orchestrator, "agentlog_turns_total", outcome="completed") == 4
    assert value(orchestrator, "agentlog_turns_total", outcome="failed") == 1
    assert value(orchestrator, "agentlog_turns_total", outcome="cancelled") == 0

    model = scraped["model"]
    requested = event_types[events.ModelCallRequested.ce_type()]
    calls = f"{prefix}agentlog.model-calls"  # its work topic: the requests' copies alone
    assert value(model, "agentlog_records_handled_total", topic=calls) == requested
    dev = {"provider": "dev", "model": "dev"}
    assert value(model, "agentlog_model_call_seconds_count", **dev) == len(dev_usage) == 8
    assert value(model, "agentlog_model_tokens_total", **dev, type="input") == sum(
        u.quantities["input_tokens"] + u.quantities["cached_input_tokens"] for u in dev_usage
    )
    assert value(model, "agentlog_model_tokens_total", **dev, type="output") == sum(
        u.quantities["output_tokens"] for u in dev_usage
    )
    openai = {"provider": "openai", "model": "other"}  # a model the operator did not list
    assert value(model, "agentlog_model_call_seconds_count", **openai) == 1
    assert value(model, "agentlog_model_call_errors_total", **openai) == 1
    assert value(model, "agentlog_model_call_errors_total", code="MODEL_UNAVAILABLE") == 1

    tool = scraped["tool"]
    tool_calls = event_types[events.ToolCallRequested.ce_type()]
    assert value(tool, "agentlog_records_handled_total", topic=f"{prefix}agentlog.tool-calls") == (
        tool_calls
    )
    assert value(tool, "agentlog_tool_call_seconds_count") == 4
    assert value(tool, "agentlog_tool_call_errors_total") == 1
    assert value(tool, "agentlog_tool_call_errors_total", code="TOOL_HTTP_ERROR") == 1

    billing = scraped["billing"]
    assert value(billing, "agentlog_records_handled_total", topic=f"{prefix}agentlog.usage") == len(
        usage
    )
    projector = scraped["projector"]
    assert value(projector, "agentlog_records_handled_total", topic=f"{prefix}agentlog.events") == (
        sum(event_types.values())
    )
    # Each role counts its own work only: the gateway handles no records.
    assert value(gateway, "agentlog_records_handled_total") == 0
    partitions = {str(p) for p in range(int(env["AGENTLOG_TOPIC_PARTITIONS"]))}
    for role in ROLE_ARGS:
        assert {p for _topic, p in lags(scraped[role])} == partitions, role
