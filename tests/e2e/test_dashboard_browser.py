"""The operators' dashboard in a real browser: headless Chromium (Debian's package),
driven by Playwright, against the whole platform. An operator signs in, watches a
completed turn appear on the overview without reloading, opens its timeline, finds a
failed turn's error code, and re-drives a dead letter until it is processed; then reads
the API's docs (Swagger UI, Redoc). No page loads anything from another origin or breaks
its Content-Security-Policy. Each page is saved as a screenshot in the test's output
directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, Page, Request, expect, sync_playwright

from schemas import events
from schemas.envelope import envelope, from_kafka, to_kafka
from schemas.values import AgentConfig
from tests.e2e.conftest import Platform
from tests.e2e.test_bad_input import turn
from tests.e2e.test_turns import open_session, read_topic
from tests.eventually import eventually
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


def watch_origins(page: Page, origin: str) -> tuple[list[str], list[str]]:
    """What the page's Content-Security-Policy refused, and what it loaded from another
    origin, on every page it goes to."""
    violations: list[str] = []
    foreign: list[str] = []

    def violated(text: str) -> None:
        violations.append(text)

    def requested(request: Request) -> None:
        if not request.url.startswith((origin + "/", "data:", "blob:")):
            foreign.append(request.url)

    page.expose_function("cspViolation", violated)
    page.add_init_script(
        "document.addEventListener('securitypolicyviolation', e => window.cspViolation("
        "`${e.violatedDirective} ${e.blockedURI} at ${e.sourceFile}:${e.lineNumber}`))"
    )
    page.on("requestfinished", requested)
    return violations, foreign


def shot(page: Page, out: Path, name: str, *, full_page: bool = True) -> None:
    page.screenshot(path=str(out / f"dashboard-{name}.png"), full_page=full_page)


def test_an_operator_watches_turns_opens_a_timeline_and_redrives_a_dead_letter(
    platform: Platform, browser: Browser, model_server: ModelServer, tmp_path: Path
) -> None:
    out = tmp_path / "screenshots"
    out.mkdir()
    key = operator_key(platform)
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    page.set_default_timeout(20_000)
    violations, foreign = watch_origins(page, platform.url)

    # Signing in: the dashboard sends a visitor to the sign-in page and back.
    first = page.goto(f"{platform.url}/dashboard")
    assert first is not None
    assert "frame-ancestors 'none'" in first.headers["content-security-policy"]
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

    def processed() -> bool:
        if "processed" in page.locator("#dead-letters").inner_text():
            return True
        page.reload()  # looked at again after the poll
        return False

    # Every second: each look renders the page again, reading the dead-letter topic.
    eventually(processed, "the re-driven command to be processed", timeout=30, poll=1)
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

    assert violations == []  # the dashboard's pages work under their policy

    # The API's docs, from the gateway alone.
    page.goto(f"{platform.url}/docs")
    expect(page.locator(".swagger-ui .info .title")).to_contain_text("agentlog")
    expect(page.locator(".opblock-summary-path", has_text="/v1/invoices/drafts")).to_be_visible()
    shot(page, out, "docs", full_page=False)
    page.goto(f"{platform.url}/redoc")
    expect(page.locator("h1").first).to_contain_text("agentlog")
    expect(page.get_by_text("Draft a tenant's invoice").first).to_be_attached()
    shot(page, out, "redoc", full_page=False)
    # Redoc's "API docs by Redocly" asks Redocly's site for its logo: refused, and hidden.
    assert [v.split(" at ")[0] for v in violations] == [
        "img-src https://cdn.redoc.ly/redoc/logo-mini.svg"
    ]
    assert foreign == []
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
            "docs",
            "redoc",
        )
    )
