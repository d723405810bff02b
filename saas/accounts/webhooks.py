"""Where quota alerts may be POSTed: not into the service's own network (SSRF). A webhook URL is
set by an operator, but the alert sender runs inside the deployment, next to Redis, PostgreSQL
and the cloud's metadata service, so the target is checked like any outside input:

- never: userinfo in the URL (`user:pass@host`), link-local addresses (169.254.169.254, the
  cloud metadata service), multicast, unspecified (0.0.0.0, ::) and reserved ones;
- only with SAAS_WEBHOOK_ALLOW_PRIVATE (for receivers inside the deployment): loopback, private
  networks (RFC 1918, unique local IPv6, 100.64/10) and the rest of what is not global.

Checked when the webhook is set (an address literal, or a name as it resolves then) and again at
each delivery, after resolving the name: a name can point elsewhere later. The delivery then
connects to the address it checked (`Target`), with the name in Host and TLS SNI, so that a
second lookup cannot swap in another address (DNS rebinding). Redirects are never followed.
"""

import asyncio
import ipaddress
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any
from urllib.parse import SplitResult, urlsplit, urlunsplit

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
DEFAULT_PORTS = {"http": 80, "https": 443}


class TargetRefused(ValueError):
    """The webhook's URL or one of the addresses its name resolves to is not allowed."""


def address_refusal(address: Address, *, allow_private: bool) -> str | None:
    """Why quota alerts may not go to `address`, or None."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped  # ::ffff:127.0.0.1 is 127.0.0.1
    if address.is_link_local or address.is_multicast or address.is_unspecified:
        return f"{address} is a link-local, multicast or unspecified address"
    if address.is_reserved and not address.is_loopback:  # ::1 is in IPv6's reserved ::/8
        return f"{address} is a reserved address"
    if not address.is_global and not allow_private:
        return f"{address} is a loopback or private address"
    return None


def _parts(url: str) -> SplitResult:
    parts = urlsplit(url)
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise TargetRefused("a webhook is an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("a webhook URL may not carry a user name or password (user:pass@)")
    return parts


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _check_all(addresses: Iterable[Address], *, allow_private: bool) -> list[Address]:
    checked = list(addresses)
    for address in checked:
        if reason := address_refusal(address, allow_private=allow_private):
            raise TargetRefused(f"quota alerts cannot be sent there: {reason}")
    return checked


def _addresses(infos: Iterable[tuple[Any, ...]]) -> list[Address]:
    # getaddrinfo's sockaddr starts with the address text (with %scope for link-local IPv6).
    return [ipaddress.ip_address(str(sockaddr[0]).split("%")[0]) for *_, sockaddr in infos]


def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse (TargetRefused) a webhook URL when it is set. A name is resolved now (blocking:
    call it from a thread); one that does not resolve yet is accepted, and checked at each
    delivery like every other."""
    parts = _parts(url)
    assert parts.hostname is not None
    literal = _literal(parts.hostname)
    if literal is not None:
        _check_all([literal], allow_private=allow_private)
        return
    try:
        infos = socket.getaddrinfo(parts.hostname, parts.port, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return
    _check_all(_addresses(infos), allow_private=allow_private)


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect: `url` has the checked address in place of the name; `host` goes in the
    Host header, and is the TLS server name (SNI and certificate) for https."""

    url: str
    host: str
    server_name: str


async def resolve(url: str, *, allow_private: bool) -> Target:
    """The address to deliver to, once every address the name resolves to is allowed (one
    refused address refuses them all: the resolver's order is not ours to rely on)."""
    parts = _parts(url)
    assert parts.hostname is not None
    port = parts.port or DEFAULT_PORTS[parts.scheme]
    literal = _literal(parts.hostname)
    if literal is not None:
        addresses = _check_all([literal], allow_private=allow_private)
    else:
        loop = asyncio.get_running_loop()
        infos = await loop.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
        addresses = _check_all(_addresses(infos), allow_private=allow_private)
    if not addresses:
        raise TargetRefused(f"{parts.hostname} resolves to no address")
    chosen = addresses[0]
    netloc = f"[{chosen}]:{port}" if chosen.version == 6 else f"{chosen}:{port}"
    pinned = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    host = parts.netloc  # no userinfo (refused above): host[:port] as the URL has it
    return Target(url=pinned, host=host, server_name=parts.hostname)
