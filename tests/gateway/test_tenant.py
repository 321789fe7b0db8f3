"""A key's holder learns its tenant: the id usage exports, invoices and operators use."""

from __future__ import annotations

from .conftest import Api, problem


async def test_a_tenant_key_reads_its_own_tenant(api: Api) -> None:
    response = await api.http.get("/v1/tenant")
    assert response.status_code == 200, response.text
    assert (response.json()["tenant_id"], response.json()["display_name"]) == (api.tenant_id, "t")


async def test_an_operator_key_has_no_tenant(api: Api) -> None:
    problem(await api.http.get("/v1/tenant", headers=api.as_operator), 403, "TENANT_KEY_REQUIRED")
    anonymous = await api.http.get("/v1/tenant", headers={"Authorization": ""})
    problem(anonymous, 401, "UNAUTHENTICATED")
