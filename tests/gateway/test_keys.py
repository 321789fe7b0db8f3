"""Authentication and ``/v1/keys``: a key is checked before anything is read, and a
revoked key stops working as soon as the projection applies its revocation."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from gateway.routes import keys
from projections.tenants import KEY_REVOKED
from schemas import events
from schemas.base import Fact

from .conftest import Api, problem


async def test_a_request_without_a_valid_key_is_refused(api: Api) -> None:
    bare = {"Authorization": ""}
    problem(await api.http.get("/v1/agents", headers=bare), 401, "UNAUTHENTICATED")
    wrong = {"Authorization": "Bearer al_not-a-key-of-anyone-0000000000"}
    problem(await api.http.get("/v1/agents", headers=wrong), 401, "UNAUTHENTICATED")
    # The scheme is case-insensitive; health needs no key.
    lower = {"Authorization": f"bearer {api.key}"}
    assert (await api.http.get("/v1/agents", headers=lower)).status_code == 200
    assert (await api.http.get("/healthz", headers=bare)).status_code == 200


async def decide(api: Api, command: type[Fact], decided: Callable[[Any], Fact]) -> None:
    """Play the command handler and the projector: the command recorded, and the
    outcome ``decided`` makes of it."""
    asked = await api.recorded(command)
    await api.fold(asked, api.fact(decided(asked.data), cause=asked))


def created(asked: events.ApiKeyCreateRequested) -> Fact:
    return events.ApiKeyCreated(**asked.model_dump())


async def test_an_issued_key_works_and_is_listed_without_its_secret(api: Api) -> None:
    async def projector() -> None:
        await decide(api, events.ApiKeyCreateRequested, created)

    projecting = asyncio.create_task(projector())
    issued = await api.http.post("/v1/keys")
    await projecting

    assert issued.status_code == 201, issued.text
    key = issued.json()["key"]
    listed = (await api.http.get("/v1/keys")).json()
    assert issued.json()["key_id"] in [k["key_id"] for k in listed]
    assert all("key" not in k and "key_hash" not in k for k in listed)
    with_new_key = {"Authorization": f"Bearer {key}"}
    assert (await api.http.get("/v1/agents", headers=with_new_key)).status_code == 200


async def test_a_key_recorded_but_not_usable_yet_is_still_shown_once(
    api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The answer is the only place a key is shown: when the projection is late it is a
    202 with the key (which works once projected), never a 503 that loses it."""
    monkeypatch.setattr(keys, "KEY_WAIT_S", 0.2)
    issued = await api.http.post("/v1/keys")  # no projector: nothing applies it

    assert issued.status_code == 202, issued.text
    body = issued.json()
    assert (body["status"], issued.headers["Location"]) == ("requested", "/v1/keys")
    assert body["key"].startswith(body["key_prefix"])
    await decide(api, events.ApiKeyCreateRequested, created)
    with_new_key = {"Authorization": f"Bearer {body['key']}"}
    assert (await api.http.get("/v1/agents", headers=with_new_key)).status_code == 200
    revoking = await api.http.delete(f"/v1/keys/{body['key_id']}")
    assert revoking.status_code == 202, revoking.text
    assert revoking.json()["key_id"] == body["key_id"]


async def test_a_revoked_key_is_refused_once_the_revocation_is_projected(api: Api) -> None:
    assert (await api.http.get("/v1/agents")).status_code == 200  # its tenant is cached now
    (key,) = (await api.http.get("/v1/keys")).json()
    notified = asyncio.Event()

    def on_revoked(tenant_id: str | None) -> None:
        if tenant_id == api.tenant_id:  # None: the listener (re)connected
            notified.set()

    api.gateway.waiter.subscribe(KEY_REVOKED, on_revoked)

    await api.fold(api.fact(events.ApiKeyRevoked(tenant_id=api.tenant_id, key_id=key["key_id"])))
    await asyncio.wait_for(notified.wait(), 10)

    problem(await api.http.get("/v1/agents"), 401, "UNAUTHENTICATED")


async def test_a_revocation_that_lost_a_race_answers_with_the_key_revoked(api: Api) -> None:
    """Another request revoked the key between the route's check and its command's
    decision: the command is refused (KEY_REVOKED), and the answer is the key, revoked."""
    (key,) = (await api.http.get("/v1/keys")).json()

    async def decider() -> None:
        asked = await api.recorded(events.ApiKeyRevokeRequested)
        other = events.ApiKeyRevoked(tenant_id=api.tenant_id, key_id=key["key_id"])
        lost = events.TenantCommandRejected(
            tenant_id=api.tenant_id, command_id=asked.id, code="KEY_REVOKED", detail="revoked"
        )
        await api.fold(api.fact(other), asked, api.fact(lost, cause=asked))

    deciding = asyncio.create_task(decider())
    revoked = await api.http.delete(f"/v1/keys/{key['key_id']}")
    await deciding

    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["revoked_at"] is not None


async def test_revoking_an_unknown_key_is_not_found(api: Api) -> None:
    refused = await api.http.delete("/v1/keys/no-such-key")

    assert problem(refused, 404, "KEY_NOT_FOUND")["detail"] == "no key no-such-key"
    assert await api.commands() == []  # refused before anything was recorded
