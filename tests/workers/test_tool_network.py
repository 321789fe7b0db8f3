"""The network rule for tools: which URLs a tool may have, by the addresses they name or
resolve to. IP literals and ``localhost`` only: the tests need no DNS beyond this host."""

from __future__ import annotations

import ipaddress as ip
import re
from urllib.parse import urlsplit

import pytest
from pydantic import ValidationError

from streams.settings import Settings, parse_networks
from workers.tool_network import ToolAddressRefusedError, ToolNetworkPolicy, refusal_reason

REFUSED = [
    ("127.0.0.1", "a loopback address"),
    ("127.8.9.10", "a loopback address"),
    ("[::1]", "a loopback address"),
    ("10.0.0.5", "a private address"),
    ("172.16.0.1", "a private address"),
    ("172.31.255.254", "a private address"),
    ("192.168.1.1", "a private address"),
    ("169.254.169.254", "a link-local address"),
    ("[fe80::1]", "a link-local address"),
    ("[fc00::1]", "a private address"),
    ("[fd12:3456::1]", "a private address"),
    ("[::ffff:127.0.0.1]", "the IPv4-mapped form of 127.0.0.1, a loopback address"),
    ("[::ffff:10.1.2.3]", "the IPv4-mapped form of 10.1.2.3, a private address"),
    ("100.64.0.1", "a carrier-grade NAT address"),
    ("100.127.255.254", "a carrier-grade NAT address"),
    ("0.0.0.0", "an unspecified address"),
    ("[::]", "an unspecified address"),
    ("224.0.0.1", "a multicast address"),
    ("240.0.0.1", "a reserved address"),
    ("255.255.255.255", "a reserved address"),
    ("[fec0::1]", "a private address"),  # site-local, deprecated but still internal
]


@pytest.mark.parametrize(("host", "reason"), REFUSED)
async def test_a_non_public_address_is_refused_saying_which_and_why(host: str, reason: str) -> None:
    with pytest.raises(ToolAddressRefusedError) as refused:
        await ToolNetworkPolicy().check(f"http://{host}:8080/tool")
    assert str(refused.value) == (
        f"{host.strip('[]')} is {reason}; an operator may allow it with"
        " AGENTLOG_TOOL_ALLOWED_NETWORKS"
    )


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.216.34/weather",
        "https://8.8.8.8:8443/x",
        "http://[2606:4700:4700::1111]/x",
        "http://[::ffff:93.184.216.34]/x",
        "http://100.128.0.1/x",  # just past 100.64.0.0/10
        "http://172.32.0.1/x",  # just past 172.16.0.0/12
    ],
)
async def test_a_public_address_is_allowed(url: str) -> None:
    host = urlsplit(url).hostname
    assert host is not None
    assert await ToolNetworkPolicy().check(url) == [ip.ip_address(host)]


async def test_a_name_is_judged_by_the_addresses_it_resolves_to() -> None:
    with pytest.raises(ToolAddressRefusedError) as refused:
        await ToolNetworkPolicy().check("http://localhost:9000/weather")
    message = str(refused.value)
    assert message.startswith("localhost resolves to "), message
    assert ", a loopback address; an operator may allow it with" in message


async def test_a_name_that_does_not_resolve_is_refused() -> None:
    with pytest.raises(ToolAddressRefusedError, match="does not resolve"):
        await ToolNetworkPolicy().check(f"http://{'a' * 64}.example/x")


async def test_a_url_without_a_host_is_refused() -> None:
    with pytest.raises(ToolAddressRefusedError, match="names no host"):
        await ToolNetworkPolicy().check("http:///x")


async def test_an_allowed_network_lets_its_addresses_through() -> None:
    policy = ToolNetworkPolicy(parse_networks("127.0.0.0/8, ::1/128"))
    await policy.check("http://127.0.0.1:9000/weather")
    await policy.check("http://[::1]/x")
    await policy.check("http://[::ffff:127.0.0.1]/x")  # the mapped form of an allowed address
    await policy.check("http://localhost:9000/weather")
    with pytest.raises(ToolAddressRefusedError, match=re.escape("10.0.0.1 is a private")):
        await policy.check("http://10.0.0.1/x")


async def test_the_policy_reads_the_setting() -> None:
    policy = ToolNetworkPolicy.from_settings(Settings(tool_allowed_networks="10.0.0.0/8"))
    await policy.check("http://10.0.0.5/x")
    with pytest.raises(ToolAddressRefusedError):
        await policy.check("http://127.0.0.1/x")
    with pytest.raises(ToolAddressRefusedError):
        await ToolNetworkPolicy.from_settings(Settings()).check("http://10.0.0.5/x")


def test_the_setting_parses_as_comma_separated_networks() -> None:
    assert parse_networks("") == ()
    assert parse_networks(" 127.0.0.0/8 ,, ::1/128,10.1.2.3 ") == (
        ip.ip_network("127.0.0.0/8"),
        ip.ip_network("::1/128"),
        ip.ip_network("10.1.2.3/32"),
    )


@pytest.mark.parametrize("bad", ["localhost", "10.0.0.0/33", "10.0.0.1/8", "fc00::/129", "*"])
def test_a_bad_cidr_fails_naming_it(bad: str) -> None:
    expected = re.escape(f"AGENTLOG_TOOL_ALLOWED_NETWORKS: '{bad}' is not a CIDR network: ")
    with pytest.raises(ValueError, match=expected):
        parse_networks(f"127.0.0.0/8,{bad}")
    with pytest.raises(ValueError, match="is not a CIDR network"):
        ToolNetworkPolicy.from_settings(Settings(tool_allowed_networks=bad))


def test_only_public_addresses_have_no_reason() -> None:
    assert refusal_reason(ip.ip_address("93.184.216.34")) is None
    assert refusal_reason(ip.ip_address("198.18.0.1")) == "a private address"  # benchmarking


@pytest.mark.parametrize(
    ("value", "networks"),
    [
        ('["10.0.0.0/8", "::1/128"]', "10.0.0.0/8,::1/128"),
        (" [ ] ", ""),
        ("10.0.0.0/8, fd00::/8", "10.0.0.0/8, fd00::/8"),
    ],
)
def test_the_setting_takes_a_list_or_json_and_is_checked_at_start(
    value: str, networks: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTLOG_TOOL_ALLOWED_NETWORKS", value)
    assert Settings().tool_allowed_networks == networks


@pytest.mark.parametrize("value", ['["10.0.0.0/8",', "[1, 2]", '["10.0.0.1/8"]', "localhost"])
def test_a_setting_that_names_no_network_stops_the_process_at_start(
    value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGENTLOG_TOOL_ALLOWED_NETWORKS", value)
    with pytest.raises(ValidationError, match="AGENTLOG_TOOL_ALLOWED_NETWORKS"):
        Settings()
