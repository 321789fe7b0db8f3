"""The operators' dashboard in a real browser: headless Chromium (Debian's package),
driven by Playwright, against the whole platform. An operator signs in, watches a
completed turn appear on the overview without reloading, opens its timeline, finds a
failed turn's error code, and re-drives a dead letter until it is processed. Each page
is saved as a screenshot in the test's output directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from schemas import events
from schemas.envelope import envelope, from_kafka, to_kafka
from schemas.values import AgentConfig
from tests.e2e.conftest import Platform
from tests.e2e.test_bad_input import turn
from tests.e2e.test_turns import open_session, read_topic
from tests.kafka import REPO
from workers.providers.protocol_server import ModelServer, Reply

T = TypeVar("T")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="needs Debian's chromium (make test installs it)"
)


@pytest.fixture
def browser() -> Iterator[Browser]:
    assert CHROMIUM is not None
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        yield browser
        browser.close()


def operator_key(platform: Platform) -> str:
    created = subprocess.run(
        [sys.executable, "-m", "agentlog_cli", "operators", "create", "on-call"],
        cwd=REPO,
        env=platform.env,
        check=True,
        capture_output=True,
        text=True,
    )
    return created.stdout.strip().split()[-1]


def in_thread(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` in a thread of its own: Playwright's sync API keeps an event
    loop running on this one, and the suite's Kafka helpers run loops of their own."""
    with ThreadPoolExecutor(1) as thread:
        return thread.submit(function, *args).result()


def shot(page: Page, out: Path, name: str) -> None:
    page.screenshot(path=str(out / f"dashboard-{name}.png"), full_page=True)


def test_an_operator_watches_turns_opens_a_timeline_and_redrives_a_dead_letter(
    platform: Platform, browser: Browser, model_server: ModelServer, tmp_path: Path
) -> None:
    out = tmp_path / "screenshots"
    out.mkdir()
    key = operator_key(platform)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(20_000)

    # Signing in: the dashboard sends a visitor to the sign-in page and back.
    page.goto(f"{platform.url}/dashboard")
    expect(page).to_have_url(f"{platform.url}/dashboard/login?next=/dashboard")
    shot(page, out, "login")
    page.fill("input[name=key]", platform.key)  # a tenant's key does not open it
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_contain_text("not an operator")
    page.fill("input[name=key]", key)
    page.click("button[type=submit]")
    expect(page).to_have_url(f"{platform.url}/dashboard")
    expect(page.locator("#live")).to_contain_text("live")  # the SSE stream is open

    # A turn completed meanwhile appears on the overview, without a reload.
    page.evaluate("window.notReloaded = true")
    with platform.client() as api:
        agent = api.post("/v1/agents", json={"name": "helper", "model": "dev"}).json()
        done = turn(api, open_session(api, agent["agent_id"]), "hello")
    assert done["status"] == "completed"
    row = page.locator(f"#recent tr[data-turn='{done['turn_id']}']")
    expect(row.locator(".status")).to_have_text("completed")
    assert page.evaluate("window.notReloaded") is True
    expect(page.locator("#finished")).not_to_have_text("0")
    shot(page, out, "overview")

    # Its timeline: the model call, its duration and tokens.
    row.locator("a").click()
    expect(page.locator("#turn-status")).to_have_text("completed")
    timeline = page.locator("#timeline")
    expect(timeline).to_contain_text("model call completed")
    expect(timeline).to_contain_text("out")  # the call's tokens
    shot(page, out, "turn")

    # A failed turn shows its error code, in the list and on its page.
    with platform.client() as api:
        failing = api.post("/v1/agents", json={"name": "failing", "model": "openai:gpt-test"})
        attempts = 1 + int(platform.env["AGENTLOG_MODEL_MAX_RETRIES"])
        model_server.script(*(Reply(status=500) for _ in range(attempts)))
        failed = turn(api, open_session(api, failing.json()["agent_id"]), "hello")
    assert failed["error_code"] == "MODEL_UNAVAILABLE"
    page.goto(f"{platform.url}/dashboard/turns?status=failed")
    expect(page.locator("#turns")).to_contain_text("MODEL_UNAVAILABLE")
    shot(page, out, "turns")
    page.click(f"a[href='/dashboard/turns/{failed['turn_id']}']")
    expect(page.locator("#turn-error")).to_have_text("MODEL_UNAVAILABLE")

    # A dead letter (a command its consumer failed on) is re-driven and processed.
    agent_id = str(uuid.uuid4())
    tenant_id = next(
        from_kafka(r.key, r.value, list(r.headers)).tenant_id
        for r in in_thread(read_topic, platform, "agentlog.commands")
    )
    command = envelope(
        events.AgentCreateRequested(
            agent_id=agent_id, config=AgentConfig(name="revived", model="dev")
        ),
        source="/tests/e2e",
        tenant_id=tenant_id,
    )
    record_key, value, headers = to_kafka(command)
    why = [
        ("dlq.reason", b"HANDLER_FAILED: OperationalError"),
        ("dlq.topic", f"{platform.prefix}agentlog.commands".encode()),
        ("dlq.partition", b"0"),
        ("dlq.offset", b"0"),
        ("dlq.consumer", b"commands"),
    ]
    in_thread(platform.produce, "agentlog.deadletter", value, record_key, headers + why)
    page.goto(f"{platform.url}/dashboard/dead-letters")
    letter = page.locator("#dead-letters tbody tr", has_text="OperationalError")
    expect(letter).to_contain_text("agent.create_requested")
    shot(page, out, "dead-letters")
    letter.locator("button[data-redrive]").click()
    expect(letter).to_contain_text("re-driven to")
    deadline = time.monotonic() + 30
    while "processed" not in page.locator("#dead-letters").inner_text():
        assert time.monotonic() < deadline, "the re-driven command was not processed"
        page.wait_for_timeout(1000)
        page.reload()
    with platform.client() as api:
        assert api.get(f"/v1/agents/{agent_id}").status_code == 200
    shot(page, out, "dead-letters-redriven")

    for name in ("pipeline", "tenants"):
        page.goto(f"{platform.url}/dashboard/{name}")
        expect(page.locator("h1")).to_have_text(name.title())
        shot(page, out, name)
    page.goto(f"{platform.url}/dashboard/pipeline")
    expect(page.locator("#topics .rate").first).to_contain_text("records/s")
    expect(page.locator("#groups")).to_contain_text("orchestrator")
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"dashboard-{n}.png"
        for n in (
            "login",
            "overview",
            "turn",
            "turns",
            "dead-letters",
            "dead-letters-redriven",
            "pipeline",
            "tenants",
        )
    )
