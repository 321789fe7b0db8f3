"""A tenant's API keys: created, listed, and revoked so that every gateway process refuses
the key at once, though each had it cached."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

from tests.e2e.conftest import Platform, start_gateway, stop_gateway
from tests.e2e.test_bad_input import problem
from tests.e2e.test_unprocessable import tenant_of
from tests.eventually import eventually
from tests.kafka import REPO

REVOKED_WITHIN_S = 1.0


@pytest.fixture
def second_gateway(platform: Platform) -> Iterator[str]:
    proc, url = start_gateway(platform)
    try:
        yield url
    finally:
        stop_gateway(proc)


def test_a_revoked_key_is_refused_by_every_gateway(platform: Platform, second_gateway: str) -> None:
    gateways = (platform.url, second_gateway)
    with platform.client() as api:
        created = api.post("/v1/keys")
        assert created.status_code == 201, created.text
        issued = created.json()
        assert issued["key"].startswith(issued["key_prefix"])
        assert issued["revoked_at"] is None
        listed = {k["key_id"]: k for k in api.get("/v1/keys").json()}
        assert set(listed) >= {issued["key_id"]}
        assert "key" not in listed[issued["key_id"]]

        new_key = {"Authorization": f"Bearer {issued['key']}"}
        for url in gateways:  # both gateways cache the key now
            assert httpx.get(f"{url}/v1/agents", headers=new_key).status_code == 200

        revoked = api.delete(f"/v1/keys/{issued['key_id']}")
        assert revoked.status_code == 200, revoked.text
        answered = time.monotonic()
        assert revoked.json()["revoked_at"] is not None

        for url in gateways:

            def refused(url: str = url) -> bool:
                status = httpx.get(f"{url}/v1/agents", headers=new_key).status_code
                assert status == 401, f"{url} still accepts it ({status})"
                return True

            # Every 20 ms, as the bound is a second from the revocation's answer.
            left = answered + REVOKED_WITHIN_S - time.monotonic()
            eventually(refused, "the revoked key refused", timeout=max(left, 0), poll=0.02)
        # The key that revoked it still works; another tenant's key id is not found.
        assert api.get("/v1/keys").status_code == 200
        problem(api.delete("/v1/keys/no-such-key"), 404, "KEY_NOT_FOUND")
        assert api.delete(f"/v1/keys/{issued['key_id']}").status_code == 200  # again: no-op


def test_the_cli_lists_creates_and_revokes_keys(platform: Platform) -> None:
    def cli(*args: str) -> str:
        return subprocess.run(
            [sys.executable, "-m", "agentlog_cli", "tenants", "keys", *args],
            cwd=REPO,
            env=platform.env,
            capture_output=True,
            check=True,
            text=True,
        ).stdout

    with platform.client() as api:
        (first,) = api.get("/v1/keys").json()
        tenant_id = tenant_of(platform)
        key = cli("create", tenant_id).strip()
        assert (
            httpx.get(
                f"{platform.url}/v1/agents", headers={"Authorization": f"Bearer {key}"}
            ).status_code
            == 200
        )
        listing = cli("list", tenant_id)
        assert first["key_id"] in listing
        (new,) = [k for k in api.get("/v1/keys").json() if k["key_id"] != first["key_id"]]
        assert "revoked" in cli("revoke", tenant_id, new["key_id"])
        refused = httpx.get(f"{platform.url}/v1/agents", headers={"Authorization": f"Bearer {key}"})
        problem(refused, 401, "UNAUTHENTICATED")
        assert "revoked" in cli("revoke", tenant_id, new["key_id"])  # again: changes nothing
        unknown = subprocess.run(
            [sys.executable, "-m", "agentlog_cli", "tenants", "keys", "revoke", tenant_id, "k-0"],
            cwd=REPO,
            env=platform.env,
            capture_output=True,
            text=True,
        )
        assert unknown.returncode == 1
        assert "KEY_NOT_FOUND: no key k-0" in unknown.stderr
