"""Where quota alerts may be POSTed: not into the service's own network (SSRF). A webhook URL is
set by an operator, but the alert sender runs inside the deployment, next to Redis, PostgreSQL
and the cloud's metadata service, so the target is checked like any outside input:

- never: userinfo in the URL (`user:pass@host`), link-local addresses (169.254.169.254),
  the other cloud metadata services (`METADATA`), multicast, unspecified (0.0.0.0, ::) and
  reserved ones;
- only with SAAS_WEBHOOK_ALLOW_PRIVATE (for receivers inside the deployment): loopback, private
  networks (RFC 1918, unique local IPv6, 100.64/10, site-local IPv6) and whatever else is not
  global.
An IPv6 address that carries an IPv4 one (mapped `::ffff:a.b.c.d`, NAT64 `64:ff9b::/96`, 6to4
`2002::/16`, Teredo) is judged by the IPv4 address it leads to.

Checked when the webhook is set (an address literal, or a name as it resolves then) and again at
each delivery, after resolving the name: a name can point elsewhere later. The delivery then
connects to the addresses it checked (`Target`), with the name in Host and as TLS's server name,
so that a second lookup cannot swap in another address (DNS rebinding). Redirects are never
followed (httpx's default).
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
# Cloud metadata services outside link-local space: AWS's IPv6 endpoint (in unique local space),
# Alibaba Cloud's (in 100.64/10), Azure's platform endpoint (a public address).
METADATA = tuple(
    ipaddress.ip_network(network)
    for network in ("fd00:ec2::254/128", "100.100.100.200/32", "168.63.129.16/32")
)
NAT64 = ipaddress.ip_network("64:ff9b::/96")  # the well-known prefix: IPv4 in the last 32 bits


class TargetRefused(ValueError):
    """The webhook's URL, or one of the addresses its name resolves to, is not allowed."""


def _carried_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one leads to (mapped, NAT64, 6to4, Teredo's client), or None."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    if address.sixtofour is not None:
        return address.sixtofour
    if address.teredo is not None:
        return address.teredo[1]
    return None


def address_refusal(address: Address, *, allow_private: bool) -> str | None:
    """Why quota alerts may not go to `address`, or None."""
    carried = _carried_ipv4(address) if isinstance(address, ipaddress.IPv6Address) else None
    if carried is not None:
        reason = address_refusal(carried, allow_private=allow_private)
        return f"{address} leads to {reason}" if reason else None
    if address.is_link_local or any(address in network for network in METADATA):
        return f"{address} is link-local or a cloud metadata service"
    if address.is_multicast or address.is_unspecified:
        return f"{address} is a multicast or unspecified address"
    if address.is_reserved and not address.is_loopback:  # ::1 is in IPv6's reserved ::/8
        return f"{address} is a reserved address"
    private = address.is_loopback or address.is_private or not address.is_global
    if isinstance(address, ipaddress.IPv6Address):
        private = private or address.is_site_local  # fec0::/10: deprecated, still not global
    if private and not allow_private:
        return f"{address} is a loopback or private address"
    return None


def _parts(url: str) -> tuple[SplitResult, str, int]:
    """The URL's parts, its host and its port, or TargetRefused."""
    try:
        parts = urlsplit(url)
        port = parts.port or DEFAULT_PORTS.get(parts.scheme, 0)
    except ValueError:  # a port that is not a number, or out of range
        raise TargetRefused("a webhook's port is a number from 1 to 65535") from None
    if parts.scheme not in DEFAULT_PORTS or not parts.hostname:
        raise TargetRefused("a webhook is an http:// or https:// URL with a host")
    if parts.username is not None or parts.password is not None:
        raise TargetRefused("a webhook URL may not carry a user name or password (user:pass@)")
    return parts, parts.hostname, port


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return None


def _check_all(addresses: Iterable[Address], *, allow_private: bool) -> list[Address]:
    """The addresses, once every one is allowed: one refused address refuses them all (which
    one a client connects to is not ours to choose)."""
    checked = list(dict.fromkeys(addresses))
    for address in checked:
        if reason := address_refusal(address, allow_private=allow_private):
            raise TargetRefused(f"quota alerts cannot be sent there: {reason}")
    return checked


def _addresses(infos: Iterable[tuple[Any, ...]]) -> list[Address]:
    # getaddrinfo's sockaddr starts with the address text (with %scope for link-local IPv6).
    return [ipaddress.ip_address(str(sockaddr[0]).split("%")[0]) for *_, sockaddr in infos]


def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse (TargetRefused) a webhook URL when it is set. A name is resolved now (blocking:
    call it from a thread, and outside a database transaction); one that does not resolve yet
    is accepted, and checked at each delivery like every other."""
    _, host, port = _parts(url)
    literal = _literal(host)
    if literal is not None:
        _check_all([literal], allow_private=allow_private)
        return
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except UnicodeError:  # a label over 63 characters, say: no resolver would take it
        raise TargetRefused(f"{host!r} is not a host name") from None
    except OSError:
        return
    _check_all(_addresses(infos), allow_private=allow_private)


@dataclass(frozen=True, slots=True)
class Target:
    """Where to connect: `urls`, one per checked address, the name replaced by the address (try
    them in turn); `host` goes in the Host header and `server_name` is TLS's (SNI and the
    certificate's name) for https."""

    urls: tuple[str, ...]
    host: str
    server_name: str


async def resolve(url: str, *, allow_private: bool) -> Target:
    """The addresses to deliver to, once every address the name resolves to is allowed.
    TargetRefused, or OSError when the name does not resolve (now: maybe later)."""
    parts, host, port = _parts(url)
    literal = _literal(host)
    if literal is not None:
        addresses = _check_all([literal], allow_private=allow_private)
    else:
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except UnicodeError:
            raise TargetRefused(f"{host!r} is not a host name") from None
        addresses = _check_all(_addresses(infos), allow_private=allow_private)
    if not addresses:
        raise OSError(f"{host} resolves to no address")
    urls = tuple(
        urlunsplit(
            (
                parts.scheme,
                f"[{address}]:{port}" if address.version == 6 else f"{address}:{port}",
                parts.path,
                parts.query,
                "",
            )
        )
        for address in addresses
    )
    # The URL's own host[:port] (no userinfo: refused above), as a client would send it.
    return Target(urls=urls, host=parts.netloc, server_name=host)
