"""The gateway serves the deployment's AsyncAPI document, and a page that reads it."""

from __future__ import annotations

import yaml

from .conftest import Api


async def test_the_document_names_this_deployments_topics(api: Api) -> None:
    answer = await api.http.get("/asyncapi.yaml", headers={"Authorization": ""})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/yaml")
    spec = yaml.safe_load(answer.text)
    addresses = {channel["address"] for channel in spec["channels"].values()}
    assert api.catalog.commands in addresses
    assert api.catalog.dead_letter in addresses
    assert all(address.startswith(api.catalog.prefix) for address in addresses)


async def test_the_page_lists_channels_and_payloads(api: Api) -> None:
    answer = await api.http.get("/asyncapi", headers={"Authorization": ""})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    page = answer.text
    assert f"<code>{api.catalog.output}</code>" in page
    assert 'id="TurnRequested"' in page
    assert "<code>session_id</code>" in page
