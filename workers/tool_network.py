"""Which addresses HTTP tools may reach: one rule, checked at registration and again
right before every call (a name may resolve elsewhere by then).

A tenant chooses a tool's URL and reads its answer, so a tool on loopback or on the
platform's own network would make the platform an open proxy into that network. Every
address a host resolves to must be public, unless an operator allows its network with
``AGENTLOG_TOOL_ALLOWED_NETWORKS``.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from urllib.parse import urlsplit

from schemas.errors import ErrorCode
from streams.settings import TOOL_NETWORKS_SETTING as SETTING
from streams.settings import IPNetwork, Settings, parse_networks

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")  # RFC 6598; not is_private in Python
_HINT = f"an operator may allow it with {SETTING}"


class ToolAddressRefusedError(ValueError):
    """A tool's URL names, or resolves to, an address tools may not reach."""

    code = ErrorCode.TOOL_ADDRESS_REFUSED


def refusal_reason(address: IPAddress) -> str | None:
    """Why tools may not reach ``address`` ("a private address"), or None if they may.
    An IPv4-mapped IPv6 address is judged by the IPv4 address it carries."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        reason = refusal_reason(address.ipv4_mapped)
        return (
            None if reason is None else f"the IPv4-mapped form of {address.ipv4_mapped}, {reason}"
        )
    if address.is_unspecified:
        return "an unspecified address"
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address in _CGNAT:
        return "a carrier-grade NAT address"
    if address.is_multicast:
        return "a multicast address"
    if address.is_reserved:
        return "a reserved address"
    if address.is_private or (isinstance(address, ipaddress.IPv6Address) and address.is_site_local):
        return "a private address"
    return None


class ToolNetworkPolicy:
    """Refuses a tool URL whose host is, or resolves to, any non-public address outside
    the allowed networks."""

    def __init__(self, allowed: Iterable[IPNetwork] = ()) -> None:
        self.allowed = tuple(allowed)

    @classmethod
    def from_settings(cls, settings: Settings) -> ToolNetworkPolicy:
        return cls(parse_networks(settings.tool_allowed_networks))

    def _allows(self, address: IPAddress) -> bool:
        forms: list[IPAddress] = [address]
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            forms.append(address.ipv4_mapped)
        return any(a in net for a in forms for net in self.allowed)

    async def check(self, url: str) -> list[IPAddress]:
        """The addresses of ``url``'s host, if tools may call every one of them; raise
        ``ToolAddressRefusedError`` saying which address was refused and why otherwise."""
        host = urlsplit(url).hostname
        if not host:
            raise ToolAddressRefusedError(f"{url!r} names no host")
        try:
            literal: IPAddress | None = ipaddress.ip_address(host)
        except ValueError:
            literal = None
        addresses = [literal] if literal is not None else await _resolve(host)
        for address in addresses:
            reason = refusal_reason(address)
            if reason is not None and not self._allows(address):
                what = f"{host} is" if literal is not None else f"{host} resolves to {address},"
                raise ToolAddressRefusedError(f"{what} {reason}; {_HINT}")
        return addresses


_RESOLVE_TIMEOUT_S = 5.0


async def _resolve(host: str) -> list[IPAddress]:
    """Every address ``host`` resolves to (as a connection would resolve it)."""
    try:
        async with asyncio.timeout(_RESOLVE_TIMEOUT_S):
            infos = await asyncio.get_running_loop().getaddrinfo(
                host, None, type=socket.SOCK_STREAM
            )
    except TimeoutError:
        raise ToolAddressRefusedError(
            f"{host} did not resolve within {_RESOLVE_TIMEOUT_S:g} s"
        ) from None
    except (socket.gaierror, UnicodeError) as exc:
        raise ToolAddressRefusedError(f"{host} does not resolve: {exc}") from None
    addresses = {ipaddress.ip_address(info[4][0]) for info in infos}
    if not addresses:
        raise ToolAddressRefusedError(f"{host} does not resolve to any address")
    return sorted(addresses, key=lambda a: (a.version, a))
